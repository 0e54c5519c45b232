"""CADR's rule: rectify the prior's noise prediction (docs/method.md, steps 1-8; Eq. 4-8).

:func:`make_cadr_eps_fn` wraps an ``eps_fn(x_t, t)`` and returns a new one whose output
``eps_tilde`` steers DDIM towards images the teacher assigns to ``labels``; the sampler is
untouched (k-diffusion / guided-diffusion habit):

    with make_cadr_eps_fn(eps_fn, teacher, labels, alphas_cumprod, FastADConfig(), view=view) as guided:
        x0 = ddim_sample(guided, x_T, alphas_cumprod, timesteps)
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from fastad.diffusion.ddim import EpsFn, to_device
from fastad.errors import UserError
from fastad.guidance.loss import (FastADConfig, GuidanceConfig, GuidanceLoss, GuidanceStats, normalize_grad,
                                  pool_grad)

__all__ = ["CADREpsFn", "make_cadr_eps_fn"]


class CADREpsFn:
    """The rectified ``eps_fn`` made by :func:`make_cadr_eps_fn`: ``(x_t, t) -> eps_tilde``.

    It owns a :class:`~fastad.guidance.loss.GuidanceLoss` (and so the teacher's BatchNorm hooks);
    :meth:`close`, or leaving a ``with`` block, removes them.
    """

    def __init__(self, eps_fn: EpsFn, loss: GuidanceLoss, alphas_cumprod: Tensor) -> None:
        abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
        if abar.ndim != 1 or abar.numel() == 0 or not bool(((abar > 0) & (abar <= 1)).all()):
            loss.close()  # a refused wrapper leaves no hooks on the teacher
            raise UserError(f"alphas_cumprod must be a non-empty [T] tensor with values in (0, 1], "
                            f"got shape {list(abar.shape)}")
        self.eps_fn, self.loss, self.abar = eps_fn, loss, abar

    def close(self) -> None:
        """Remove the BatchNorm hooks from the teacher (idempotent)."""
        self.loss.close()

    def __enter__(self) -> "CADREpsFn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_t`` [B, C, H, W] (prior space), ``t`` [B] long -> ``eps_tilde`` [B, C, H, W] in eps's dtype.

        Works under ``torch.no_grad()`` (as ``ddim_sample`` calls it); not under ``inference_mode``.
        """
        self.loss.check(x_t, t)
        cfg, B, dev = self.loss.cfg, x_t.shape[0], x_t.device
        if self.abar.device != t.device:  # indexed where t lives: no host-device sync inside the sampling loop
            self.abar = to_device(self.abar, t.device).to(torch.float32 if t.device.type == "mps" else torch.float64)
        a = self.abar[t.detach()]  # abar_t per sample, float64
        sqrt_abar = a.sqrt().to(torch.float32).view(B, 1, 1, 1)
        sqrt_1m_abar = (1 - a).sqrt().to(torch.float32).view(B, 1, 1, 1)
        x_in = x_t.detach().requires_grad_(True)  # g is taken w.r.t. this leaf

        with torch.enable_grad():
            # 1. eps = eps_theta(x_t, t): a constant in "tweedie" mode, differentiated in "full" mode.
            if cfg.grad_mode == "full":
                eps = self.eps_fn(x_in, t)
            else:
                with torch.no_grad():
                    eps = self.eps_fn(x_t, t)
            with torch.autocast(dev.type, enabled=False):  # guidance gradient math in float32
                x = x_in.float()
                # 2. Preview (Tweedie, Eq. 4), no clamp: a clamp would zero saturated pixels' gradient.
                x0_hat = (x - sqrt_1m_abar * eps.float()) / sqrt_abar
                total, parts = self.loss(x0_hat)  # steps 3-5
                # 6. g = grad of L w.r.t. x_t (of B * L; see fastad.guidance.loss). In "tweedie" mode eps is
                #    constant, so this is grad_{x0_hat} L / sqrt(abar_t). Only x_in is differentiated:
                #    no .grad lands on teacher or student parameters.
                (g,) = torch.autograd.grad(total, x_in)
                g = pool_grad(g.float(), self.loss.guidance.grad_pool)
            # 7. Adaptive normalisation (Eq. 6): g_hat = g / (||g||_2 + xi); r = lam * eta * ||x_t||_2 * g_hat.
            g_hat = normalize_grad(g, cfg.xi)
            x_norm = x.detach().flatten(1).norm(dim=1)
            r = (parts["lam"] * cfg.eta * x_norm).view(B, 1, 1, 1) * g_hat
            # A non-finite gradient (or gate) leaves that sample unrectified this step: never propagated.
            ok = torch.isfinite(r).flatten(1).all(dim=1)
            r = torch.where(ok.view(B, 1, 1, 1), r, torch.zeros_like(r))
            # 8. Rectification (Eq. 8): eps_tilde = eps + sqrt(1 - abar_t) * r. With "+", the corrected
            #    preview x0_hat - (1 - abar_t) / sqrt(abar_t) * r moves down L (the original code's "-"
            #    climbs it; docs/method.md).
            eps = eps.detach()
            work = torch.promote_types(eps.dtype, torch.float32)
            eps_tilde = (eps.to(work) + sqrt_1m_abar.to(work) * r.to(work)).to(eps.dtype)
        self.loss.record(t, parts, g, ok)
        return eps_tilde


def make_cadr_eps_fn(eps_fn: EpsFn, teacher: nn.Module, labels: Tensor, alphas_cumprod: Tensor, cfg: FastADConfig,
                     *, guidance: Optional[GuidanceConfig] = None, view: Callable[[Tensor], Tensor],
                     student: Optional[nn.Module] = None, stats: Optional[GuidanceStats] = None,
                     generator: Optional[torch.Generator] = None) -> CADREpsFn:
    """Wrap ``eps_fn`` with CADR guidance towards ``labels`` (docs/method.md, steps 1-8).

    Args:
        eps_fn: the prior, ``eps_fn(x_t [B, C, H, W], t [B] long) -> eps [B, C, H, W]``.
        teacher: frozen classifier in eval mode (checked at each call; never modified: its mode,
            parameters and ``.grad`` are left alone).
        labels: ``[B]`` target classes of the batch (one wrapper per synthesis batch).
        alphas_cumprod: ``[T]`` noise schedule of the prior (``abar``); read in float64.
        cfg: the ``fast_ad`` section (:class:`FastADConfig`; its defaults are the paper's).
        guidance: the ``guidance`` section (rule ``eps``); None = its defaults, the paper's.
        view: prior space -> teacher input, e.g. :func:`fastad.data.make_view`.
        student: needed only when ``cfg.beta_adv > 0``; pass the bare module, not a DDP wrapper.
        stats: a :class:`GuidanceStats` to append each step's statistics to.
        generator: source of the smoothing noise (``guidance.smooth_sigma > 0``).

    Returns:
        A :class:`CADREpsFn`; use it as a context manager or call ``close()`` to remove its BatchNorm hooks.
    """
    guidance = GuidanceConfig() if guidance is None else guidance
    if guidance.rule != "eps":
        raise UserError(f"config key 'guidance.rule': got {guidance.rule!r}; make_cadr_eps_fn is the 'eps' rule "
                        "(the 'x0' rule is fastad.guidance.preview_guided_sample)")
    loss = GuidanceLoss(teacher, labels, cfg, guidance, view=view, student=student, stats=stats, generator=generator)
    return CADREpsFn(eps_fn, loss, alphas_cumprod)
