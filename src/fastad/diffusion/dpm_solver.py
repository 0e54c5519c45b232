"""DPM-Solver++(2M): the second-order multistep solver of Lu et al. (2022, "DPM-Solver++: Fast Solver for
Guided Sampling of Diffusion Probabilistic Models", Algorithm 2), in data prediction, a pure function like
:func:`~fastad.diffusion.ddim.ddim_sample`.

With ``lambda = log(sqrt(abar) / sqrt(1 - abar))`` and ``h`` the step in ``lambda``, a first-order step is
``x_prev = sqrt((1 - abar_prev) / (1 - abar_t)) * x_t + sqrt(abar_prev) * (1 - exp(-h)) * d`` with ``d`` the
preview ``x0_hat``: deterministic DDIM with ``eps`` re-derived from the (clamped) preview. The second-order
step extrapolates the preview from the previous one, ``d = x0_hat + (x0_hat - x0_hat_prev) / (2 r)`` with
``r = h_prev / h`` (the "midpoint" form). The first step is first order; so is the last one, which ends at
``abar = 1`` (diffusers' ``lower_order_final`` and ``final_sigmas_type="zero"``). Agreement with diffusers'
``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)`` is tested in
``tests/test_ddim.py``.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from fastad.diffusion.ddim import EpsFn, ddim_preview, ddim_schedule

__all__ = ["dpmpp_2m_sample"]


def _lam(abar: float) -> float:
    return 0.5 * math.log(abar / (1 - abar)) if abar < 1 else math.inf


@torch.no_grad()
def dpmpp_2m_sample(
    eps_fn: EpsFn,
    x_T: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    final_abar: str = "one",
    clip_x0: bool = False,
    callback: Optional[Callable[[int, int, Tensor, Tensor], None]] = None,
    progress: bool = False,
) -> Tensor:
    """Run DPM-Solver++(2M) from ``x_T`` down the descending ``timesteps``; returns ``x_0``.

    Arguments as :func:`~fastad.diffusion.ddim.ddim_sample` (one ``eps_fn`` call per step, so the same cost);
    ``clip_x0`` clamps each preview to [-1, 1] before it is used and remembered (diffusers' thresholding
    step, with a fixed threshold of 1). ``final_abar="first"`` ends one step short of ``abar = 1``.
    """
    schedule = list(ddim_schedule(alphas_cumprod, timesteps, final_abar=final_abar))
    B, device = x_T.shape[0], x_T.device
    x = x_T.to(torch.promote_types(x_T.dtype, torch.float32))
    x0_prev, h_prev, n = None, None, len(schedule)
    if progress:
        from tqdm.auto import tqdm

        schedule = tqdm(schedule, desc="DPM-Solver++(2M)")
    for i, (t, abar_t, abar_prev) in enumerate(schedule):
        eps = eps_fn(x.to(x_T.dtype), torch.full((B,), t, dtype=torch.long, device=device))
        x0 = ddim_preview(x, eps, abar_t)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        h = _lam(abar_prev) - _lam(abar_t)
        d = x0
        if x0_prev is not None and i + 1 < n:
            d = x0 + (x0 - x0_prev) * (h / (2 * h_prev))
        if callback is not None:
            callback(i, t, x, x0)
        if abar_prev >= 1:
            x = d
        else:
            x = math.sqrt((1 - abar_prev) / (1 - abar_t)) * x + math.sqrt(abar_prev) * -math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x.to(x_T.dtype)
