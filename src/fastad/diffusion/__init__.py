"""Diffusion priors and their samplers (DDIM, DPM-Solver++(2M))."""

from fastad.diffusion.ddim import (FINAL_ABARS, SPACINGS, EpsFn, SamplerConfig, ddim_move, ddim_noise, ddim_preview,
                                  ddim_sample, ddim_schedule, ddim_step, ddim_timesteps, dpmpp_2m_sample,
                                  to_device)
from fastad.diffusion.prior import BETA_SCHEDULES, PREDICTION_TYPES, Prior, build_unet, load_prior, save_prior

__all__ = [
    "BETA_SCHEDULES",
    "FINAL_ABARS",
    "PREDICTION_TYPES",
    "SPACINGS",
    "EpsFn",
    "Prior",
    "SamplerConfig",
    "build_unet",
    "ddim_move",
    "ddim_noise",
    "ddim_preview",
    "ddim_sample",
    "ddim_schedule",
    "ddim_step",
    "ddim_timesteps",
    "dpmpp_2m_sample",
    "load_prior",
    "save_prior",
    "to_device",
]
