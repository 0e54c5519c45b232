"""The ``x0`` rule: a normalised gradient step on the DDIM preview itself (docs/method.md, "Beyond the paper").

At each timestep the preview ``x0_hat`` (Eq. 4) takes one step down the guidance loss,
``x0 <- x0_hat - lam * x0_step * sqrt(D) * g_hat`` with ``g_hat`` the unit-norm (Eq. 6), optionally
low-passed gradient of ``L`` at ``x0_hat`` and ``D`` the pixels per image; the DDIM update then uses
the corrected preview with the prior's own ``eps`` (manifold-preserving guidance, in the style of
MPGD: He et al. 2024). Since this changes the loop rather than ``eps``, it is a sampler of its own,
built from the plain sampler's pieces.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from fastad.diffusion.ddim import EpsFn, ddim_move, ddim_noise, ddim_preview, ddim_schedule
from fastad.errors import UserError
from fastad.guidance.loss import (FastADConfig, GuidanceConfig, GuidanceLoss, GuidanceStats, normalize_grad,
                                  pool_grad)

__all__ = ["preview_step", "preview_guided_sample"]


def preview_step(loss: GuidanceLoss, x_t: Tensor, t: Tensor, x0_hat: Tensor) -> Tensor:
    """One guidance step on the preview ``x0_hat`` [B, C, H, W] of ``x_t`` at ``t`` [B] -> the corrected preview.

    A sample whose step is not finite keeps its preview.
    """
    loss.check(x_t, t)
    B, dev = x0_hat.shape[0], x0_hat.device
    x0 = x0_hat.detach().float()
    size = loss.guidance.x0_step * math.sqrt(x0[0].numel())
    x_in = x0.requires_grad_(True)
    with torch.enable_grad(), torch.autocast(dev.type, enabled=False):
        total, parts = loss(x_in)
        (g,) = torch.autograd.grad(total, x_in)
    step = (parts["lam"] * size).view(B, 1, 1, 1) * normalize_grad(pool_grad(g.float(), loss.guidance.grad_pool),
                                                                     loss.cfg.xi)
    ok = torch.isfinite(step).flatten(1).all(dim=1)
    x0 = (x0.detach() - torch.where(ok.view(B, 1, 1, 1), step, torch.zeros_like(step))).detach()
    loss.record(t, parts, g, ok)
    return x0.to(x0_hat.dtype)


@torch.no_grad()
def preview_guided_sample(
    eps_fn: EpsFn, teacher: nn.Module, labels: Tensor, x_T: Tensor, alphas_cumprod: Tensor, timesteps: Tensor,
    cfg: FastADConfig, guidance: GuidanceConfig, *, view: Callable[[Tensor], Tensor],
    student: Optional[nn.Module] = None, stats: Optional[GuidanceStats] = None,
    generator: Optional[torch.Generator] = None, ddim_eta: float = 0.0, final_abar: str = "one",
    clip_x0: bool = False, assign: Optional[Callable[[Tensor], Tensor]] = None, assign_step: int = 0,
) -> Tensor:
    """DDIM from ``x_T`` [B, C, H, W] with the ``x0`` rule towards ``labels`` [B]; returns ``x_0`` in ``x_T``'s dtype.

    Per step: ``eps = eps_fn(x_t, t)``; the ancestral noise (``ddim_eta > 0``); the preview, one
    :func:`preview_step`; the clamp (``clip_x0``) and the DDIM update (Eq. 7) with the prior's ``eps``.
    The arguments are those of :func:`fastad.diffusion.ddim_sample` and
    :func:`fastad.guidance.make_cadr_eps_fn`; ``generator`` serves both the DDIM and the smoothing noise.
    """
    if guidance.rule != "x0":
        raise UserError(f"config key 'guidance.rule': got {guidance.rule!r}; preview_guided_sample is the 'x0' rule")
    if cfg.grad_mode != "tweedie":
        raise UserError(f"config key 'fast_ad.grad_mode': got {cfg.grad_mode!r}; guidance rule 'x0' differentiates "
                        "at the preview (use tweedie)")
    schedule = list(ddim_schedule(alphas_cumprod, timesteps, final_abar=final_abar))
    B, device = x_T.shape[0], x_T.device
    x = x_T.to(torch.promote_types(x_T.dtype, torch.float32))
    loss = None
    try:
        for i, (t, abar_t, abar_prev) in enumerate(schedule):
            t_b = torch.full((B,), t, dtype=torch.long, device=device)
            eps = eps_fn(x.to(x_T.dtype), t_b)
            noise = ddim_noise(x_T, ddim_eta, generator)
            x0 = ddim_preview(x, eps, abar_t)
            if loss is None and i >= assign_step:
                if assign is not None:
                    labels = assign(x0)
                loss = GuidanceLoss(teacher, labels, cfg, guidance, view=view, student=student, stats=stats,
                                    generator=generator)
            if loss is not None:
                x0 = preview_step(loss, x, t_b, x0)
            x, _ = ddim_move(x0, eps, abar_t, abar_prev, ddim_eta=ddim_eta, noise=noise, clip_x0=clip_x0)
    finally:
        if loss is not None:
            loss.close()
    return (x.to(x_T.dtype), labels) if assign is not None else x.to(x_T.dtype)
