"""DDIM sampler (docs/method.md, step 9): against diffusers' DDIMScheduler, against golden values, by
invariants, and the ``sampler`` config section."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler

from fastad.diffusion import (SamplerConfig, ddim_move, ddim_noise, ddim_preview, ddim_sample, ddim_schedule,
                              ddim_step, ddim_timesteps, dpmpp_2m_sample)
from fastad.errors import UserError

SCHEDULES = {
    "linear": dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
    "cosine": dict(beta_schedule="squaredcos_cap_v2"),
}
SHAPE = (2, 3, 8, 8)


def _scheduler(schedule: str = "linear", **kw) -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=1000, **SCHEDULES[schedule], **kw)


def _x_T() -> torch.Tensor:
    """A fixed 'noise' tensor from a formula (no RNG, so golden values survive torch upgrades)."""
    i = torch.arange(torch.Size(SHAPE).numel(), dtype=torch.float32).reshape(SHAPE)
    return torch.sin(1.7 * i) * 1.3 + 0.2 * torch.cos(0.3 * i)


def _eps_fn(abar: torch.Tensor):
    """A deterministic, non-linear stand-in for a UNet: the optimal eps for data ~ N(0, 0.5^2)
    plus a wiggle that depends on t and mixes channels. ``abar``: float32 [T]."""

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.long and t.shape == (x_t.shape[0],)
        a = abar[t].to(x_t.dtype).view(-1, 1, 1, 1)
        gauss = (1 - a).sqrt() * x_t / (a * 0.25 + 1 - a)
        wiggle = 0.1 * torch.sin(3 * x_t.roll(1, dims=1) + t.view(-1, 1, 1, 1) / 100)
        return gauss + wiggle

    return eps_fn


def _diffusers_loop(sched: DDIMScheduler, n: int, eta: float = 0.0, noises=None) -> torch.Tensor:
    sched.set_timesteps(n)
    eps_fn, x = _eps_fn(sched.alphas_cumprod), _x_T()
    for i, t in enumerate(sched.timesteps):
        eps = eps_fn(x, t.expand(x.shape[0]))
        kw = dict(variance_noise=noises[i]) if eta > 0 else {}
        x = sched.step(eps, t, x, eta=eta, **kw).prev_sample
    return x


# --- timesteps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 7, 10, 50, 61, 100, 1000])
def test_timesteps_match_diffusers(spacing: str, n: int) -> None:
    sched = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    sched.set_timesteps(n)
    ours = ddim_timesteps(1000, n, spacing=spacing)
    assert ours.dtype == torch.long and ours.shape == (n,)
    # diffusers' "trailing" returns n + 1 entries for some n (61 of 1000), the extra one -1.
    assert torch.equal(ours, sched.timesteps[:n])
    assert bool((ours[1:] < ours[:-1]).all())


def test_timesteps_steps_offset() -> None:
    for n in (10, 50):
        sched = DDIMScheduler(num_train_timesteps=1000, steps_offset=1)
        sched.set_timesteps(n)
        assert torch.equal(ddim_timesteps(1000, n, steps_offset=1), sched.timesteps)
    assert ddim_timesteps(1000, 10, steps_offset=1).tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]


def test_bad_options_name_the_option() -> None:
    with pytest.raises(UserError, match="spacing='uniform'.*leading, trailing, linspace"):
        ddim_timesteps(1000, 10, spacing="uniform")
    with pytest.raises(UserError, match="num_steps=0"):
        ddim_timesteps(1000, 0)
    with pytest.raises(UserError, match="num_steps=1001"):
        ddim_timesteps(1000, 1001)
    abar = _scheduler().alphas_cumprod.double()
    ts = ddim_timesteps(1000, 5)
    with pytest.raises(UserError, match="final_abar='zero'.*one, first"):
        ddim_sample(_eps_fn(abar), _x_T(), abar, ts, final_abar="zero")
    with pytest.raises(UserError, match="generator"):
        ddim_sample(_eps_fn(abar), _x_T(), abar, ts, ddim_eta=1.0)
    with pytest.raises(UserError, match="descending"):
        ddim_sample(_eps_fn(abar), _x_T(), abar, ts.flip(0))
    with pytest.raises(UserError, match="ddim_eta"):
        ddim_step(_x_T(), _x_T(), 0.5, 0.6, ddim_eta=-1.0)
    with pytest.raises(UserError, match="noise"):
        ddim_step(_x_T(), _x_T(), 0.5, 0.6, ddim_eta=1.0)


# --- against diffusers ---------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("n", [10, 50, 100])
@pytest.mark.parametrize("alpha_one,clip", [(True, False), (False, True)])
def test_trajectory_matches_diffusers(schedule: str, spacing: str, n: int, alpha_one: bool, clip: bool) -> None:
    sched = _scheduler(schedule, timestep_spacing=spacing, set_alpha_to_one=alpha_one, clip_sample=clip)
    ref = _diffusers_loop(sched, n)
    abar = sched.alphas_cumprod  # the same float32 numbers, so only the step arithmetic differs
    ours = ddim_sample(
        _eps_fn(abar), _x_T(), abar.double(), ddim_timesteps(1000, n, spacing=spacing),
        final_abar="one" if alpha_one else "first", clip_x0=clip,
    )
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alpha_one,clip", [(True, True), (False, False)])
def test_trajectory_matches_diffusers_other_pairs(alpha_one: bool, clip: bool) -> None:
    sched = _scheduler("linear", set_alpha_to_one=alpha_one, clip_sample=clip)
    ref = _diffusers_loop(sched, 50)
    abar = sched.alphas_cumprod
    ours = ddim_sample(_eps_fn(abar), _x_T(), abar.double(), ddim_timesteps(1000, 50),
                       final_abar="one" if alpha_one else "first", clip_x0=clip)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_steps_offset_trajectory_matches_diffusers() -> None:
    sched = _scheduler("linear", steps_offset=1, clip_sample=False)
    ref = _diffusers_loop(sched, 10)
    abar = sched.alphas_cumprod
    ours = ddim_sample(_eps_fn(abar), _x_T(), abar.double(), ddim_timesteps(1000, 10, steps_offset=1))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_stochastic_eta1_matches_diffusers_with_same_noise(spacing: str) -> None:
    n, seed = 20, 1234
    # Our documented draw order: one randn(x_T.shape, dtype=x_T.dtype) per step from the generator.
    g = torch.Generator().manual_seed(seed)
    noises = [torch.randn(SHAPE, generator=g) for _ in range(n)]
    sched = _scheduler("linear", timestep_spacing=spacing, clip_sample=False)
    ref = _diffusers_loop(sched, n, eta=1.0, noises=noises)
    abar = sched.alphas_cumprod
    ours = ddim_sample(_eps_fn(abar), _x_T(), abar.double(), ddim_timesteps(1000, n, spacing=spacing),
                       ddim_eta=1.0, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    deterministic = ddim_sample(_eps_fn(abar), _x_T(), abar.double(), ddim_timesteps(1000, n, spacing=spacing))
    assert (ours - deterministic).abs().max() > 0.1  # the noise did something


def test_linspace_diffusers_prev_timestep_is_not_the_next_step() -> None:
    """Why linspace is not compared trajectory-wise: diffusers' step() takes abar_prev at
    t - T // n, which for linspace is not the next timestep it runs (999 -> 899, then runs 888).
    We take abar_prev at the next timestep, which keeps the DDIM chain consistent."""
    ts = ddim_timesteps(1000, 10, spacing="linspace")
    assert ts[:2].tolist() == [999, 888]
    assert int(ts[0]) - 1000 // 10 != int(ts[1])


# --- golden values -------------------------------------------------------------------------------

# Computed once with this code (torch 2.13, CPU) and pasted:
#   abar = linear DDIMScheduler alphas_cumprod (float64); ddim_sample(_eps_fn(abar.float()), _x_T(),
#   abar, ddim_timesteps(1000, 10), final_abar="one"), printing out.flatten()[:6] and out.sum().
GOLDEN_FIRST = [0.09717584, 0.54983610, 0.00766872, -0.41566610, 0.35111600, 0.26963189]
GOLDEN_SUM = 7.71176863


def test_golden_values() -> None:
    abar = _scheduler().alphas_cumprod.double()
    out = ddim_sample(_eps_fn(abar.float()), _x_T(), abar, ddim_timesteps(1000, 10))
    torch.testing.assert_close(out.flatten()[:6], torch.tensor(GOLDEN_FIRST), rtol=1e-5, atol=1e-5)
    assert out.sum().item() == pytest.approx(GOLDEN_SUM, rel=1e-5, abs=1e-4)


# --- invariants ----------------------------------------------------------------------------------


def _true_noise_fn(x0: torch.Tensor, abar: torch.Tensor):
    """eps_fn that returns the exact noise of x_t around a known x0."""

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = abar[t].view(-1, 1, 1, 1).to(x_t.dtype)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    return eps_fn


def test_true_noise_recovers_x0_in_one_step() -> None:
    abar = _scheduler().alphas_cumprod.double()
    x0 = torch.linspace(-1, 1, torch.Size(SHAPE).numel()).reshape(SHAPE).double()
    noise = _x_T().double()
    t = 999
    x_T = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * noise
    out = ddim_sample(_true_noise_fn(x0, abar), x_T, abar, torch.tensor([t]))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-10)
    # Deterministic DDIM stays on the line through x0 for any number of steps.
    out = ddim_sample(_true_noise_fn(x0, abar), x_T, abar, ddim_timesteps(1000, 25, spacing="trailing"))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-10)


def test_step_shapes_dtypes_and_callback() -> None:
    abar = _scheduler().alphas_cumprod.double()
    seen: list[tuple[int, int]] = []
    x_T = _x_T().to(torch.bfloat16)
    got_dtypes = set()

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        got_dtypes.add(x_t.dtype)
        return _eps_fn(abar.float())(x_t.float(), t).to(torch.bfloat16)

    def cb(i: int, t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        assert x_t.dtype == torch.float32 and x0_hat.shape == SHAPE
        seen.append((i, t))

    out = ddim_sample(eps_fn, x_T, abar, ddim_timesteps(1000, 4), callback=cb, progress=True)
    assert out.dtype == torch.bfloat16 and out.shape == SHAPE
    assert got_dtypes == {torch.bfloat16}
    assert seen == [(0, 750), (1, 500), (2, 250), (3, 0)]
    # Per-sample abar: each sample steps with its own coefficients.
    x, eps = _x_T(), _x_T() * 0.5
    both, _ = ddim_step(x, eps, torch.tensor([0.3, 0.6]), torch.tensor([0.5, 0.8]))
    first, _ = ddim_step(x[:1], eps[:1], 0.3, 0.5)
    second, _ = ddim_step(x[1:], eps[1:], 0.6, 0.8)
    torch.testing.assert_close(both, torch.cat([first, second]))


def test_step_is_preview_then_move() -> None:
    """ddim_step == ddim_move(ddim_preview(...)), bit for bit, with and without noise and clamp, per-sample abar."""
    x, eps, noise = _x_T(), 0.7 * _x_T().roll(1, dims=1), torch.cos(_x_T())
    cases = [(0.5, 0.6, 0.0, False), (0.02, 0.3, 0.0, True), (0.5, 1.0, 1.0, True),
             (torch.tensor([0.3, 0.6]), torch.tensor([0.5, 0.8]), 0.5, False)]
    for abar_t, abar_prev, eta, clip in cases:
        kw = dict(ddim_eta=eta, noise=noise if eta > 0 else None, clip_x0=clip)
        x_prev, x0_used = ddim_step(x, eps, abar_t, abar_prev, **kw)
        moved, x0_moved = ddim_move(ddim_preview(x, eps, abar_t), eps, abar_t, abar_prev, **kw)
        assert torch.equal(x_prev, moved) and torch.equal(x0_used, x0_moved)
    # At abar_t 0.02 the preview leaves [-1, 1], so the clamp acted there.
    assert ddim_preview(x, eps, 0.02).abs().max() > 1
    assert ddim_step(x, eps, 0.02, 0.3, clip_x0=True)[1].abs().max() <= 1


def test_preview_is_tweedie_and_move_renoises() -> None:
    """The preview of x_t = sqrt(a) x0 + sqrt(1 - a) eps with the true eps is x0; ddim_move puts x0 back at
    the noise level abar_prev along the same eps, and the update keeps float64 for float64 input."""
    x0, eps = torch.linspace(-1, 1, 2 * 3 * 8 * 8, dtype=torch.float64).reshape(SHAPE), _x_T().double()
    a, a_prev = 0.3, 0.7
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    x0_hat = ddim_preview(x_t, eps, a)
    assert x0_hat.dtype == torch.float64
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-12)
    x_prev, _ = ddim_move(x0_hat, eps, a, a_prev)
    torch.testing.assert_close(x_prev, math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps, rtol=0, atol=1e-12)
    with pytest.raises(UserError, match="abar"):
        ddim_preview(x_t, eps, 0.0)
    with pytest.raises(UserError, match="abar"):
        ddim_move(x0_hat, eps, 0.5, 1.5)


def test_schedule_yields_each_steps_abars() -> None:
    abar = _scheduler().alphas_cumprod.double()
    ts = ddim_timesteps(1000, 4)
    for final, last in (("one", 1.0), ("first", float(abar[0]))):
        steps = list(ddim_schedule(abar, ts, final_abar=final))
        assert [s[0] for s in steps] == [750, 500, 250, 0]
        assert [s[1] for s in steps] == [float(abar[t]) for t in (750, 500, 250, 0)]
        assert [s[2] for s in steps] == [float(abar[t]) for t in (500, 250, 0)] + [last]
    with pytest.raises(UserError, match="descending"):
        list(ddim_schedule(abar, torch.tensor([500, 500])))
    with pytest.raises(UserError, match="integer"):
        list(ddim_schedule(abar, ts.double()))
    with pytest.raises(UserError, match="descending within"):
        list(ddim_schedule(abar, torch.tensor([1000, 0])))


def test_noise_draws_from_the_generator() -> None:
    x_T = _x_T()
    assert ddim_noise(x_T, 0.0, None) is None
    with pytest.raises(UserError, match="generator"):
        ddim_noise(x_T, 0.5, None)
    draw = ddim_noise(x_T, 0.5, torch.Generator().manual_seed(9))
    assert torch.equal(draw, torch.randn(SHAPE, generator=torch.Generator().manual_seed(9)))
    assert ddim_noise(x_T.double(), 1.0, torch.Generator().manual_seed(9)).dtype == torch.float64


# --- the ``sampler`` config section --------------------------------------------------------------


def test_sampler_config_defaults_and_timesteps() -> None:
    cfg = SamplerConfig()
    assert (cfg.ddim_eta, cfg.spacing, cfg.clip_x0, cfg.final_abar, cfg.steps_offset) == \
        (0.0, "leading", False, "one", 0)
    sched = DDIMScheduler(num_train_timesteps=1000, steps_offset=1)
    sched.set_timesteps(10)
    ours = SamplerConfig(steps_offset=1, spacing="leading").timesteps(1000, 10)
    assert ours.dtype == torch.long and torch.equal(ours, sched.timesteps)
    for spacing in ("trailing", "linspace"):
        sched = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
        sched.set_timesteps(50)
        assert torch.equal(SamplerConfig(spacing=spacing).timesteps(1000, 50), sched.timesteps)
    with pytest.raises(UserError, match="steps_offset=100"):
        SamplerConfig(steps_offset=100).timesteps(1000, 10)


@pytest.mark.parametrize("field,value", [
    ("spacing", "uniform"), ("spacing", None), ("ddim_eta", -1.0), ("ddim_eta", "x"), ("clip_x0", "yes"),
    ("clip_x0", 1), ("final_abar", "zero"), ("steps_offset", -1), ("steps_offset", 1.5),
    ("ddim_eta", float("nan")),
])
def test_bad_sampler_values_raise_user_error(field: str, value: object) -> None:
    with pytest.raises(UserError, match=f"config key 'sampler.{field}': got") as e:
        SamplerConfig(**{field: value})
    assert "\n" not in str(e.value)


# --- DPM-Solver++(2M) ------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [5, 10, 25])
def test_dpmpp_2m_matches_diffusers(schedule: str, spacing: str, n: int) -> None:
    from diffusers import DPMSolverMultistepScheduler

    
    sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, **SCHEDULES[schedule], algorithm_type="dpmsolver++",
                                        solver_order=2, timestep_spacing=spacing, final_sigmas_type="zero")
    sched.set_timesteps(n)
    abar = sched.alphas_cumprod
    eps_fn, x = _eps_fn(abar), _x_T()
    for t in sched.timesteps:
        x = sched.step(eps_fn(x, t.expand(x.shape[0])), t, x).prev_sample
    ours = dpmpp_2m_sample(_eps_fn(abar), _x_T(), abar.double(), sched.timesteps)
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


def test_dpmpp_2m_first_order_is_ddim_on_the_clamped_preview() -> None:
    """Two steps: the first is first order (DDIM with eps re-derived from the clamped preview), the last lands
    on the clamped preview itself."""
    
    abar = _scheduler().alphas_cumprod.double()
    ts = ddim_timesteps(1000, 2)
    eps_fn, x_T = _eps_fn(abar.float()), _x_T() * 3
    seen = []
    out = dpmpp_2m_sample(eps_fn, x_T, abar, ts, clip_x0=True, callback=lambda i, t, x, x0: seen.append((x, x0)))
    a0, a1 = float(abar[ts[0]]), float(abar[ts[1]])
    x0 = ddim_preview(x_T, eps_fn(x_T, ts[0].expand(2)), a0).clamp(-1, 1)
    x1 = a1 ** 0.5 * x0 + (1 - a1) ** 0.5 * (x_T - a0 ** 0.5 * x0) / (1 - a0) ** 0.5
    torch.testing.assert_close(seen[1][0], x1)
    assert bool((out.abs() <= 1).all()) and torch.equal(out, seen[1][1])
