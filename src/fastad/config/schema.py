"""The configuration: one typed section per YAML section, composed into :class:`Config`.

Sections ``distillation`` and ``fast_ad`` keep the key names of the paper's released config
(``cifar100_config.yaml``) so that file loads unchanged. The sections of the synthesis components
are declared next to the code that reads them (``fast_ad``, ``guidance`` and ``routing`` in
:mod:`fastad.guidance`, ``sampler`` in :mod:`fastad.diffusion.ddim`, ``deepinversion`` in
:mod:`fastad.baselines.deepinversion`); the rest here. Each field's help text is its comment;
``fastad config`` prints them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastad.baselines.deepinversion import DeepInversionConfig
from fastad.data.view import RESIZE_MODES
from fastad.diffusion.ddim import SamplerConfig
from fastad.guidance.loss import FastADConfig, GuidanceConfig
from fastad.guidance.routing import RoutingConfig
from fastad.options import Section, option


@dataclass
class RunConfig(Section):
    section = "run"
    seed: int = option(0, "random seed for torch, numpy and python; every run is reproducible from it", ge=0)
    device: str = option("auto", "'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'")
    out: str | None = option(None, "output folder of the run; default runs/<command>-<timestamp>")
    threads: int = option(0, "CPU threads for torch; 0 = auto: the cores idle at the start (the least busy of "
                          "three 0.2 s windows of /proc/stat; fastad.utils.threads)", ge=0)


@dataclass
class DataConfig(Section):
    section = "data"
    dataset: str | None = option(None, "dataset name (fastad.data.dataset_names()): what train-teacher and "
                                 "train-diffusion train on, and the labelled test split distill reports accuracy on; "
                                 "null = none (distill then reports agreement with the teacher only)")
    root: str | None = option(None, "dataset folder; null = the dataset's default location")
    train_range: list[int] | None = option(None, "[start, stop) image indices of the train split to use; null = all", ge=0, length=2)
    classes: list[int] | None = option(None, "class ids of the train split to keep; null = all", ge=0)
    eval_range: list[int] | None = option(None, "[start, stop) image indices of the test split that evaluation "
                                          "reads: choose settings on one range (e.g. [0, 5000]) and report on "
                                          "another ([5000, 10000]); null = all", ge=0, length=2)
    eval_batch_size: int = option(512, "batch size for evaluation on the test split", ge=1)


@dataclass
class TeacherTrainingConfig(Section):
    section = "teacher_training"
    arch: str = option("resnet20", "zoo model to train (fastad.models.list_models())")
    epochs: int = option(12, "training epochs", ge=1)
    batch_size: int = option(128, "mini-batch size", ge=1)
    lr: float = option(0.1, "initial SGD learning rate", gt=0)
    momentum: float = option(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = option(5e-4, "SGD weight decay", ge=0)
    schedule: str = option("cosine", "learning-rate schedule over iterations", choices=("cosine", "step"))
    milestones: list[int] = option([6, 9], "epochs at which 'step' multiplies the lr by lr_decay", ge=1)
    lr_decay: float = option(0.1, "factor of each 'step' decay", gt=0, le=1)
    warmup_epochs: float = option(0.0, "linear lr warm-up length in epochs", ge=0)
    augment: bool = option(True, "random crop (and flip where the dataset suits it) on training images")
    label_smoothing: float = option(0.0, "cross-entropy label smoothing", ge=0, lt=1)


@dataclass
class DistillationConfig(Section):
    section = "distillation"
    teacher_arch: str | None = option(None, "teacher architecture (zoo name); null = from the checkpoint's metadata")
    student_arch: str = option("resnet18", "student architecture (zoo name)")
    num_classes: int | None = option(None, "classes of the teacher; null = from its metadata, the evaluation "
                                     "dataset or the width of its output", ge=2)
    image_size: list[int] | None = option(None, "teacher input size [H, W]; null = from its metadata, the evaluation "
                                          "dataset or the prior", ge=1, length=2)
    mean: list[float] | None = option(None, "per-channel mean of the teacher's input normalisation; null = from its "
                                      "metadata or the evaluation dataset")
    std: list[float] | None = option(None, "per-channel std of the teacher's input normalisation; null = as mean",
                                     gt=0)
    resize: str = option("none", "how prior images are resized to image_size when the prior makes another size: "
                         "'none' refuses a mismatch, or an interpolation mode", choices=("none", *RESIZE_MODES))
    epochs: int = option(200, "distillation rounds (synthesis + student updates)", ge=1)
    buffer_size: int = option(4096, "replay-buffer capacity in images (FIFO)", ge=1)
    lr: float = option(0.1, "initial student learning rate (SGD)", gt=0)
    milestones: list[int] = option([100, 150], "rounds at which the lr is multiplied by lr_decay", ge=1)
    lr_decay: float = option(0.1, "factor of each lr decay", gt=0, le=1)
    momentum: float = option(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = option(5e-4, "SGD weight decay", ge=0)
    synthesis_batch_size: int = option(64, "images synthesised per round", ge=1)
    train_batch_size: int = option(64, "student batch size drawn from the buffer", ge=1)
    train_iterations: int = option(100, "student updates per round", ge=1)
    kd_temperature: float = option(4.0, "distillation temperature tau_kd (Eq. 9)", gt=0)
    schedule: str = option("step", "student lr schedule over rounds: 'step' (milestones) or 'cosine'",
                           choices=("step", "cosine"))
    eval_every: int = option(10, "evaluate every N rounds (the real test split, if data.dataset is set, and the "
                             "held-out synthetic images)", ge=1)
    holdout_images: int = option(512, "held-out synthetic images, drawn once with a seed of their own and never "
                                 "trained on, on which the student's agreement with the teacher is measured; 0 = off",
                                 ge=0)
    evaluate_teacher: bool = option(True, "score the teacher on the test split at the start (the summary's "
                                    "teacher_top1); fastad bench scores it once instead of in every run")
    teacher_checkpoint: str | None = option(None, "teacher weights (safetensors or torch state dict)")
    student_checkpoint: str | None = option(None, "initial student weights; null = random init of student_arch")
    diffusion_checkpoint: str | None = option(None, "diffusion prior: a diffusers-format folder")
    conditioning: str = option("auto", "prior conditioning from the round's target labels: 'auto' (class labels "
                               "for a class-conditional prior, else none), 'none' or 'class_labels'",
                               choices=("auto", "none", "class_labels"))
    augment: bool = option(True, "random crop/flip of buffer images for student updates (where the data suits)")
    teacher_view_cache: bool = option(True, "run the teacher once per (buffer image, crop/flip view) pair the KD "
                                      "steps draw and look its logits up after: the same batches and logits as "
                                      "running it on every KD batch (the same student, bit for bit, in the main job "
                                      "on the CPU), which ran 1.28x faster; memory: buffer_size x views x classes "
                                      "float32 (the main job: 50 views, 8 MB), off with a note above 1 GiB")
    save_images: str = option("none", "export every synthesised image: 'none', 'png' (a folder per class) "
                              "or 'npz' (one file per round)", choices=("none", "png", "npz"))
    synthesizer: str = option("diffusion", "how images are made: 'diffusion' (the prior, guided by fast_ad, "
                              "guidance and routing) or 'deepinversion' (pixels optimised from noise for L_BN + CE, "
                              "the deepinversion section; no prior)", choices=("diffusion", "deepinversion"))
    max_seconds: float = option(0.0, "wall-clock budget: stop after the round in which synthesis + training time "
                                "reaches it, then evaluate; 0 = off (run all epochs)", ge=0)
    autocast: str = option("float32", "'bf16': the prior's and the teacher's forward passes under bfloat16 "
                           "autocast (the guidance gradient's normalisation and the DDIM arithmetic stay float32); "
                           "'float32': no autocast. H200, CIFAR scale: synthesis 1.1-1.3x faster; a 2-core CPU with "
                           "AMX: synthesis 1.7-1.9x over float32 (docs/results.md); a CPU without native bfloat16 "
                           "emulates it, slower (the run warns)", choices=("float32", "bf16"))
    compile: bool = option(False, "torch.compile the prior's UNet (weights frozen) and the guidance's teacher "
                           "(forward and input gradient, dynamic batch). After 30-60 s of compiling the prior and, "
                           "for guided recipes, 35-70 s the teacher: CPU synthesis 1.4x (cadr) and 1.16x "
                           "(x0-routed-smooth); H200 with bf16, unguided synthesis 2.4x. Pays only in long runs; "
                           "off by default")
    compile_kd_teacher: bool = option(False, "torch.compile the teacher's forward in the KD steps, weights frozen "
                                      "(BatchNorm folded into the convolutions; the guidance's teacher stays "
                                      "eager). CPU, the shipped resnet20 at batch 128: the KD step 1.07-1.15x faster "
                                      "after about 10 s of compiling; runs eagerly where compiling fails")


@dataclass
class DiffusionConfig(Section):
    section = "diffusion"
    block_out_channels: list[int] = option([32, 64, 64], "UNet2DModel channels per resolution level", ge=1)
    layers_per_block: int = option(1, "ResNet layers per UNet block", ge=1)
    attention: bool = option(False, "self-attention at the lowest resolution")
    class_conditional: bool = option(False, "train a class-conditional prior (reads labels); default unconditional")
    num_train_timesteps: int = option(1000, "diffusion timesteps T", ge=1)
    beta_schedule: str = option("linear", "noise schedule", choices=("linear", "scaled_linear", "squaredcos_cap_v2"))
    beta_start: float = option(1e-4, "first beta of the linear schedules", gt=0, lt=1)
    beta_end: float = option(0.02, "last beta of the linear schedules", gt=0, lt=1)
    steps: int = option(3000, "optimiser steps", ge=1)
    init_from: str | None = option(None, "a prior folder whose UNet weights start the training and its EMA "
                                  "(continue or fine-tune a prior; same architecture); default: random init")
    batch_size: int = option(128, "mini-batch size", ge=1)
    lr: float = option(2e-3, "AdamW learning rate", gt=0)
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    warmup_steps: int = option(100, "linear lr warm-up steps", ge=0)
    ema_decay: float = option(0.995, "decay of the EMA weights that are saved as the prior", ge=0, lt=1)
    grad_clip: float = option(1.0, "gradient-norm clip; 0 = off", ge=0)
    flip: bool = option(True, "random horizontal flips of training images (where the dataset suits it)")
    sample_every: int = option(500, "write a sample grid every N steps; 0 = never", ge=0)
    save_every: int = option(250, "write a resumable checkpoint every N steps", ge=1)
    sample_steps: int = option(50, "DDIM steps of the periodic sample grids", ge=1)
    sample_images: int = option(64, "images in each periodic sample grid (drawn from the EMA weights)", ge=1)
    sample_clip: bool = option(True, "clamp the DDIM preview x0_hat to [-1, 1] in the sample grids (diffusers' "
                               "clip_sample, which the saved scheduler config sets)")


@dataclass
class LoggingConfig(Section):
    section = "logging"
    tensorboard: bool = option(True, "write TensorBoard event files")
    log_every: int = option(50, "log training losses every N iterations", ge=1)
    progress: bool = option(True, "show progress bars")


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher_training: TeacherTrainingConfig = field(default_factory=TeacherTrainingConfig)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    fast_ad: FastADConfig = field(default_factory=FastADConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    deepinversion: DeepInversionConfig = field(default_factory=DeepInversionConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
