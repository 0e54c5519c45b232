"""Drawing images from a prior without guidance.

Thin glue over the pure samplers (:func:`~fastad.diffusion.ddim.ddim_sample`, DPM-Solver++(2M)): the start noise for
all ``n`` images is drawn at once from the caller's generator, so deterministic DDIM
(``ddim_eta = 0``) gives the same images whatever ``batch_size``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fastad.diffusion.ddim import SamplerConfig
from fastad.diffusion.prior import Prior
from fastad.errors import UserError

__all__ = ["cyclic_labels", "sample_prior"]


def cyclic_labels(n: int, num_classes: int) -> Tensor:
    """``[n]`` long: ``0, 1, ..., K-1, 0, 1, ...`` (each class ``n // K`` or ``n // K + 1`` times)."""
    return torch.arange(n) % num_classes


@torch.no_grad()
def sample_prior(
    prior: Prior,
    n: int,
    *,
    steps: int = 50,
    ddim_eta: float = 0.0,
    spacing: str = "leading",
    generator: torch.Generator,
    batch_size: int = 64,
    class_labels: Optional[Tensor] = None,
    clip_x0: bool = False,
    solver: str = "ddim",
    progress: bool = False,
) -> Tensor:
    """``n`` images from ``prior`` with ``solver`` (``"ddim"`` or ``"dpmpp-2m"``, :class:`SamplerConfig`); returns
    float32 ``[n, C, H, W]`` on CPU, prior space (about [-1, 1], not clamped).

    ``x_T`` is drawn with ``generator`` on its device (CPU for a CPU generator) and moved to the
    prior's device batch by batch. ``class_labels`` ``[n]`` is required for a class-conditional
    prior and refused for an unconditional one. ``clip_x0`` clamps each step's preview to [-1, 1]
    (diffusers' ``clip_sample``).
    """
    if n < 1 or batch_size < 1:
        raise UserError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    if class_labels is not None and len(class_labels) != n:
        raise UserError(f"{len(class_labels)} class labels for {n} images")
    sampler = SamplerConfig(ddim_eta=ddim_eta, spacing=spacing, clip_x0=clip_x0, solver=solver)
    ts = sampler.timesteps(prior.num_train_timesteps, steps)
    device = next(prior.unet.parameters()).device
    x_T = torch.randn((n, *prior.sample_shape), generator=generator, device=generator.device)
    out = []
    for s in range(0, n, batch_size):
        labels = None if class_labels is None else class_labels[s:s + batch_size].to(device)
        x = sampler.sample(prior.bind(labels), x_T[s:s + batch_size].to(device), prior.alphas_cumprod, ts,
                           generator=generator, progress=progress)
        out.append(x.float().cpu())
    return torch.cat(out)
