"""DeepInversion: images synthesised from noise by optimising pixels against a frozen teacher.

The data-free KD field's classic baseline: H. Yin, P. Molchanov, Z. Li, J. M. Alvarez, A. Mallya,
D. Hoiem, N. K. Jha, J. Kautz, "Dreaming to Distill: Data-free Knowledge Transfer via
DeepInversion", CVPR 2020. Pixels start as N(0, 1) noise and are optimised with Adam to minimise

    L = bn_weight * L_BN + ce_weight * CE(T(view(x)), y) + tv_l2 * R_TV + l2 * R_L2

where ``L_BN`` is exactly the BatchNorm-input statistic fastad's CADR guidance uses
(:class:`fastad.guidance.BNStatsRecorder`; docs/method.md, step 5), so the two methods pull
towards the same statistics and differ only in how the image is produced (a diffusion prior
versus free pixels). No diffusion prior is involved. Adaptive DeepInversion's competition term
is not included.

Range: images live in prior space [-1, 1] and are **clamped after each Adam step** (projected
optimisation, as the reference ImageNet implementation clips after each step). A tanh
re-parameterisation would also keep the range, but its gradient vanishes on saturated pixels,
which then get stuck at +-1; with the clamp every pixel keeps its full gradient, and the image
the teacher saw at the last step is exactly the one returned.

:class:`DeepInversionConfig` is the ``deepinversion`` config section, owned here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastad.data import make_view
from fastad.errors import UserError
from fastad.guidance import BNStatsRecorder
from fastad.options import Section, option

__all__ = ["DeepInversionConfig", "DeepInversionStats", "DeepInversionSynthesizer", "tv_l2_prior"]

_KEYS = ("ce_initial", "ce_final", "l_bn_initial", "l_bn_final", "loss_final", "teacher_acc", "teacher_conf")


@dataclass
class DeepInversionConfig(Section):
    """The ``deepinversion`` section: the baseline's own settings (``distillation.synthesizer: deepinversion``)."""

    section = "deepinversion"
    iterations: int = option(200, "Adam steps per synthesised batch", ge=0)
    lr: float = option(0.05, "Adam learning rate", gt=0)
    tv_l2: float = option(0.0, "weight of the squared total-variation image prior (mean squared neighbour "
                          "difference, images in [-1, 1]); 0 = off", ge=0)
    l2: float = option(0.0, "weight of the L2 image prior mean(x^2); 0 = off", ge=0)


def tv_l2_prior(x: Tensor) -> Tensor:
    """Squared total variation: mean squared difference of vertical and horizontal neighbours.

    ``x [B, C, H, W] -> scalar`` (DeepInversion's ``R_TV`` in its L2 form; a mean rather than a
    norm, so its weight does not depend on the image size).
    """
    return (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).mean() + (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).mean()


@dataclass
class DeepInversionStats:
    """One record per synthesised batch; the distillation loop calls :meth:`reset` and :meth:`summary`.

    Each record has ``ce_initial``/``ce_final`` (mean teacher CE vs the targets), ``l_bn_initial``/
    ``l_bn_final`` (``L_BN``), both measured without augmentation on the starting noise and on the
    returned images, ``loss_final`` (the last optimisation step's total loss, with augmentation),
    ``teacher_acc`` (percent of returned images the teacher assigns to their target) and
    ``teacher_conf`` (mean max softmax probability).
    """

    batches: list[dict[str, float]] = field(default_factory=list)

    def add(self, values: dict[str, float]) -> None:
        """Append one batch's record."""
        self.batches.append(dict(values))

    def summary(self) -> dict[str, float]:
        """Means over the recorded batches, plus ``batches`` (their count) and ``iterations`` (per batch)."""
        n = len(self.batches)
        out: dict[str, float] = {"batches": n}
        if n:
            out["iterations"] = self.batches[-1]["iterations"]
            out.update({k: float(sum(b[k] for b in self.batches) / n) for k in _KEYS})
        return out

    def reset(self) -> None:
        """Forget all records."""
        self.batches.clear()


def _check_number(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (positive and value == 0):
        raise UserError(f"deepinversion: {name}={value!r} must be a finite number {'> 0' if positive else '>= 0'}")
    return float(value)


class DeepInversionSynthesizer:
    """Draws a batch of DeepInversion images for given labels (same interface as ``Synthesizer``).

    Args:
        teacher: frozen classifier, in eval mode (checked at each call). Never modified: its mode,
            BN running statistics and parameters are untouched and no ``.grad`` lands on them.
        mean, std: the teacher's per-channel input normalisation (length C).
        image_shape: ``(C, H, W)`` of the synthesised images.
        iterations: Adam steps per batch (0 returns the clamped starting noise).
        lr: Adam learning rate (PyTorch's default betas, as the reference CIFAR script).
        bn_weight, ce_weight, tv_l2, l2: weights of ``L_BN``, CE, squared total variation
            (:func:`tv_l2_prior`) and the L2 prior ``mean(x^2)``, all in prior space.
        crop_padding, flip: random crop/flip of each step's teacher view (DeepInversion's jitter
            and flip), drawn from the call's generator; 0/False for none.
        device: where the images are optimised and returned.
    """

    def __init__(
        self, teacher: nn.Module, *, mean: Sequence[float], std: Sequence[float], image_shape: Sequence[int],
        iterations: int = 200, lr: float = 0.05, bn_weight: float = 1.0, ce_weight: float = 1.0,
        tv_l2: float = 0.0, l2: float = 0.0, crop_padding: int = 0, flip: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        if not isinstance(teacher, nn.Module):
            raise UserError(f"deepinversion: teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        shape = tuple(image_shape)
        if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
            raise UserError(f"deepinversion: image_shape={list(shape)} must be three ints >= 1 (C, H, W)")
        if shape[0] != len(mean):
            raise UserError(f"deepinversion: image_shape has {shape[0]} channels but mean/std have {len(mean)}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise UserError(f"deepinversion: iterations={iterations!r} must be an int >= 0")
        if not isinstance(flip, bool):
            raise UserError(f"deepinversion: flip={flip!r} must be true or false")
        make_view(mean, std, crop_padding=crop_padding, flip=flip)  # validates mean, std, crop_padding
        self.teacher, self.mean, self.std = teacher, [float(m) for m in mean], [float(s) for s in std]
        self.image_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.iterations, self.lr = iterations, _check_number("lr", lr, positive=True)
        self.bn_weight, self.ce_weight = _check_number("bn_weight", bn_weight), _check_number("ce_weight", ce_weight)
        self.tv_l2, self.l2 = _check_number("tv_l2", tv_l2), _check_number("l2", l2)
        self.crop_padding, self.flip = crop_padding, flip
        self.device = torch.device(device)
        self.stats = DeepInversionStats()

    def __call__(self, labels: Tensor, *, generator: torch.Generator) -> Tensor:
        """``labels [B]`` (int) -> images ``[B, C, H, W]`` in [-1, 1], float32, detached, on ``device``.

        Randomness (starting noise, then each step's crop/flip) comes from ``generator`` only, so a seeded CPU generator
        gives identical images on CPU. Runs its own autograd even when called under ``torch.no_grad()``.
        """
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.numel() == 0 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise UserError(f"deepinversion: labels must be a non-empty 1-D integer tensor [B], got "
                            f"{labels.dtype} {list(labels.shape)}")
        if self.teacher.training:
            raise UserError("deepinversion: the teacher is in training mode; call teacher.eval()")
        y = labels.long().to(self.device)
        plain = make_view(self.mean, self.std)  # un-augmented view, for the initial/final measurements
        jitter = make_view(self.mean, self.std, crop_padding=self.crop_padding, flip=self.flip, generator=generator)
        # Noise drawn on the generator's device, then moved: the same images for a seed whatever the device.
        x = torch.randn((len(y), *self.image_shape), generator=generator, device=generator.device)
        x = x.to(self.device, torch.float32).clamp_(-1, 1).requires_grad_(True)
        p = next(self.teacher.parameters(), None)
        t_dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        opt = torch.optim.Adam([x], lr=self.lr)
        bn = BNStatsRecorder(self.teacher)  # hooks live for this call only
        try:
            with torch.no_grad():
                z0, bn0 = self._measure(bn, plain, x, t_dtype)
            if bool(((y < 0) | (y >= z0.shape[1])).any()):
                raise UserError(f"deepinversion: labels must lie in [0, {z0.shape[1]}) for this teacher")
            ce0 = F.cross_entropy(z0, y).item()
            loss_val = float("nan")
            with torch.enable_grad():
                for _ in range(self.iterations):
                    with bn.record():
                        z = self.teacher(jitter(x).to(t_dtype)).float()  # logits [B, K]
                        l_bn = bn.loss().to(self.device)
                    loss = self.bn_weight * l_bn + self.ce_weight * F.cross_entropy(z, y)
                    if self.tv_l2:
                        loss = loss + self.tv_l2 * tv_l2_prior(x)
                    if self.l2:
                        loss = loss + self.l2 * x.pow(2).mean()
                    # autograd.grad w.r.t. x only: no .grad ever lands on the teacher's parameters.
                    (x.grad,) = torch.autograd.grad(loss, x)
                    opt.step()
                    with torch.no_grad():
                        x.clamp_(-1, 1)  # projection back to prior space (see the module docstring)
                    loss_val = loss.item()
            out = x.detach()
            with torch.no_grad():
                z1, bn1 = self._measure(bn, plain, out, t_dtype)
                probs = z1.softmax(1)
                self.stats.add({
                    "iterations": self.iterations, "ce_initial": ce0, "ce_final": F.cross_entropy(z1, y).item(),
                    "l_bn_initial": bn0, "l_bn_final": bn1, "loss_final": loss_val,
                    "teacher_acc": 100.0 * (probs.argmax(1) == y).float().mean().item(),
                    "teacher_conf": probs.max(1).values.mean().item()})
        finally:
            bn.remove()
        return out

    def _measure(self, bn: BNStatsRecorder, view, x: Tensor, t_dtype: torch.dtype) -> tuple[Tensor, float]:
        """Teacher logits ``[B, K]`` (float32) and ``L_BN`` on ``view(x)``."""
        with bn.record():
            z = self.teacher(view(x).to(t_dtype)).float()
            return z, bn.loss().item()
