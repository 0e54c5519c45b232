"""Teacher guidance of the diffusion prior: CADR (DESIGN.md section 2, steps 1-8).

    view = make_view(info.mean, info.std)
    with make_cadr_eps_fn(prior_eps_fn, teacher, labels, alphas_cumprod, CADRConfig(), view=view) as eps_fn:
        images = ddim_sample(eps_fn, x_T, alphas_cumprod, timesteps)
"""

from fastad.guidance.bn_stats import BNStatsRecorder, bn_stat_term
from fastad.guidance.cadr import (
    GATES,
    GRAD_MODES,
    RULES,
    CADRConfig,
    CADREpsFn,
    GuidanceStats,
    cadr_gate,
    entropy_nats,
    make_cadr_eps_fn,
    normalize_grad,
    pool_grad,
)
from fastad.guidance.view import make_view

__all__ = [
    "GATES",
    "GRAD_MODES",
    "RULES",
    "CADRConfig",
    "CADREpsFn",
    "GuidanceStats",
    "make_cadr_eps_fn",
    "make_view",
    "cadr_gate",
    "entropy_nats",
    "normalize_grad",
    "pool_grad",
    "BNStatsRecorder",
    "bn_stat_term",
]
