"""Named synthesis recipes: complete specifications of how a run makes its images.

A recipe sets every key of :data:`SYNTHESIS_KEYS` (the guidance, its rule, the routing and the
sampler): the paper's values (the sections' defaults) with the recipe's own changes on top. So
``fastad distill --recipe NAME`` makes the same synthesis whatever the config says, and ``fastad
bench`` runs the same recipes by name. Keys that size a run or describe the data (``ddim_steps``,
``tau_ent``, ``T``, ``deepinversion.iterations``) stay with the config. docs/results.md measures
each recipe; docs/research/guidance.md records the ones that were tried and removed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from fastad.config.schema import Config
from fastad.errors import UserError

# Keys a recipe sets: section -> keys (None: the whole section).
_SYNTHESIS = {
    "distillation": ["synthesizer"],
    "fast_ad": ["lambda_max", "eta", "k_sigmoid", "xi", "gamma", "guidance", "grad_mode", "beta_adv"],
    "sampler": None,
    "guidance": None,
    "routing": None,
    "deepinversion": ["lr", "tv_l2", "l2"],
}


def _keys() -> list[str]:
    sections = {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]
    return [f"{sec}.{f.name}" for sec, names in _SYNTHESIS.items()
            for f in dataclasses.fields(sections[sec]) if names is None or f.name in names]


#: Every config key a recipe sets, as ``section.key``.
SYNTHESIS_KEYS: list[str] = _keys()

#: Recipe name -> its changes from the paper (the defaults of :data:`SYNTHESIS_KEYS`).
RECIPES: dict[str, dict[str, Any]] = {
    # Unguided sampling with DPM-Solver++(2M) and the preview clamp (the shipped priors' clip_sample); the
    # teacher labels the images through KD. The embedded default's recipe (docs/results.md: at 6 steps its
    # student beats 10 steps of DDIM).
    "none": {"fast_ad.guidance": "none", "sampler.clip_x0": True, "sampler.solver": "dpmpp-2m"},
    # Unguided DDIM as diffusers runs it by default: no clamp.
    "none-noclip": {"fast_ad.guidance": "none"},
    # The paper exactly (section 4.1): CADR, eps rule, Tweedie gradient.
    "cadr": {},
    # The paper with the gradient back-propagated through the UNet (its "full" mode).
    "cadr-full": {"fast_ad.grad_mode": "full"},
    # The paper without the confidence gate: lam = lambda_max for every sample.
    "fixed": {"fast_ad.guidance": "fixed"},
    # The baseline: pixels optimised from noise against the teacher (Yin et al. 2020); no prior.
    "deepinversion": {"distillation.synthesizer": "deepinversion"},
    # For a prior that lacks classes: guide only the classes it does not make (a quarter of each batch aimed at
    # them, plus the balanced targets that fall on them: about 5/8 of the images with half the classes lacking), one
    # normalised step of RMS 0.3 per pixel on the clamped preview per timestep, no BN term, the gradient
    # low-passed over 4 x 4 blocks and taken on a teacher smoothed over 4 copies with N(0, 0.6^2) noise.
    "x0-routed-smooth": {"fast_ad.guidance": "fixed", "fast_ad.lambda_max": 1.0, "sampler.clip_x0": True,
                         "guidance.rule": "x0", "guidance.x0_step": 0.3, "guidance.bn_weight": 0.0,
                         "guidance.grad_pool": 4, "guidance.smooth_samples": 4, "guidance.smooth_sigma": 0.6,
                         "routing.guide_classes": "uncovered", "routing.guided_fraction": 0.25},
}


def recipe_sets(name: str) -> list[str]:
    """The ``section.key=value`` overrides that set every synthesis key to recipe ``name``'s value."""
    if name not in RECIPES:
        raise UserError(f"--recipe: got {name[:80]!r}; choose one of {', '.join(RECIPES)}")
    paper = Config()
    values = {k: getattr(getattr(paper, k.split(".")[0]), k.split(".")[1]) for k in SYNTHESIS_KEYS}
    values.update(RECIPES[name])
    return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in values.items()]
