"""CADR: Confidence-Aware Dynamic Rectification of a diffusion prior's noise prediction.

DESIGN.md section 2, steps 1-8. :func:`make_cadr_eps_fn` wraps an ``eps_fn(x_t, t)`` and returns a
new one whose output ``eps_tilde`` steers DDIM towards images the teacher assigns to ``labels``;
the sampler is untouched (k-diffusion / guided-diffusion habit):

    with make_cadr_eps_fn(eps_fn, teacher, labels, alphas_cumprod, cfg, view=view) as guided:
        x0 = ddim_sample(guided, x_T, alphas_cumprod, timesteps)

Choice of reduction. ``L`` is reported with batch means (``L = L_BN + gamma * mean_i CE_i
[+ beta_adv * mean_i L_adv,i]``, DeepInversion's convention), but the gradient is taken of
``B * L = sum_i (gamma * CE_i [+ beta_adv * L_adv,i]) + B * L_BN``: the same direction, with the CE
and adversarial parts of sample i's gradient exactly those of its own terms, independent of the
batch size B (so ``xi`` means the same thing at any B). ``L_BN`` is a batch statistic: its
gradient on one sample scales as 1/B, and B * L_BN restores an O(1) per-sample share, so the
BN:CE balance of each sample's direction does not drift with B either.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastad.errors import UserError
from fastad.guidance.bn_stats import BNStatsRecorder

__all__ = [
    "GRAD_MODES",
    "GATES",
    "RULES",
    "CADRConfig",
    "GuidanceStats",
    "CADREpsFn",
    "make_cadr_eps_fn",
    "cadr_gate",
    "entropy_nats",
    "normalize_grad",
    "pool_grad",
]

GRAD_MODES = ("tweedie", "full")
GATES = ("cadr", "fixed", "target")
RULES = ("eps", "x0")

#: ``eps_fn(x_t [B, C, H, W], t [B] long) -> eps [B, C, H, W]``
EpsFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class CADRConfig:
    """CADR hyperparameters; defaults are the paper's (section 4.1)."""

    lambda_max: float = 1.5  # maximum rectification strength (Eq. 5)
    eta: float = 0.1  # gradient scale of the rectification (Eq. 6); not DDIM's ddim_eta
    tau_ent: float = 0.4  # entropy threshold of the gate in nats (paper: CIFAR-100 0.4, ImageNet 0.6)
    k_sigmoid: float = 10.0  # steepness of the gate's sigmoid (Eq. 5)
    xi: float = 1e-6  # stabiliser of the per-sample gradient norm (Eq. 6)
    gamma: float = 1.0  # weight of the teacher's cross-entropy in the guidance loss
    beta_adv: float = 0.0  # weight of L_adv = -KL(teacher || student); > 0 needs a student
    grad_mode: str = "tweedie"  # "tweedie": eps held constant; "full": back-propagate through eps_fn too
    gate: str = "cadr"  # "cadr": entropy sigmoid gate (Eq. 5); "fixed": lam = lambda_max (ablation);
    # "target": lam = lambda_max * (1 - p_teacher(target)), strong where the teacher rejects the target
    # Variants beyond the paper (docs/guidance.md); the defaults reproduce the paper exactly.
    bn_weight: float = 1.0  # weight of L_BN in the guidance loss
    rule: str = "eps"  # "eps": rectify the noise (Eq. 8); "x0": step the preview itself, eps kept (MPGD-style)
    t_window: tuple[float, float] = (0.0, 1.0)  # guidance acts only where lo <= t / T <= hi
    inner_steps: int = 1  # rule "x0": gradient steps on the preview per timestep
    x0_step: float = 0.1  # rule "x0": per-pixel RMS size of one step at lam = 1 (prior space, [-1, 1])
    step_scale: float = 1.0  # multiplies eta / x0_step (e.g. ddim_steps / reference steps)
    grad_pool: int = 1  # > 1: average the gradient over grad_pool x grad_pool blocks (coarse, shape-level steps)
    smooth_samples: int = 1  # copies of the preview the loss averages over, each with its own view and noise
    smooth_sigma: float = 0.0  # std of Gaussian noise added to each copy (prior space): a randomised-smoothing teacher

    def __post_init__(self) -> None:
        for name, strict in (("lambda_max", False), ("eta", False), ("tau_ent", False), ("k_sigmoid", False),
                             ("xi", True), ("gamma", False), ("beta_adv", False), ("bn_weight", False),
                             ("x0_step", False), ("step_scale", True), ("smooth_sigma", False)):
            v = getattr(self, name)
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            if not ok or (v <= 0 if strict else v < 0):
                raise UserError(f"cadr.{name}={v!r} is not allowed; it must be a finite number "
                                f"{'> 0' if strict else '>= 0'}")
            setattr(self, name, float(v))
        for name, allowed in (("grad_mode", GRAD_MODES), ("gate", GATES), ("rule", RULES)):
            v = getattr(self, name)
            if v not in allowed:
                raise UserError(f"cadr.{name}={v!r} is not allowed; choose one of {', '.join(allowed)}")
        w = tuple(self.t_window)
        if len(w) != 2 or not all(isinstance(v, (int, float)) for v in w) or not 0.0 <= w[0] <= w[1] <= 1.0:
            raise UserError(f"cadr.t_window={list(w)!r} is not allowed; give [lo, hi] with 0 <= lo <= hi <= 1")
        self.t_window = (float(w[0]), float(w[1]))
        if isinstance(self.inner_steps, bool) or not isinstance(self.inner_steps, int) or self.inner_steps < 1:
            raise UserError(f"cadr.inner_steps={self.inner_steps!r} is not allowed; it must be an integer >= 1")
        if isinstance(self.grad_pool, bool) or not isinstance(self.grad_pool, int) or self.grad_pool < 1:
            raise UserError(f"cadr.grad_pool={self.grad_pool!r} is not allowed; it must be an integer >= 1")
        if isinstance(self.smooth_samples, bool) or not isinstance(self.smooth_samples, int) or self.smooth_samples < 1:
            raise UserError(f"cadr.smooth_samples={self.smooth_samples!r} is not allowed; it must be an integer >= 1")
        if self.rule == "eps" and self.inner_steps != 1:
            raise UserError(f"cadr.inner_steps={self.inner_steps} needs rule 'x0'; the paper's eps rule takes one "
                            "gradient per timestep (use recurrence for more)")
        if self.rule == "x0" and self.grad_mode == "full":
            raise UserError("cadr.grad_mode='full' applies to rule 'eps'; rule 'x0' differentiates at the preview "
                            "(use grad_mode tweedie)")


def entropy_nats(z: Tensor) -> Tensor:
    """Entropy of ``softmax(z)`` per sample, in nats: logits ``[B, K]`` -> ``[B]``."""
    logp = F.log_softmax(z.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def cadr_gate(entropy: Tensor, cfg: CADRConfig) -> Tensor:
    """Gate (Eq. 5) per sample: ``lam = lambda_max * sigmoid(k_sigmoid * (H - tau_ent))``.

    ``entropy`` [B] in nats -> ``lam`` [B]. An unsure teacher (high H) gets strong rectification,
    a confident one little; ``lam = lambda_max / 2`` at ``H = tau_ent``. ``cfg.gate == "fixed"``
    gives ``lambda_max`` for every sample.
    """
    if cfg.gate == "fixed":
        return torch.full_like(entropy, cfg.lambda_max)
    return cfg.lambda_max * torch.sigmoid(cfg.k_sigmoid * (entropy - cfg.tau_ent))


def pool_grad(g: Tensor, k: int) -> Tensor:
    """Low-pass a gradient ``[B, C, H, W]``: its mean over ``k x k`` blocks, upsampled back (bilinear).

    The teacher's pixel gradient is mostly high-frequency (adversarial texture); its block means
    say where the image should be brighter or darker, which changes shapes. ``k = 1``: unchanged.
    """
    if k <= 1:
        return g
    h, w = g.shape[-2:]
    coarse = F.adaptive_avg_pool2d(g, (max(1, h // k), max(1, w // k)))
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def normalize_grad(g: Tensor, xi: float) -> Tensor:
    """Adaptive normalisation (Eq. 6): ``g_hat = g / (||g||_2 + xi)``, norm per sample over C, H, W."""
    norm = g.flatten(1).norm(dim=1)
    return g / (norm + xi).view(-1, *([1] * (g.ndim - 1)))


_STEP_KEYS = ("gate_mean", "entropy_mean", "loss", "ce", "l_bn", "l_adv", "nonfinite", "preview_acc", "grad_norm")


@dataclass
class GuidanceStats:
    """Per-step guidance statistics, appended by a :class:`CADREpsFn` at each call.

    Each entry of :attr:`steps` has ``t`` (largest timestep of the batch), ``gate_mean`` (mean
    ``lam``), ``entropy_mean`` (nats), ``loss`` (``L``, batch-mean convention), ``ce`` (mean CE),
    ``l_bn``, ``l_adv`` (mean, 0 when off), ``nonfinite`` (samples left unrectified),
    ``preview_acc`` (teacher top-1 on ``view(x0_hat)`` vs ``labels``) and ``grad_norm`` (mean
    ``||g||`` over finite samples).
    """

    steps: list[dict[str, float]] = field(default_factory=list)

    def add(self, t: int, values: dict[str, float]) -> None:
        """Append one step's record."""
        self.steps.append({"t": int(t), **values})

    def summary(self) -> dict[str, float]:
        """Means over the recorded steps (``nonfinite``: total), plus the last step's accuracy and entropy."""
        n = len(self.steps)
        out: dict[str, float] = {"steps": n}
        if n == 0:
            return out
        for k in _STEP_KEYS:
            vals = [s[k] for s in self.steps]
            out[k] = float(sum(vals)) if k == "nonfinite" else float(sum(vals) / n)
        out["preview_acc_last"] = self.steps[-1]["preview_acc"]
        out["entropy_last"] = self.steps[-1]["entropy_mean"]
        return out

    def reset(self) -> None:
        """Forget all recorded steps."""
        self.steps.clear()


class CADREpsFn:
    """The rectified ``eps_fn`` made by :func:`make_cadr_eps_fn`.

    Call it as ``eps_fn(x_t, t)``. It owns forward pre-hooks on the teacher's BatchNorm layers,
    registered once here and active only during its own teacher forward; :meth:`close` (or leaving
    a ``with`` block, or garbage collection) removes them.
    """

    def __init__(self, eps_fn: EpsFn, teacher: nn.Module, labels: Tensor, alphas_cumprod: Tensor,
                 cfg: CADRConfig, *, view: Callable[[Tensor], Tensor], student: Optional[nn.Module] = None,
                 stats: Optional[GuidanceStats] = None, generator: Optional[torch.Generator] = None) -> None:
        if not isinstance(cfg, CADRConfig):
            raise UserError(f"cfg must be a CADRConfig, got {type(cfg).__name__}")
        if cfg.beta_adv > 0 and student is None:
            raise UserError(f"cadr.beta_adv={cfg.beta_adv} > 0 needs a student (student=...); or set beta_adv to 0")
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise UserError(f"labels must be a 1-D integer tensor [B], got {labels.dtype} {list(labels.shape)}")
        abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
        if abar.ndim != 1 or abar.numel() == 0 or not bool(((abar > 0) & (abar <= 1)).all()):
            raise UserError(f"alphas_cumprod must be a non-empty [T] tensor with values in (0, 1], "
                            f"got shape {list(abar.shape)}")
        self.eps_fn, self.teacher, self.student = eps_fn, teacher, student
        self.labels, self.abar, self.cfg, self.view, self.stats = labels.long(), abar, cfg, view, stats
        self.generator = generator  # source of the smoothing noise (the default generator when None)
        self.bn = BNStatsRecorder(teacher)
        # Hooks go away with this object even if close() is never called (the hooks reference the
        # recorder, not this wrapper, so the wrapper can be collected).
        self._finalizer = weakref.finalize(self, self.bn.remove)
        self._labels_checked = False

    def close(self) -> None:
        """Remove the BatchNorm hooks from the teacher (idempotent); the wrapper is unusable after."""
        self._finalizer()

    def __enter__(self) -> "CADREpsFn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, x_t: Tensor, t: Tensor) -> None:
        B = x_t.shape[0]
        if not self._finalizer.alive:
            raise RuntimeError("this CADR eps_fn was closed")
        if x_t.ndim != 4 or self.labels.shape[0] != B:
            raise UserError(f"x_t {list(x_t.shape)} must be [B, C, H, W] with B = len(labels) = {self.labels.shape[0]}")
        if t.shape != (B,) or t.dtype != torch.long:
            raise UserError(f"t must be a LongTensor [B={B}], got {t.dtype} {list(t.shape)}")
        if self.teacher.training:
            raise UserError("the teacher is in training mode; call teacher.eval() (guidance never changes its mode)")

    def active(self, t: int) -> bool:
        """Whether guidance acts at timestep ``t`` (``cfg.t_window`` as fractions of ``T``)."""
        lo, hi = self.cfg.t_window
        return lo <= t / len(self.abar) <= hi

    def _loss(self, x0_hat: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Steps 3-5 on the preview: ``(B * L, parts)``; see the module docstring for the reduction."""
        cfg, B = self.cfg, x0_hat.shape[0]
        n = cfg.smooth_samples
        # 3. One teacher forward on the view serves entropy, CE and the BN statistics. Smoothing: the forward
        #    sees n noisy copies (randomised smoothing, Cohen et al. 2019: the gradient of a noise-averaged
        #    classifier changes shapes rather than adding adversarial texture, Kaur et al. 2019).
        x_in = x0_hat.repeat(n, 1, 1, 1) if n > 1 else x0_hat
        if cfg.smooth_sigma > 0:
            g = self.generator
            noise = torch.randn(x_in.shape, generator=g, device=g.device if g is not None else x_in.device)
            x_in = x_in + cfg.smooth_sigma * noise.to(x_in.device, x_in.dtype)
        v = self.view(x_in)
        with self.bn.record():
            z_all = self.teacher(v.to(_param_dtype(self.teacher))).float()  # logits [n * B, K]
            l_bn = self.bn.loss().to(x0_hat.device)
        # The smoothed classifier's log-probabilities (mean of the copies' probabilities) drive gate and stats.
        z = z_all if n == 1 else (F.softmax(z_all, 1).view(n, B, -1).mean(0) + 1e-12).log()
        if not self._labels_checked:
            if bool(((y < 0) | (y >= z.shape[1])).any()):
                raise UserError(f"labels must lie in [0, {z.shape[1]}) for this teacher")
            self._labels_checked = True
        H = entropy_nats(z.detach())  # [B], nats
        # 4. Gate: lam [B]. Eq. 5 gates on how sure the teacher is, not on whether it sees the target (a
        #    confidently wrong class, low H, gets little push); "target" pushes by the distance from the target.
        if cfg.gate == "target":
            lam = cfg.lambda_max * (1 - F.softmax(z.detach(), dim=1).gather(1, y.view(-1, 1)).squeeze(1))
        else:
            lam = cadr_gate(H, cfg)
        # 5. Guidance loss L = bn_weight * L_BN + gamma * CE(z, y) [+ beta_adv * L_adv], per-sample terms.
        ce = F.cross_entropy(z_all, y.repeat(n), reduction="none").view(n, B).mean(0)  # [B], mean over copies
        per_sample = cfg.gamma * ce
        l_adv = torch.zeros(B, device=x0_hat.device)
        if cfg.beta_adv > 0:  # L_adv = -KL(T || S), per copy, then averaged
            l_adv = -_kl_teacher_student(z_all, self._student_logits(v)).view(n, B).mean(0)
            per_sample = per_sample + cfg.beta_adv * l_adv
        parts = {"z": z, "H": H, "lam": lam, "ce": ce, "l_bn": cfg.bn_weight * l_bn, "l_adv": l_adv,
                 "per_sample": per_sample}
        return per_sample.sum() + B * cfg.bn_weight * l_bn, parts

    def _record(self, t: Tensor, y: Tensor, parts: dict[str, Tensor], g: Tensor, ok: Tensor) -> None:
        if self.stats is None:
            return
        with torch.no_grad():
            g_norm = g.flatten(1).norm(dim=1)
            p = parts
            vals = torch.stack([
                p["lam"].mean(), p["H"].mean(), p["l_bn"].detach() + p["per_sample"].detach().mean(),
                p["ce"].detach().mean(), p["l_bn"].detach(), p["l_adv"].detach().mean(), (~ok).sum().float(),
                (p["z"].detach().argmax(1) == y).float().mean(), torch.where(ok, g_norm, torch.nan).nanmean(),
            ]).tolist()  # one device sync per step
        self.stats.add(int(t.max()), dict(zip(_STEP_KEYS, vals)))

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_t`` [B, C, H, W] (prior space), ``t`` [B] long -> ``eps_tilde`` [B, C, H, W] in eps's dtype.

        Works under ``torch.no_grad()`` (as ``ddim_sample`` calls it); not under ``inference_mode``.
        With rule ``x0``, or outside ``t_window``, this is the prior's plain ``eps``.
        """
        self._check(x_t, t)
        cfg, B, dev = self.cfg, x_t.shape[0], x_t.device
        if cfg.rule != "eps" or not self.active(int(t.max())):
            with torch.no_grad():
                return self.eps_fn(x_t, t)
        y = self.labels.to(dev)
        a = self.abar[t.detach().cpu()]  # abar_t per sample, float64
        sqrt_abar = a.sqrt().to(dev, torch.float32).view(B, 1, 1, 1)
        sqrt_1m_abar = (1 - a).sqrt().to(dev, torch.float32).view(B, 1, 1, 1)
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
                total, parts = self._loss(x0_hat, y)  # steps 3-5
                # 6. g = grad of L w.r.t. x_t (of B * L; see the module docstring). In "tweedie" mode eps
                #    is constant, so this is grad_{x0_hat} L / sqrt(abar_t). Only x_in is differentiated:
                #    no .grad lands on teacher or student parameters.
                (g,) = torch.autograd.grad(total, x_in)
                g = pool_grad(g.float(), cfg.grad_pool)
            # 7. Adaptive normalisation (Eq. 6): g_hat = g / (||g||_2 + xi); r = lam * eta * ||x_t||_2 * g_hat.
            g_hat = normalize_grad(g, cfg.xi)
            x_norm = x.detach().flatten(1).norm(dim=1)
            r = (parts["lam"] * cfg.eta * cfg.step_scale * x_norm).view(B, 1, 1, 1) * g_hat
            # A non-finite gradient (or gate) leaves that sample unrectified this step: never propagated.
            ok = torch.isfinite(r).flatten(1).all(dim=1)
            r = torch.where(ok.view(B, 1, 1, 1), r, torch.zeros_like(r))
            # 8. Rectification (Eq. 8): eps_tilde = eps + sqrt(1 - abar_t) * r. With "+", the corrected
            #    preview x0_hat - (1 - abar_t) / sqrt(abar_t) * r moves down L (the seed code's "-" climbs).
            eps = eps.detach()
            work = torch.promote_types(eps.dtype, torch.float32)
            eps_tilde = (eps.to(work) + sqrt_1m_abar.to(work) * r.to(work)).to(eps.dtype)
        self._record(t, y, parts, g, ok)
        return eps_tilde

    def correct_x0(self, x_t: Tensor, t: Tensor, x0_hat: Tensor) -> Tensor:
        """Rule ``x0`` (manifold-preserving, after MPGD): ``inner_steps`` normalised gradient steps on the
        preview itself, ``x0 <- x0 - lam * x0_step * step_scale * sqrt(D) * g_hat`` with ``g_hat`` the
        unit-norm gradient of L at ``x0``; the DDIM update then uses the corrected preview with the
        prior's own eps. The identity under rule ``eps`` or outside ``t_window``.
        """
        cfg, B, dev = self.cfg, x0_hat.shape[0], x0_hat.device
        if cfg.rule != "x0" or not self.active(int(t.max())):
            return x0_hat
        self._check(x_t, t)
        y = self.labels.to(dev)
        x0 = x0_hat.detach().float()
        size = cfg.x0_step * cfg.step_scale * math.sqrt(x0[0].numel())
        for _ in range(cfg.inner_steps):
            x_in = x0.requires_grad_(True)
            with torch.enable_grad(), torch.autocast(dev.type, enabled=False):
                total, parts = self._loss(x_in, y)
                (g,) = torch.autograd.grad(total, x_in)
            step = (parts["lam"] * size).view(B, 1, 1, 1) * normalize_grad(pool_grad(g.float(), cfg.grad_pool), cfg.xi)
            ok = torch.isfinite(step).flatten(1).all(dim=1)
            x0 = (x0.detach() - torch.where(ok.view(B, 1, 1, 1), step, torch.zeros_like(step))).detach()
            self._record(t, y, parts, g, ok)
        return x0.to(x0_hat.dtype)

    def _student_logits(self, v: Tensor) -> Tensor:
        # Eval mode so synthesis neither uses nor updates the student's BN batch statistics; restored after.
        s = self.student
        was_training = s.training
        s.eval()
        try:
            return s(v.to(_param_dtype(s))).float()
        finally:
            s.train(was_training)


def _param_dtype(m: nn.Module) -> torch.dtype:
    p = next(m.parameters(), None)
    return torch.float32 if p is None or not p.is_floating_point() else p.dtype


def _kl_teacher_student(z_t: Tensor, z_s: Tensor) -> Tensor:
    """``KL(softmax(z_t) || softmax(z_s))`` per sample: ``[B, K], [B, K] -> [B]``."""
    logp_t, logp_s = F.log_softmax(z_t, dim=1), F.log_softmax(z_s, dim=1)
    return (logp_t.exp() * (logp_t - logp_s)).sum(dim=1)


def make_cadr_eps_fn(eps_fn: EpsFn, teacher: nn.Module, labels: Tensor, alphas_cumprod: Tensor, cfg: CADRConfig,
                     *, view: Callable[[Tensor], Tensor], student: Optional[nn.Module] = None,
                     stats: Optional[GuidanceStats] = None, generator: Optional[torch.Generator] = None) -> CADREpsFn:
    """Wrap ``eps_fn`` with CADR guidance towards ``labels`` (DESIGN.md section 2, steps 1-8).

    Args:
        eps_fn: the prior, ``eps_fn(x_t [B, C, H, W], t [B] long) -> eps [B, C, H, W]``.
        teacher: frozen classifier in eval mode (checked at each call; never modified: its mode,
            parameters and ``.grad`` are left alone).
        labels: ``[B]`` target classes of the batch (one wrapper per synthesis batch).
        alphas_cumprod: ``[T]`` noise schedule of the prior (``abar``); read in float64.
        cfg: :class:`CADRConfig`.
        view: prior space -> teacher input, e.g. :func:`fastad.guidance.make_view`.
        student: needed only when ``cfg.beta_adv > 0``; run in eval mode (mode restored), its
            ``.grad`` untouched. Pass the bare module, not a DDP wrapper.
        stats: a :class:`GuidanceStats` to append each step's statistics to.
        generator: source of the smoothing noise (``cfg.smooth_sigma > 0``); the default generator when None.

    Returns:
        A :class:`CADREpsFn`: ``(x_t, t) -> eps_tilde``; use it as a context manager or call
        ``close()`` to remove its BatchNorm hooks.
    """
    return CADREpsFn(eps_fn, teacher, labels, alphas_cumprod, cfg, view=view, student=student, stats=stats,
                     generator=generator)
