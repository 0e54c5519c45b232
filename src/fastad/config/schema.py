"""The configuration schema: one typed dataclass per YAML section.

Sections ``distillation`` and ``fast_ad`` keep the key names of the paper's released config
(``cifar100_config.yaml``) so that file loads unchanged. Each field's help text is its comment;
``fastad config`` prints them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastad.config.fields import option


@dataclass
class RunConfig:
    seed: int = option(0, "random seed for torch, numpy and python; every run is reproducible from it", ge=0)
    device: str = option("auto", "'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'")
    out: str | None = option(None, "output folder of the run; default runs/<command>-<timestamp>")
    threads: int = option(0, "CPU threads for torch; 0 = torch's default (all cores)", ge=0)


@dataclass
class DataConfig:
    dataset: str = option("fashion_mnist", "dataset name (fastad.data.dataset_names())")
    root: str | None = option(None, "dataset folder; null = the dataset's default location")
    train_range: list[int] | None = option(None, "[start, stop) image indices of the train split to use; null = all", ge=0, length=2)
    classes: list[int] | None = option(None, "class ids of the train split to keep; null = all", ge=0)
    eval_batch_size: int = option(512, "batch size for evaluation on the test split", ge=1)


@dataclass
class TeacherTrainingConfig:
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
class DistillationConfig:
    teacher_arch: str = option("resnet34", "teacher architecture (zoo name)")
    student_arch: str = option("resnet18", "student architecture (zoo name)")
    num_classes: int = option(100, "number of classes of the teacher", ge=2)
    image_size: list[int] = option([32, 32], "teacher input size [H, W]", ge=1, length=2)
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
    eval_every: int = option(10, "evaluate on the real test split every N rounds", ge=1)
    evaluate_teacher: bool = option(True, "score the teacher on the test split at the start (the summary's "
                                    "teacher_top1); fastad bench scores it once instead of in every run")
    teacher_checkpoint: str | None = option(None, "teacher weights (safetensors or torch state dict)")
    student_checkpoint: str | None = option(None, "initial student weights; null = random init of student_arch")
    diffusion_checkpoint: str | None = option(None, "diffusion prior: a diffusers-format folder")
    conditioning: str = option("auto", "prior conditioning from the round's target labels: 'auto' (class labels "
                               "for a class-conditional prior, else none), 'none' or 'class_labels'",
                               choices=("auto", "none", "class_labels"))
    augment: bool = option(True, "random crop/flip of buffer images for student updates (where the data suits)")
    save_images: str = option("none", "export every synthesised image: 'none', 'png' (a folder per class) "
                              "or 'npz' (one file per round)", choices=("none", "png", "npz"))
    synthesizer: str = option("diffusion", "how images are made: 'diffusion' (the guided prior, fast_ad.*) or "
                              "'deepinversion' (pixels optimised from noise for L_BN + CE; no prior, the fast_ad "
                              "guidance options are ignored)", choices=("diffusion", "deepinversion"))
    deepinversion_iterations: int = option(200, "Adam steps per DeepInversion batch (synthesizer: deepinversion, "
                                           "and fast_ad.inversion_fraction)", ge=0)
    deepinversion_lr: float = option(0.05, "Adam learning rate of DeepInversion (synthesizer: deepinversion, "
                                     "fast_ad.inversion_fraction and fast_ad.refine_steps)", gt=0)
    deepinversion_tv_l2: float = option(0.0, "weight of DeepInversion's squared total-variation image prior (mean "
                                        "squared neighbour difference, images in [-1, 1]); 0 = off", ge=0)
    deepinversion_l2: float = option(0.0, "weight of DeepInversion's L2 image prior mean(x^2); 0 = off", ge=0)
    max_seconds: float = option(0.0, "wall-clock budget: stop after the round in which synthesis + training time "
                                "reaches it, then evaluate; 0 = off (run all epochs)", ge=0)


@dataclass
class FastADConfig:
    lambda_max: float = option(1.5, "maximum rectification strength (Eq. 5)", ge=0)
    eta: float = option(0.1, "gradient scale of the rectification (Eq. 6); not DDIM's eta", ge=0)
    tau_ent: float = option(0.4, "entropy threshold of the gate, nats (CIFAR-100 0.4, ImageNet 0.6)", ge=0)
    k_sigmoid: float = option(10.0, "steepness of the gate's sigmoid", ge=0)
    ddim_steps: int = option(50, "DDIM sampling steps", ge=1)
    xi: float = option(1e-6, "stabiliser of the per-sample gradient norm (Eq. 6)", gt=0)
    gamma: float = option(1.0, "weight of the teacher's cross-entropy in the guidance loss", ge=0)
    T: int = option(1000, "training timesteps of the prior's noise schedule", ge=1)
    guidance: str = option("cadr", "'cadr' (entropy-gated, the paper), 'fixed' (lam = lambda_max, no gate), "
                           "'target' (lam = lambda_max * (1 - teacher's probability of the target class)) or "
                           "'none' (unguided DDIM, teacher-labelled KD)", choices=("cadr", "fixed", "target", "none"))
    grad_mode: str = option("tweedie", "guidance gradient: 'tweedie' (eps held constant) or 'full' (through the UNet)",
                            choices=("tweedie", "full"))
    beta_adv: float = option(0.0, "weight of the adversarial term (-KL teacher||student on the preview)", ge=0)
    ddim_eta: float = option(0.0, "DDIM stochasticity (0 = deterministic DDIM); not the paper's eta", ge=0)
    timestep_spacing: str = option("leading", "DDIM timestep spacing (as diffusers)",
                                   choices=("leading", "trailing", "linspace"))
    clip_x0: bool = option(False, "clamp the DDIM preview x0_hat to [-1, 1] in the update (diffusers clip_sample)")
    clip_x0_guided: bool | None = option(None, "the preview clamp for guided samples only; null = as clip_x0 "
                                         "(plain samples always follow clip_x0)")
    view_augment: bool = option(False, "differentiable random crop/flip of the preview inside the guidance "
                                "(the teacher's view); the flip only where the dataset suits it")
    # Guidance variants beyond the paper (docs/guidance.md); the defaults above and below reproduce it.
    rule: str = option("eps", "how the gradient acts: 'eps' rectifies the noise (Eq. 8, the paper); 'x0' takes "
                       "normalised gradient steps on the preview itself and keeps the prior's eps (MPGD-style)",
                       choices=("eps", "x0"))
    t_window: list[float] = option([0.0, 1.0], "[lo, hi]: guidance acts only at timesteps with lo <= t / T <= hi",
                                   ge=0, le=1, length=2)
    inner_steps: int = option(1, "rule 'x0': gradient steps on the preview per timestep", ge=1)
    x0_step: float = option(0.1, "rule 'x0': per-pixel RMS size of one step at gate 1 (prior space [-1, 1])", ge=0)
    strength_ref_steps: int = option(0, "if > 0, eta and x0_step are multiplied by ddim_steps / this (strength "
                                     "per step that follows the step count); 0 = off", ge=0)
    recurrence: int = option(0, "time travel: re-noise and redo each guided step this many extra times", ge=0)
    bn_weight: float = option(1.0, "weight of the BatchNorm-statistics term L_BN in the guidance loss", ge=0)
    grad_pool: int = option(1, "average the guidance gradient over k x k pixel blocks before it is used (a "
                            "low-pass: coarse, shape-level changes instead of pixel textures); 1 = off", ge=1)
    smooth_samples: int = option(1, "copies of the preview the guidance loss averages over, each with its own random "
                                 "view and smoothing noise (expectation over transformations)", ge=1)
    smooth_sigma: float = option(0.0, "std of Gaussian noise added to each copy before the teacher sees it (prior "
                                 "space [-1, 1]): the gradient of a randomised-smoothing teacher; 0 = off", ge=0)
    candidates: int = option(1, "best-of-n: guided samples drawn per target; the one with the highest teacher "
                             "probability of the target is kept (n times the guided cost); 1 = off", ge=1)
    inversion_fraction: float = option(0.0, "share of the guided targets drawn by DeepInversion (distillation."
                                       "deepinversion_*: pixels optimised from noise against the teacher) instead of "
                                       "the guided prior, for classes the prior cannot make; 0 = off", ge=0, le=1)
    refine_steps: int = option(0, "Adam steps of DeepInversion (distillation.deepinversion_lr, _tv_l2, _l2) on each "
                               "guided prior sample, starting from it instead of from noise; 0 = off", ge=0)
    guided_fraction: float = option(1.0, "share of each round's images that are guided; the rest are plain "
                                    "DDIM samples (mixing guided and unguided images in the buffer)", ge=0, le=1)
    guide_classes: str = option("all", "which targets are guided: 'all' (guided_fraction of each batch) or "
                                "'uncovered': only classes the prior does not make on its own, measured by the "
                                "teacher's predictions on the unguided samples (data-free)",
                                choices=("all", "uncovered"))
    coverage_threshold: float = option(0.5, "guide_classes 'uncovered': a class is uncovered when its share of the "
                                       "teacher's predictions on unguided samples is below this / num_classes",
                                       ge=0, le=1)


@dataclass
class DiffusionConfig:
    block_out_channels: list[int] = option([32, 64, 64], "UNet2DModel channels per resolution level", ge=1)
    layers_per_block: int = option(1, "ResNet layers per UNet block", ge=1)
    attention: bool = option(False, "self-attention at the lowest resolution")
    class_conditional: bool = option(False, "train a class-conditional prior (reads labels); default unconditional")
    num_train_timesteps: int = option(1000, "diffusion timesteps T", ge=1)
    beta_schedule: str = option("linear", "noise schedule", choices=("linear", "scaled_linear", "squaredcos_cap_v2"))
    beta_start: float = option(1e-4, "first beta of the linear schedules", gt=0, lt=1)
    beta_end: float = option(0.02, "last beta of the linear schedules", gt=0, lt=1)
    steps: int = option(3000, "optimiser steps", ge=1)
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
class LoggingConfig:
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
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
