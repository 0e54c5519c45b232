"""Teacher guidance of the diffusion prior (docs/method.md): the loss, and one module per rule.

    view = make_view(info.mean, info.std)
    with make_cadr_eps_fn(prior_eps_fn, teacher, labels, alphas_cumprod, FastADConfig(), view=view) as eps_fn:
        images = ddim_sample(eps_fn, x_T, alphas_cumprod, timesteps)          # rule 'eps' (the paper)
    images = preview_guided_sample(prior_eps_fn, teacher, labels, x_T, alphas_cumprod, timesteps,
                                   FastADConfig(), GuidanceConfig(rule="x0"), view=view)  # rule 'x0'
"""

from fastad.guidance.bn_stats import BNStatsRecorder, bn_stat_term
from fastad.guidance.cadr import CADREpsFn, make_cadr_eps_fn
from fastad.guidance.loss import (FastADConfig, GuidanceConfig, GuidanceLoss, GuidanceStats, cadr_gate,
                                  entropy_nats, normalize_grad, pool_grad)
from fastad.guidance.preview import preview_guided_sample, preview_step

__all__ = [
    "BNStatsRecorder",
    "CADREpsFn",
    "FastADConfig",
    "GuidanceConfig",
    "GuidanceLoss",
    "GuidanceStats",
    "bn_stat_term",
    "cadr_gate",
    "entropy_nats",
    "make_cadr_eps_fn",
    "normalize_grad",
    "pool_grad",
    "preview_guided_sample",
    "preview_step",
]
