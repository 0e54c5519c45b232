"""Named distillation recipes: config overrides that change only the synthesis.

``METHOD_SETS`` are the bench's methods, ``SWEEP_SETS`` its one-lever sweep rows (docs/guidance.md
measures each). ``fastad bench`` runs them; ``fastad distill --recipe NAME`` applies one, on top of
:data:`BASE_RECIPE`, to any config.
"""

from __future__ import annotations

from fastad.errors import UserError

# Config overrides per distillation method: only the synthesis changes between them.
_DIFFUSION = ["distillation.synthesizer=diffusion"]
_X0 = [*_DIFFUSION, "fast_ad.guidance=fixed", "fast_ad.rule=x0", "fast_ad.lambda_max=1.0", "fast_ad.inner_steps=3",
       "fast_ad.x0_step=0.1"]
METHOD_SETS: dict[str, list[str]] = {
    "none": [*_DIFFUSION, "fast_ad.guidance=none"],
    # Unguided without the preview clamp: the baseline with the same clamp setting as cadr-routed.
    "none-noclip": [*_DIFFUSION, "fast_ad.guidance=none", "fast_ad.clip_x0=false"],
    "cadr": [*_DIFFUSION, "fast_ad.guidance=cadr", "fast_ad.grad_mode=tweedie"],
    "cadr-full": [*_DIFFUSION, "fast_ad.guidance=cadr", "fast_ad.grad_mode=full"],
    "fixed": [*_DIFFUSION, "fast_ad.guidance=fixed", "fast_ad.grad_mode=tweedie"],
    "deepinversion": ["distillation.synthesizer=deepinversion"],
    # Recipes beyond the paper (docs/guidance.md): gradient steps on the preview (rule x0).
    "x0": _X0,
    # The paper's CADR without the preview clamp, aimed only at classes the prior does not make
    # (fast_ad.guide_classes: uncovered) in half of each batch; the other half is plain DDIM.
    # eta 0.3 (the paper: 0.1) from single-seed out-of-domain pilots at 0.1 / 0.3 / 0.6 (docs/guidance.md).
    "cadr-routed": [*_DIFFUSION, "fast_ad.guidance=cadr", "fast_ad.clip_x0=false", "fast_ad.guide_classes=uncovered",
                    "fast_ad.guided_fraction=0.5", "fast_ad.eta=0.3"],
    # cadr-routed whose gradient is low-passed (4 x 4 block means) and taken on randomly shifted / flipped
    # views of the preview: guidance that changes shapes, not pixel textures. Chosen on held-out seeds
    # 10-14 (out of domain) before the bench's seeds ran (docs/guidance.md, "Pilots").
    "cadr-routed-lowpass": [*_DIFFUSION, "fast_ad.guidance=cadr", "fast_ad.clip_x0=false",
                            "fast_ad.guide_classes=uncovered", "fast_ad.guided_fraction=0.5", "fast_ad.eta=0.3",
                            "fast_ad.grad_pool=4", "fast_ad.view_augment=true"],
    # The x0 rule (clamp on, no BN term), routed, with the low-pass gradient and steps of RMS 0.3 per pixel:
    # the pilots' best overall out of domain (docs/guidance.md, "Pilots").
    "x0-routed-lowpass": [*_X0, "fast_ad.guide_classes=uncovered", "fast_ad.guided_fraction=0.5", "fast_ad.grad_pool=4",
                          "fast_ad.x0_step=0.3", "fast_ad.bn_weight=0"],
    # x0-routed-lowpass with one step per timestep on a randomised-smoothing teacher (its loss averaged over
    # 4 copies of the preview with N(0, 0.6^2) noise): the best of the session-4 pilots on seeds 10-14.
    "x0-routed-smooth": [*_X0, "fast_ad.guide_classes=uncovered", "fast_ad.guided_fraction=0.5", "fast_ad.grad_pool=4",
                         "fast_ad.x0_step=0.3", "fast_ad.bn_weight=0", "fast_ad.inner_steps=1",
                         "fast_ad.smooth_samples=4", "fast_ad.smooth_sigma=0.6"],
}
# One lever at a time, measured at equal images only (the sweep): the preview clamp, eta, routing,
# DDIM steps, the step-count strength scaling, recurrence, mixing, the t window, the BN weight and
# the adversarial term.
SWEEP_SETS: dict[str, list[str]] = {
    "cadr-noclip": [*METHOD_SETS["cadr"], "fast_ad.clip_x0=false"],
    "cadr-noclip-eta0.3": [*METHOD_SETS["cadr"], "fast_ad.clip_x0=false", "fast_ad.eta=0.3"],
    "cadr-routed-eta0.1": [*METHOD_SETS["cadr-routed"], "fast_ad.eta=0.1"],
    "cadr-25": [*METHOD_SETS["cadr"], "fast_ad.ddim_steps=25"],
    "cadr-50": [*METHOD_SETS["cadr"], "fast_ad.ddim_steps=50"],
    "cadr-50-scaled": [*METHOD_SETS["cadr"], "fast_ad.ddim_steps=50", "fast_ad.strength_ref_steps=10"],
    "x0-rec": [*_X0, "fast_ad.recurrence=1"],
    "x0-mix": [*_X0, "fast_ad.guided_fraction=0.5"],
    "x0-late": [*_X0, "fast_ad.t_window=[0.0,0.5]"],
    "x0-bn0": [*_X0, "fast_ad.bn_weight=0"],
    "x0-adv": [*_X0, "fast_ad.beta_adv=1.0"],
    # The two levers of cadr-routed-lowpass one at a time, and its gate replaced by the target gate.
    "routed-lowpass-noviews": [*METHOD_SETS["cadr-routed"], "fast_ad.grad_pool=4"],
    "routed-views": [*METHOD_SETS["cadr-routed"], "fast_ad.view_augment=true"],
    "routed-lowpass-target": [*METHOD_SETS["cadr-routed-lowpass"], "fast_ad.guidance=target"],
    # The smoothing lever alone: x0-routed-smooth without it, and cadr-routed-lowpass with it.
    "x0-routed-smooth-nonoise": [*METHOD_SETS["x0-routed-smooth"], "fast_ad.smooth_samples=1", "fast_ad.smooth_sigma=0"],
    "routed-lowpass-smooth": [*METHOD_SETS["cadr-routed-lowpass"], "fast_ad.smooth_samples=4", "fast_ad.smooth_sigma=0.6"],
}
ALL_SETS: dict[str, list[str]] = {**METHOD_SETS, **SWEEP_SETS}

# Every method starts from the paper's recipe, whatever the config's own choice (the embedded default
# ships a measured recipe): the methods and sweep rows change only what they name.
BASE_RECIPE = ["fast_ad.guidance=cadr", "fast_ad.eta=0.1", "fast_ad.clip_x0=true", "fast_ad.guide_classes=all",
               "fast_ad.guided_fraction=1.0"]


def recipe_overrides(name: str) -> list[str]:
    """``BASE_RECIPE`` then the recipe's own overrides (the user's ``--set`` goes after these)."""
    if name not in ALL_SETS:
        raise UserError(f"--recipe: got {name!r}; choose one of {', '.join(ALL_SETS)}")
    return [*BASE_RECIPE, *ALL_SETS[name]]
