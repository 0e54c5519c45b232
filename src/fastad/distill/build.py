"""The public builder: a config -> the teacher, the prior, the student and the synthesizer of a run.

``fastad distill``, ``fastad bench`` and the FLOP count all build through :func:`build`, so a
run's parts are made one way, in one order (the prior is loaded before the student is initialised,
so a seed gives the same student whatever else changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from fastad.baselines.deepinversion import DeepInversionSynthesizer
from fastad.config import Config
from fastad.data import DatasetInfo, make_view
from fastad.diffusion import load_prior
from fastad.diffusion.prior import Prior
from fastad.distill.synthesis import Synthesizer, conditioning_provider
from fastad.errors import UserError
from fastad.models import create_model, load_classifier, load_weights, read_classifier_meta

__all__ = ["Built", "build", "load_teacher", "load_run_prior"]


@dataclass
class Built:
    """A run's parts. ``prior`` is None for DeepInversion; ``view`` maps prior space to the teacher's input."""

    teacher: nn.Module
    mean: list[float]
    std: list[float]
    prior: Prior | None
    student: nn.Module
    synthesizer: Synthesizer | DeepInversionSynthesizer
    view: Callable[[Tensor], Tensor]


def load_teacher(cfg: Config, info: DatasetInfo, device: torch.device) -> tuple[nn.Module, list[float], list[float]]:
    """The frozen teacher (eval, no grads) and the normalisation it expects."""
    d = cfg.distillation
    if not d.teacher_checkpoint:
        raise UserError("config key 'distillation.teacher_checkpoint' is not set; pass a teacher checkpoint "
                        "(e.g. from fastad train-teacher, or a public zoo {'state_dict': ...} file)")
    # A fastad checkpoint names its architecture; a public zoo file needs distillation.teacher_arch.
    arch = None if read_classifier_meta(d.teacher_checkpoint).get("arch") else d.teacher_arch
    teacher, meta = load_classifier(d.teacher_checkpoint, arch=arch, num_classes=d.num_classes,
                                    in_channels=info.channels)
    if getattr(teacher, "num_classes", d.num_classes) != d.num_classes:
        raise UserError(f"teacher '{d.teacher_checkpoint}' has {teacher.num_classes} classes but "
                        f"distillation.num_classes is {d.num_classes}")
    teacher.to(device).eval().requires_grad_(False)
    return teacher, list(meta.get("mean") or info.mean), list(meta.get("std") or info.std)


def load_run_prior(cfg: Config, info: DatasetInfo, device: torch.device) -> Prior:
    """The run's diffusion prior, checked against the teacher's input shape and ``fast_ad.T``."""
    d, f = cfg.distillation, cfg.fast_ad
    if not d.diffusion_checkpoint:
        raise UserError("config key 'distillation.diffusion_checkpoint' is not set; pass a diffusers-format prior folder")
    prior = load_prior(d.diffusion_checkpoint, device=device)
    C, H, W = prior.sample_shape
    if (C, H, W) != (info.channels, *info.image_size) or [H, W] != list(d.image_size):
        raise UserError(f"prior '{d.diffusion_checkpoint}' makes {C}x{H}x{W} images but the teacher takes "
                        f"{info.channels}x{d.image_size[0]}x{d.image_size[1]} (distillation.image_size)")
    if prior.num_train_timesteps != f.T:
        raise UserError(f"config key 'fast_ad.T': got {f.T} but prior '{d.diffusion_checkpoint}' has "
                        f"{prior.num_train_timesteps} timesteps")
    return prior


def build(cfg: Config, info: DatasetInfo, *, device: torch.device, generator: torch.Generator) -> Built:
    """Teacher, prior (``distillation.synthesizer: diffusion``), student (``student_arch``, initialised
    from the global RNG or ``student_checkpoint``) and the round's image source, all on ``device``.

    ``generator`` is the run's stream: the synthesizer's views and noise draw from it.
    """
    d, f = cfg.distillation, cfg.fast_ad
    teacher, mean, std = load_teacher(cfg, info, device)
    prior = load_run_prior(cfg, info, device) if d.synthesizer == "diffusion" else None  # before the student's init
    student = create_model(d.student_arch, num_classes=d.num_classes, in_channels=info.channels).to(device)
    if d.student_checkpoint:
        load_weights(student, d.student_checkpoint)
    view = make_view(mean, std)
    synth: Synthesizer | DeepInversionSynthesizer
    if prior is None:
        if list(d.image_size) != list(info.image_size):
            raise UserError(f"config key 'distillation.image_size': got {list(d.image_size)} but dataset "
                            f"'{info.name}' has {list(info.image_size)} images")
        di = cfg.deepinversion
        # DeepInversion's own jitter and flip (the dataset's crop/flip), as in the paper's recipe.
        synth = DeepInversionSynthesizer(teacher, mean=mean, std=std, image_shape=(info.channels, *d.image_size),
                                         iterations=di.iterations, lr=di.lr, tv_l2=di.tv_l2, l2=di.l2,
                                         crop_padding=info.crop_padding, flip=info.flip, device=device)
    else:
        synth = Synthesizer(prior, teacher, fast_ad=f, guidance=cfg.guidance, routing=cfg.routing,
                            sampler=cfg.sampler, view=make_view(mean, std, generator=generator),
                            provider=conditioning_provider(d.conditioning, prior), device=device,
                            student=student if f.beta_adv > 0 else None, num_classes=d.num_classes,
                            classify=lambda x: teacher(view(x)))
    return Built(teacher, mean, std, prior, student, synth, view)
