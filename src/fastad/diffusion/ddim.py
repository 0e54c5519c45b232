"""DDIM sampling as pure functions over an ``eps_fn`` callable (Eq. 7; docs/method.md, step 9).

The sampler knows nothing of teachers, buffers or conditioning: guidance that rectifies the noise
(CADR) wraps ``eps_fn`` and returns a new one, and guidance that changes the loop has a sampler of
its own built from the same pieces (:func:`ddim_schedule`, :func:`ddim_preview`, :func:`ddim_move`).
:class:`SamplerConfig` is the ``sampler`` config section, owned here.

Agreement with diffusers' ``DDIMScheduler`` (tested in ``tests/test_ddim.py``):

- ``ddim_timesteps(T, n, spacing=s, steps_offset=o)`` equals ``DDIMScheduler(num_train_timesteps=T,
  timestep_spacing=s, steps_offset=o).set_timesteps(n)``.
- ``ddim_sample`` takes ``abar_prev`` from the *next timestep in the list* (and ``final_abar`` for the
  last step). diffusers instead uses ``t - T // n`` as the previous timestep whatever the spacing;
  both agree for "leading" always and for "trailing" when ``n`` divides ``T``. With "linspace" (or
  "trailing" with ``n`` not dividing ``T``) diffusers' ``abar_prev`` is not the ``abar`` of the step it
  runs next; we keep the chain consistent and deliberately differ there.
- ``final_abar="one"`` / ``"first"`` is diffusers' ``set_alpha_to_one=True`` / ``False``;
  ``clip_x0`` is ``clip_sample`` (diffusers defaults it to True, we default to False).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch
from torch import Tensor

from fastad.errors import UserError
from fastad.options import Section, option

__all__ = ["SPACINGS", "FINAL_ABARS", "SOLVER_NAMES", "EpsFn", "SamplerConfig", "ddim_timesteps", "ddim_schedule", "ddim_preview",
           "ddim_move", "ddim_step", "ddim_noise", "ddim_sample", "dpmpp_2m_sample", "to_device"]

SPACINGS = ("leading", "trailing", "linspace")
FINAL_ABARS = ("one", "first")
#: How each ``sampler.solver`` is named in progress bars and reports.
SOLVER_NAMES = {"ddim": "DDIM", "dpmpp-2m": "DPM-Solver++(2M)"}

#: ``eps_fn(x_t [B, C, H, W], t [B] long) -> eps [B, C, H, W]``
EpsFn = Callable[[Tensor, Tensor], Tensor]
Abar = Union[float, Tensor]


@dataclass
class SamplerConfig(Section):
    """The ``sampler`` section: how the solver walks the prior's schedule (the step count is ``fast_ad.ddim_steps``)."""

    section = "sampler"
    ddim_eta: float = option(0.0, "DDIM stochasticity (0 = deterministic DDIM); not the paper's fast_ad.eta", ge=0)
    spacing: str = option("leading", "timestep spacing, as diffusers' timestep_spacing",
                          choices=("leading", "trailing", "linspace"))
    clip_x0: bool = option(False, "clamp the preview x0_hat to [-1, 1] in the update (diffusers' clip_sample)")
    final_abar: str = option("one", "abar of the last step's target: 'one' or 'first' = alphas_cumprod[0] "
                             "(diffusers' set_alpha_to_one true / false)", choices=("one", "first"))
    steps_offset: int = option(0, "added to every 'leading' timestep (diffusers' steps_offset)", ge=0)
    solver: str = option("ddim", "'ddim' (the paper's), or 'dpmpp-2m': DPM-Solver++(2M) (Lu et al. 2022), second "
                         "order at the same cost per step (deterministic; not with the x0 guidance rule); the "
                         "embedded default's", choices=tuple(SOLVER_NAMES))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.solver == "dpmpp-2m" and self.ddim_eta > 0:
            raise UserError(f"config key 'sampler.ddim_eta': got {self.ddim_eta}; solver 'dpmpp-2m' is "
                            "deterministic, so it needs 0")

    def timesteps(self, num_train_timesteps: int, num_steps: int) -> Tensor:
        """This sampler's descending timesteps (:func:`ddim_timesteps`)."""
        return ddim_timesteps(num_train_timesteps, num_steps, spacing=self.spacing, steps_offset=self.steps_offset)

    def sample(self, eps_fn: EpsFn, x_T: Tensor, alphas_cumprod: Tensor, timesteps: Tensor, *,
               generator: Optional[torch.Generator] = None, progress: bool = False) -> Tensor:
        """Run this sampler's solver (:func:`ddim_sample` or DPM-Solver++(2M)) with its settings."""
        if self.solver == "dpmpp-2m":
            return dpmpp_2m_sample(eps_fn, x_T, alphas_cumprod, timesteps, final_abar=self.final_abar,
                                   clip_x0=self.clip_x0, progress=progress)
        return ddim_sample(eps_fn, x_T, alphas_cumprod, timesteps, ddim_eta=self.ddim_eta, generator=generator,
                           final_abar=self.final_abar, clip_x0=self.clip_x0, progress=progress)


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"{name}={value!r} is not allowed; choose one of {', '.join(allowed)}")


def ddim_timesteps(
    num_train_timesteps: int, num_steps: int, *, spacing: str = "leading", steps_offset: int = 0
) -> Tensor:
    """The DDIM timesteps, descending, as diffusers' ``DDIMScheduler.set_timesteps`` makes them.

    With ``T = num_train_timesteps`` and ``n = num_steps``:

    - ``leading``: ``arange(n) * (T // n) + steps_offset`` (starts at 0, skips the noisiest ``t``).
    - ``trailing``: ``round(arange(T, 0, -T / n)) - 1`` (always starts at ``T - 1``).
    - ``linspace``: ``round(linspace(0, T - 1, n))``.

    Computed with numpy's float64 ``arange``/``linspace``/``round`` (half to even), the same float
    expressions diffusers rounds, so the integers agree bit for bit. ``steps_offset`` only applies
    to ``leading``, as in diffusers. For "trailing", float error makes diffusers' ``arange`` return
    ``n + 1`` entries for some ``n`` (e.g. 61 of 1000), the extra one being ``-1``; we return its
    first ``n``.

    Returns:
        LongTensor ``[num_steps]``, descending, on CPU.
    """
    T, n, offset = int(num_train_timesteps), int(num_steps), int(steps_offset)
    _choice("spacing", spacing, SPACINGS)
    if T < 1:
        raise UserError(f"num_train_timesteps={T} must be >= 1")
    if not 1 <= n <= T:
        raise UserError(f"num_steps={n} must be in [1, num_train_timesteps={T}]")
    if spacing == "leading":
        ts = np.arange(n, dtype=np.int64)[::-1] * (T // n) + offset
        if ts[0] >= T or ts[-1] < 0:
            raise UserError(f"steps_offset={offset} puts timesteps outside [0, {T}) with num_steps={n}")
    elif spacing == "trailing":
        ts = (np.round(np.arange(T, 0, -T / n)) - 1)[:n]
    else:
        ts = np.round(np.linspace(0, T - 1, n))[::-1]
    return torch.from_numpy(np.ascontiguousarray(ts).astype(np.int64))


def _coef(abar: Abar, ndim: int) -> Tensor:
    """``abar`` (float, 0-d or per-sample ``[B]``) as a float64 CPU tensor broadcastable to ``x``."""
    a = torch.as_tensor(abar, dtype=torch.float64).detach().cpu()
    if a.ndim == 1:
        a = a.reshape(-1, *([1] * (ndim - 1)))
    elif a.ndim != 0:
        raise UserError(f"abar has shape {tuple(a.shape)}; expected a scalar or one value per sample [B]")
    if not bool(((a > 0) & (a <= 1)).all()):
        raise UserError(f"abar={a.flatten().tolist()[:4]} must lie in (0, 1]")
    return a


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """``x`` on ``device``. A CPU tensor bound for a GPU goes through pinned memory without blocking, so the
    host does not wait for the queued GPU work (noise drawn from the run's CPU generator, per-sample
    coefficients); the copy is ordered before the kernels that read it."""
    if x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _on(coef: Tensor, x: Tensor) -> Tensor:
    """A float64 CPU coefficient in ``x``'s dtype, ready to multiply ``x``. A scalar stays on the CPU (torch reads
    it as a number), so a GPU sampling loop copies nothing to the device and never waits for it."""
    coef = coef.to(dtype=x.dtype)
    return coef if coef.ndim == 0 else to_device(coef, x.device)


def ddim_preview(x_t: Tensor, eps: Tensor, abar_t: Abar) -> Tensor:
    """Tweedie preview (Eq. 4): ``x0_hat = (x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t)``.

    ``x_t``, ``eps`` ``[B, C, H, W]``; ``abar_t`` a float, 0-d tensor or ``[B]`` (coefficients in
    float64). Returns ``x0_hat`` in the step dtype (float32, or float64 for a float64 ``x_t``).
    """
    dtype = torch.promote_types(x_t.dtype, torch.float32)  # never step in half precision
    x_t, eps = x_t.to(dtype), eps.to(dtype)
    a = _coef(abar_t, x_t.ndim)
    return (x_t - _on((1 - a).sqrt(), x_t) * eps) / _on(a.sqrt(), x_t)


def ddim_move(
    x0_hat: Tensor, eps: Tensor, abar_t: Abar, abar_prev: Abar, *, ddim_eta: float = 0.0,
    noise: Optional[Tensor] = None, clip_x0: bool = False,
) -> tuple[Tensor, Tensor]:
    """The DDIM update (Eq. 7) from a preview: ``(x_prev, x0_used)``.

    ``x0_used`` is ``x0_hat``, clamped to [-1, 1] when ``clip_x0`` (diffusers' ``clip_sample``; ``eps``
    is not re-derived from the clamped preview, as diffusers' ``use_clipped_model_output=False``).
    ``x_prev = sqrt(abar_prev) * x0_used + sqrt(1 - abar_prev - sigma^2) * eps + sigma * noise`` with
    ``sigma = ddim_eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev)``.
    ``noise`` (standard normal, ``[B, C, H, W]``) is required when ``ddim_eta > 0``.
    """
    if not (math.isfinite(ddim_eta) and ddim_eta >= 0):
        raise UserError(f"ddim_eta={ddim_eta!r} must be a finite number >= 0")
    if ddim_eta > 0 and noise is None:
        raise UserError(f"ddim_eta={ddim_eta} > 0 needs noise; pass noise=torch.randn_like(x_t)")
    dtype = torch.promote_types(x0_hat.dtype, torch.float32)
    x0_hat, eps = x0_hat.to(dtype), eps.to(dtype)
    abar_t, abar_prev = _coef(abar_t, x0_hat.ndim), _coef(abar_prev, x0_hat.ndim)

    if clip_x0:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
    sigma = torch.zeros_like(abar_prev)  # skip the formula at eta 0: it is 0/0 if abar_t == 1
    if ddim_eta > 0:
        sigma = ddim_eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).clamp(min=0).sqrt()
    x_prev = (_on(abar_prev.sqrt(), x0_hat) * x0_hat
              + _on((1 - abar_prev - sigma**2).clamp(min=0).sqrt(), x0_hat) * eps)
    if ddim_eta > 0:
        x_prev = x_prev + _on(sigma, x0_hat) * to_device(noise, x0_hat.device).to(dtype)
    return x_prev, x0_hat


def ddim_step(
    x_t: Tensor, eps: Tensor, abar_t: Abar, abar_prev: Abar, *, ddim_eta: float = 0.0,
    noise: Optional[Tensor] = None, clip_x0: bool = False,
) -> tuple[Tensor, Tensor]:
    """One DDIM update (Eq. 7) from ``t`` to the previous timestep: :func:`ddim_preview` then :func:`ddim_move`.

    Args:
        x_t: ``[B, C, H, W]`` current sample.
        eps: ``[B, C, H, W]`` predicted (possibly rectified) noise; cast to the step dtype.
        abar_t, abar_prev: ``alphas_cumprod`` at ``t`` and at the previous timestep; a float,
            a 0-d tensor or one value per sample ``[B]``. Coefficients are computed in float64.
        ddim_eta: 0 = deterministic DDIM, 1 = DDPM-like ancestral noise.
        noise: ``[B, C, H, W]`` standard normal draws; required when ``ddim_eta > 0``.
        clip_x0: clamp ``x0_hat`` to [-1, 1] before it is used (diffusers' ``clip_sample``).

    Returns:
        ``(x_prev, x0_hat)``, both ``[B, C, H, W]`` in the step dtype (float32, or float64 when
        ``x_t`` is float64); ``x0_hat`` is the (clamped, if ``clip_x0``) preview that was used.
    """
    return ddim_move(ddim_preview(x_t, eps, abar_t), eps, abar_t, abar_prev, ddim_eta=ddim_eta, noise=noise,
                     clip_x0=clip_x0)


def ddim_schedule(alphas_cumprod: Tensor, timesteps: Tensor, *, final_abar: str = "one") -> Iterator[tuple[int, float, float]]:
    """Validate a schedule and yield ``(t, abar_t, abar_prev)`` per step, ``abar`` read in float64.

    Step ``i`` goes from ``t_i = timesteps[i]`` to ``timesteps[i + 1]``; the last step's ``abar_prev``
    is 1 (``final_abar="one"``) or ``alphas_cumprod[0]`` (``"first"``).
    """
    _choice("final_abar", final_abar, FINAL_ABARS)
    abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
    ts = torch.as_tensor(timesteps).detach().cpu()
    if abar.ndim != 1 or abar.numel() == 0:
        raise UserError(f"alphas_cumprod has shape {tuple(abar.shape)}; expected [num_train_timesteps]")
    if ts.ndim != 1 or ts.numel() == 0 or ts.is_floating_point():
        raise UserError(f"timesteps must be a non-empty 1-D integer tensor, got {ts.dtype} {tuple(ts.shape)}")
    if bool((ts[1:] >= ts[:-1]).any()) or int(ts.min()) < 0 or int(ts.max()) >= abar.numel():
        raise UserError(f"timesteps must be strictly descending within [0, {abar.numel()}), got {ts.tolist()}")
    final = 1.0 if final_abar == "one" else float(abar[0])
    steps = ts.tolist()
    for i, t in enumerate(steps):
        yield t, float(abar[t]), float(abar[steps[i + 1]]) if i + 1 < len(steps) else final


def ddim_noise(x_T: Tensor, ddim_eta: float, generator: Optional[torch.Generator]) -> Optional[Tensor]:
    """One step's ancestral noise: ``None`` at ``ddim_eta == 0``, else a draw shaped like ``x_T`` made on
    the generator's device (a CPU generator works for a GPU ``x_T``: drawn on CPU, then moved)."""
    if ddim_eta <= 0:
        return None
    if generator is None:
        raise UserError(f"ddim_eta={ddim_eta} > 0 needs an explicit torch.Generator (generator=...)")
    return torch.randn(x_T.shape, generator=generator, device=generator.device, dtype=x_T.dtype)


@torch.no_grad()
def ddim_sample(
    eps_fn: EpsFn,
    x_T: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    ddim_eta: float = 0.0,
    generator: Optional[torch.Generator] = None,
    final_abar: str = "one",
    clip_x0: bool = False,
    callback: Optional[Callable[[int, int, Tensor, Tensor], None]] = None,
    progress: bool = False,
) -> Tensor:
    """Run DDIM from ``x_T`` down the descending ``timesteps``; returns ``x_0``.

    Runs under ``torch.no_grad()`` (k-diffusion habit): an ``eps_fn`` that needs gradients (guidance)
    opens its own ``torch.enable_grad()``.

    Args:
        eps_fn: ``eps_fn(x_t [B, C, H, W] in x_T's dtype, t [B] long on x_T's device) -> eps``.
        x_T: ``[B, C, H, W]`` starting noise; the device and output dtype follow it.
        alphas_cumprod: ``[T]`` schedule (float64 recommended); read on CPU in float64.
        timesteps: ``[n]`` descending LongTensor, e.g. from :func:`ddim_timesteps`.
        ddim_eta: DDIM stochasticity (0 deterministic); each step then draws :func:`ddim_noise`
            from ``generator``, after calling ``eps_fn``.
        generator: source of the ``ddim_eta > 0`` noise.
        final_abar: ``"one"`` or ``"first"`` (diffusers' ``set_alpha_to_one`` True / False).
        clip_x0: clamp the preview to [-1, 1] (diffusers' ``clip_sample``).
        callback: ``callback(i, t, x_t, x0_hat)`` after each step, with ``x_t`` the sample the
            step started from and ``x0_hat`` its preview.
        progress: show a tqdm bar.

    Returns:
        ``[B, C, H, W]`` final sample in ``x_T``'s dtype.
    """
    schedule = list(ddim_schedule(alphas_cumprod, timesteps, final_abar=final_abar))
    if ddim_eta > 0 and generator is None:
        raise UserError(f"ddim_eta={ddim_eta} > 0 needs an explicit torch.Generator (generator=...)")
    B, device = x_T.shape[0], x_T.device
    x = x_T.to(torch.promote_types(x_T.dtype, torch.float32))  # running state in the step dtype
    if progress:
        from tqdm.auto import tqdm

        schedule = tqdm(schedule, desc=SOLVER_NAMES["ddim"])
    for i, (t, abar_t, abar_prev) in enumerate(schedule):
        eps = eps_fn(x.to(x_T.dtype), torch.full((B,), t, dtype=torch.long, device=device))
        x_prev, x0_hat = ddim_step(x, eps, abar_t, abar_prev, ddim_eta=ddim_eta,
                                   noise=ddim_noise(x_T, ddim_eta, generator), clip_x0=clip_x0)
        if callback is not None:
            callback(i, t, x, x0_hat)
        x = x_prev
    return x.to(x_T.dtype)


# --- DPM-Solver++(2M) ------------------------------------------------------------------------------
# DPM-Solver++(2M): the second-order multistep solver of Lu et al. (2022, "DPM-Solver++: Fast Solver for
# Guided Sampling of Diffusion Probabilistic Models", Algorithm 2), in data prediction, a pure function like
# :func:`~fastad.diffusion.ddim.ddim_sample`.
#
# With ``lambda = log(sqrt(abar) / sqrt(1 - abar))`` and ``h`` the step in ``lambda``, a first-order step is
# ``x_prev = sqrt((1 - abar_prev) / (1 - abar_t)) * x_t + sqrt(abar_prev) * (1 - exp(-h)) * d`` with ``d`` the
# preview ``x0_hat``: deterministic DDIM with ``eps`` re-derived from the (clamped) preview. The second-order
# step extrapolates the preview from the previous one, ``d = x0_hat + (x0_hat - x0_hat_prev) / (2 r)`` with
# ``r = h_prev / h`` (the "midpoint" form). The first step is first order; so is the last one, which ends at
# ``abar = 1`` (diffusers' ``lower_order_final`` and ``final_sigmas_type="zero"``). Agreement with diffusers'
# ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)`` is tested in
# ``tests/test_ddim.py``.


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

        schedule = tqdm(schedule, desc=SOLVER_NAMES["dpmpp-2m"])
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
