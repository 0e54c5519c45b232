"""The public builder: a config (and, optionally, ready modules) -> the parts of a distillation run.

``fastad distill``, the Python entry point :func:`fastad.api.distill`, ``fastad bench`` and the FLOP
count all build through :func:`build`, so a run's parts are made one way, in one order (the teacher,
then the prior, then the student, so a seed gives the same student whatever else changes).

What the teacher takes and says (:class:`TeacherSpec`: classes, input shape, normalisation, class
names) is resolved once, from, in this order: the config's explicit values, the teacher's own
metadata (a fastad checkpoint records it), the evaluation dataset, the prior's image shape and the
width of the teacher's output. An explicit value that contradicts the metadata or the dataset is a
one-line error. The resolved values are written back into the config, so a run's ``config.yaml``
records what was used.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from fastad.baselines.deepinversion import DeepInversionSynthesizer
from fastad.config import Config
from fastad.data import DATASETS, DatasetInfo, make_view
from fastad.diffusion import load_prior
from fastad.diffusion.prior import Prior
from fastad.distill.synthesis import Synthesizer, conditioning_provider
from fastad.errors import UserError
from fastad.models import CLASSIFIER_LAYOUT, create_model, load_classifier, load_weights, read_classifier_meta
from fastad.train.kd import CompiledTeacher

__all__ = ["Built", "TeacherSpec", "build", "describe", "kd_teacher", "load_teacher", "resolve_spec"]


@dataclass
class TeacherSpec:
    """What the teacher takes and says; ``sources`` names where each value came from."""

    num_classes: int
    channels: int
    image_size: tuple[int, int]
    mean: list[float]
    std: list[float]
    class_names: list[str]
    crop_padding: int  # the student's random-crop padding on buffer images
    flip: bool  # whether horizontal flips suit the data
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class Built:
    """A run's parts. ``prior`` is None for DeepInversion; ``view`` maps prior space to the teacher's input
    (resizing when the prior makes another size); ``teacher_name`` says where the teacher came from."""

    teacher: nn.Module
    spec: TeacherSpec
    prior: Prior | None
    student: nn.Module
    synthesizer: Synthesizer | DeepInversionSynthesizer
    view: Callable[[Tensor], Tensor]
    teacher_name: str
    student_name: str
    kd_teacher: nn.Module  # the teacher as the KD steps run it (distillation.compile_kd_teacher)


def load_teacher(cfg: Config, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher (eval, no grads) from ``distillation.teacher_checkpoint``, and its metadata.

    A fastad checkpoint names its architecture; a public zoo file needs ``distillation.teacher_arch``.
    An explicit architecture or class count that contradicts the checkpoint's metadata is refused.
    """
    d = cfg.distillation
    if not d.teacher_checkpoint:
        raise UserError("config key 'distillation.teacher_checkpoint' is not set; pass a teacher checkpoint "
                        "(e.g. from fastad train-teacher, or a public zoo {'state_dict': ...} file)")
    recorded = read_classifier_meta(d.teacher_checkpoint)
    for key, mkey in (("teacher_arch", "arch"), ("num_classes", "num_classes")):
        given, meta_value = getattr(d, key), recorded.get(mkey)
        if given is not None and meta_value is not None and given != meta_value:
            raise UserError(f"config key 'distillation.{key}': got {given!r} but teacher '{d.teacher_checkpoint}' "
                            f"records {meta_value!r}; drop the key (null) or give the matching checkpoint")
    teacher, meta = load_classifier(d.teacher_checkpoint, arch=None if recorded.get("arch") else d.teacher_arch,
                                    num_classes=d.num_classes)
    teacher.to(device, memory_format=CLASSIFIER_LAYOUT).eval().requires_grad_(False)
    return teacher, meta


def _plain(v: Any) -> Any:
    """A value as compared across sources: sequences as lists of floats."""
    return [float(x) for x in v] if isinstance(v, (list, tuple)) else v


def _output_width(teacher: nn.Module, shape: tuple[int, int, int], device: torch.device) -> int:
    """The number of logits ``teacher`` gives for one image of ``shape`` (C, H, W)."""
    with torch.no_grad():
        out = teacher(torch.zeros(1, *shape, device=device))
    if out.ndim != 2:
        raise UserError(f"the teacher returns {list(out.shape)} for one image; expected logits [1, K]")
    return int(out.shape[1])


def resolve_spec(cfg: Config, teacher: nn.Module, meta: dict[str, Any], eval_info: DatasetInfo | None,
                 prior: Prior | None, device: torch.device, *, name: str) -> TeacherSpec:
    """The teacher's :class:`TeacherSpec` (see the module docstring); writes the resolved values into ``cfg``."""
    d = cfg.distillation
    sources: dict[str, str] = {}
    known = DATASETS.get(meta.get("dataset")) if isinstance(meta.get("dataset"), str) else None
    meta_size = meta.get("input_size")
    candidates: dict[str, list[tuple[Any, str]]] = {
        "num_classes": [(meta.get("num_classes"), "teacher metadata"),
                        (eval_info and eval_info.num_classes, "evaluation dataset")],
        "channels": [(meta.get("in_channels"), "teacher metadata"), (eval_info and eval_info.channels,
                                                                       "evaluation dataset"),
                     (prior and prior.sample_shape[0], "prior")],
        "image_size": [(list(meta_size) if meta_size else None, "teacher metadata"),
                       (eval_info and list(eval_info.image_size), "evaluation dataset"),
                       (prior and list(prior.sample_shape[1:]), "prior")],
        "mean": [(meta.get("mean"), "teacher metadata"), (eval_info and list(eval_info.mean), "evaluation dataset")],
        "std": [(meta.get("std"), "teacher metadata"), (eval_info and list(eval_info.std), "evaluation dataset")],
    }
    explicit = {"num_classes": d.num_classes, "image_size": d.image_size, "mean": d.mean, "std": d.std}
    values: dict[str, Any] = {}
    for key, options in candidates.items():
        found = [(v, src) for v, src in options if v is not None and v != []]
        # Shape and class count must agree across the teacher's metadata and the dataset (the prior may make
        # another size, resized explicitly); an explicit normalisation must agree with the teacher's record.
        strict = [(v, src) for v, src in found if (src != "prior" if key in ("num_classes", "channels", "image_size")
                                                   else src == "teacher metadata")]
        given = explicit.get(key)
        value, source = (given, "config") if given is not None else found[0] if found else (None, None)
        if value is None:
            continue
        for v, src in strict:
            if src != source and _plain(v) != _plain(value):
                what = f"config key 'distillation.{key}': got {value}" if source == "config" else \
                    f"teacher {name}: the {source} says {key} {value}"
                raise UserError(f"{what} but the {src} says {v}; " +
                                ("drop the key (null) or make them agree" if source == "config" else
                                 "the teacher and the data do not match"))
        values[key], sources[key] = value, source
    if "num_classes" not in values:
        if "channels" not in values or "image_size" not in values:
            raise UserError(f"teacher {name}: cannot tell its input shape; set distillation.image_size (and give "
                            "a prior)")
        values["num_classes"] = _output_width(teacher, (values["channels"], *values["image_size"]), device)
        sources["num_classes"] = "teacher output"
    for key in ("channels", "image_size", "mean"):
        if key not in values:
            hint = {"mean": "set distillation.mean and distillation.std (the normalisation the teacher was trained "
                            "with)", "image_size": "set distillation.image_size",
                    "channels": "give a prior or an evaluation dataset"}[key]
            raise UserError(f"teacher {name}: no {key.replace('_', ' ')} in the config, its metadata or the evaluation "
                            f"data; {hint}")
    if "std" not in values:
        raise UserError(f"teacher {name}: distillation.mean is set but distillation.std is not; set both")
    C = int(values["channels"])
    for key in ("mean", "std"):
        if len(values[key]) != C:
            raise UserError(f"config key 'distillation.{key}': got {values[key]} for a {C}-channel teacher; give "
                            f"{C} value(s)")
    if prior is not None and prior.sample_shape[0] != C:
        raise UserError(f"prior '{prior.path}' makes {prior.sample_shape[0]}-channel images but the teacher takes {C}")
    names = meta.get("class_names") or (eval_info.class_names if eval_info else None)
    K = int(values["num_classes"])
    class_names = [str(n) for n in names] if names and len(names) == K else [str(k) for k in range(K)]
    # The student's augmentation: the teacher's dataset's own crop/flip where it is known.
    aug = known or eval_info
    H, W = (int(v) for v in values["image_size"])
    crop, flip = (aug.crop_padding, aug.flip) if aug else (max(1, min(H, W) // 8), False)
    sources["augmentation"] = (f"dataset {aug.name}" if aug else f"default for {H}x{W} images (crop {crop}, no flip)")
    d.num_classes, d.image_size = K, [H, W]
    d.mean, d.std = [float(v) for v in values["mean"]], [float(v) for v in values["std"]]
    if meta.get("arch") and d.teacher_checkpoint:
        d.teacher_arch = meta["arch"]
    return TeacherSpec(K, C, (H, W), d.mean, d.std, class_names, crop, flip, sources)


class AutocastTeacher(nn.Module):
    """A frozen teacher whose forward runs under bfloat16 autocast and returns float32 logits
    (``distillation.autocast: bf16``). Its modules are the teacher's own, so the guidance's BatchNorm hooks
    see them, and its gradient w.r.t. the input is taken as the teacher's."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.teacher(x).float()


def native_bf16_cpu() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX), where oneDNN runs bf16 convolutions faster
    than float32; elsewhere it converts and is slower."""
    return any(getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported",
                                                                       "_is_amx_tile_supported"))


def kd_teacher(cfg: Config, teacher: nn.Module) -> nn.Module:
    """The teacher as KD steps run it: compiled with frozen weights under ``distillation.compile_kd_teacher``."""
    return CompiledTeacher(teacher) if cfg.distillation.compile_kd_teacher else teacher


def _accelerate(cfg: Config, teacher: nn.Module, prior: Prior | None,
                device: torch.device) -> tuple[nn.Module, nn.Module, Prior | None]:
    """``distillation.autocast`` and ``distillation.compile`` applied (after the teacher's description is read,
    so that reads the plain teacher): ``(teacher, the guidance's teacher, prior)``. The prior is copied, never
    changed: a caller's ``Prior`` stays as given."""
    d = cfg.distillation
    if d.autocast == "bf16":
        if device.type == "cpu" and not native_bf16_cpu():
            print("fastad: warning: distillation.autocast=bf16 on a CPU without native bfloat16 (AVX512-BF16 or AMX): "
                  "emulated, it is likely slower than float32", file=sys.stderr)
        teacher = AutocastTeacher(teacher).eval()
        if prior is not None:
            prior = dataclasses.replace(prior, autocast=torch.bfloat16)
    if d.compile and prior is not None:
        # diffusers' upsampling asks a cached version check under bf16; dynamo traces through the cache and says
        # so in a multi-line warning per call site, which is about diffusers' code, not the run.
        warnings.filterwarnings("ignore", message=r"Dynamo detected a call to a `functools.lru_cache`")
        # Freezing: the frozen prior's weights become constants, so inductor prepacks the convolutions and fuses
        # GroupNorm/SiLU around them (1.24x per forward on CPU, docs/results.md, "Scale and speed on the CPU").
        prior = dataclasses.replace(prior, unet=torch.compile(prior.unet, options={"freezing": True}))
        # The guidance's forward and input gradient through the teacher, L_BN's hooks included (traced with it);
        # dynamic shapes, as routing guides a different number of images each round. Compiled lazily: an
        # unguided run never compiles it. CPU, resnet20, 180 images: 1.1x (no L_BN) and 1.7x (with it)
        # after 35-70 s of compiling (docs/results.md, "Scale and speed on the CPU").
        return teacher, torch.compile(teacher, dynamic=True), prior
    return teacher, teacher, prior


def load_run_prior(cfg: Config, device: torch.device) -> Prior:
    """The run's diffusion prior from ``distillation.diffusion_checkpoint``, checked against ``fast_ad.T``."""
    d = cfg.distillation
    if not d.diffusion_checkpoint:
        raise UserError("config key 'distillation.diffusion_checkpoint' is not set; pass a diffusers-format prior folder")
    return load_prior(d.diffusion_checkpoint, device=device)


def build(cfg: Config, eval_info: DatasetInfo | None, *, device: torch.device, generator: torch.Generator,
          teacher: nn.Module | None = None, student: nn.Module | None = None, prior: Prior | None = None) -> Built:
    """The teacher, prior, student and round's image source of a run, on ``device``.

    ``teacher``, ``student``, ``prior``: ready objects to use instead of the config's checkpoint, zoo
    architecture and prior folder. The teacher is frozen (eval mode, no grads); a ready student is trained
    in place. ``eval_info``: the labelled evaluation data's description, if any. ``generator``: the run's
    stream; the synthesizer's views and noise draw from it.
    """
    d, f = cfg.distillation, cfg.fast_ad
    if teacher is None:
        teacher, meta = load_teacher(cfg, device)
        teacher_name = f"'{d.teacher_checkpoint}'"
    else:
        if not isinstance(teacher, nn.Module):
            raise UserError(f"teacher: expected a torch.nn.Module or a checkpoint path, got {type(teacher).__name__}")
        teacher.to(device, memory_format=CLASSIFIER_LAYOUT).eval().requires_grad_(False)
        meta, teacher_name = {}, f"{type(teacher).__name__} (a module)"
        d.teacher_checkpoint = d.teacher_arch = None  # the run's config records no checkpoint for it
    if d.synthesizer == "diffusion" and prior is None:
        prior = load_run_prior(cfg, device)  # before the student's init
    elif d.synthesizer != "diffusion":
        prior = None
    if prior is not None:
        if prior.num_train_timesteps != f.T:
            raise UserError(f"config key 'fast_ad.T': got {f.T} but prior '{prior.path}' has "
                            f"{prior.num_train_timesteps} timesteps")
    spec = resolve_spec(cfg, teacher, meta, eval_info, prior, device, name=teacher_name)
    teacher, guide_teacher, prior = _accelerate(cfg, teacher, prior, device)
    if prior is not None and tuple(prior.sample_shape[1:]) != spec.image_size and d.resize == "none":
        C, H, W = prior.sample_shape
        raise UserError(f"prior '{prior.path}' makes {C}x{H}x{W} images but the teacher takes {spec.channels}x"
                        f"{spec.image_size[0]}x{spec.image_size[1]} ({spec.sources['image_size']}); set "
                        "distillation.resize (e.g. bilinear) to resize them, or use a prior of the teacher's size")
    if student is None:
        student = create_model(d.student_arch, num_classes=spec.num_classes, in_channels=spec.channels)
        student_name = d.student_arch
        if d.student_checkpoint:
            load_weights(student, d.student_checkpoint)
    else:
        if not isinstance(student, nn.Module):
            raise UserError(f"student: expected a torch.nn.Module or a zoo name, got {type(student).__name__}")
        student_name = f"{type(student).__name__} (a module)"
    student.to(device, memory_format=CLASSIFIER_LAYOUT)
    resize = d.resize if d.resize != "none" else "bilinear"  # unused when the sizes agree
    view = make_view(spec.mean, spec.std, size=spec.image_size, resize=resize)
    synth: Synthesizer | DeepInversionSynthesizer
    if prior is None:
        di = cfg.deepinversion
        # DeepInversion's own jitter and flip (the data's crop/flip), as in the paper's recipe.
        synth = DeepInversionSynthesizer(teacher, mean=spec.mean, std=spec.std,
                                         image_shape=(spec.channels, *spec.image_size), iterations=di.iterations,
                                         lr=di.lr, tv_l2=di.tv_l2, l2=di.l2, crop_padding=spec.crop_padding,
                                         flip=spec.flip, device=device)
    else:
        synth = Synthesizer(prior, guide_teacher, fast_ad=f, guidance=cfg.guidance, routing=cfg.routing,
                            sampler=cfg.sampler,
                            view=make_view(spec.mean, spec.std, generator=generator, size=spec.image_size,
                                           resize=resize),
                            provider=conditioning_provider(d.conditioning, prior), device=device,
                            student=student if f.beta_adv > 0 else None, num_classes=spec.num_classes,
                            classify=lambda x: teacher(view(x)))
    return Built(teacher, spec, prior, student, synth, view, teacher_name, student_name,
                 kd_teacher(cfg, teacher))


def describe(parts: Built, cfg: Config) -> str:
    """One line on what the run distils: the teacher, where its description came from, any resize."""
    sp = parts.spec
    by_source: dict[str, list[str]] = {}
    for key, src in sp.sources.items():
        if key != "augmentation":
            by_source.setdefault(src, []).append(key)
    origin = "; ".join(f"{', '.join(keys)} from the {src}" for src, keys in by_source.items())
    line = (f"fastad distill: teacher {parts.teacher_name}: {sp.num_classes} classes, {sp.channels}x{sp.image_size[0]}x"
            f"{sp.image_size[1]} input ({origin}); student {parts.student_name}")
    if parts.prior is not None and tuple(parts.prior.sample_shape[1:]) != sp.image_size:
        _, h, w = parts.prior.sample_shape
        line += (f"; prior images resized {h}x{w} -> {sp.image_size[0]}x{sp.image_size[1]} "
                 f"({cfg.distillation.resize}, distillation.resize)")
    return line
