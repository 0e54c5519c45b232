"""The guidance loss on a preview, shared by both guidance rules (docs/method.md, steps 3-5).

:class:`GuidanceLoss` runs the teacher once on ``view(x0_hat)`` (or on several noisy copies of it)
and returns the per-batch loss to differentiate plus its parts: the entropy ``H``, the gate ``lam``
(Eq. 5), the cross-entropy towards the targets, ``L_BN`` and the adversarial term. The rules differ
only in what they do with its gradient: :mod:`fastad.guidance.cadr` rectifies the noise (Eq. 8),
:mod:`fastad.guidance.preview` steps the preview itself.

Choice of reduction. ``L`` is reported with batch means (``L = L_BN + gamma * mean_i CE_i
[+ beta_adv * mean_i L_adv,i]``, DeepInversion's convention), but the gradient is taken of
``B * L = sum_i (gamma * CE_i [+ beta_adv * L_adv,i]) + B * L_BN``: the same direction, with the CE
and adversarial parts of sample i's gradient exactly those of its own terms, independent of the
batch size B (so ``xi`` means the same thing at any B). ``L_BN`` is a batch statistic: its
gradient on one sample scales as 1/B, and B * L_BN restores an O(1) per-sample share, so the
BN:CE balance of each sample's direction does not drift with B either.

:class:`FastADConfig` (the paper's ``fast_ad`` section) and :class:`GuidanceConfig` (the
``guidance`` section, beyond the paper) are owned here.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastad.diffusion.ddim import to_device
from fastad.errors import UserError
from fastad.guidance.bn_stats import BNStatsRecorder
from fastad.options import Section, option

__all__ = ["FastADConfig", "GuidanceConfig", "GuidanceLoss", "GuidanceStats", "cadr_gate", "entropy_nats",
           "normalize_grad", "pool_grad"]


@dataclass
class FastADConfig(Section):
    """The ``fast_ad`` section: the paper's keys (section 4.1 defaults), named as in its released config."""

    section = "fast_ad"
    lambda_max: float = option(1.5, "maximum rectification strength (Eq. 5)", ge=0)
    eta: float = option(0.1, "gradient scale of the rectification (Eq. 6); not DDIM's sampler.ddim_eta", ge=0)
    tau_ent: float = option(0.4, "entropy threshold of the gate, nats (CIFAR-100 0.4, ImageNet 0.6)", ge=0)
    k_sigmoid: float = option(10.0, "steepness of the gate's sigmoid (Eq. 5)", ge=0)
    ddim_steps: int = option(50, "sampling steps (of DDIM, or of sampler.solver)", ge=1)
    xi: float = option(1e-6, "stabiliser of the per-sample gradient norm (Eq. 6)", gt=0)
    gamma: float = option(1.0, "weight of the teacher's cross-entropy in the guidance loss", ge=0)
    T: int = option(1000, "training timesteps of the prior's noise schedule", ge=1)
    guidance: str = option("cadr", "'cadr' (the entropy gate of Eq. 5, the paper), 'fixed' (lam = lambda_max, no "
                           "gate) or 'none' (unguided DDIM; the teacher labels the images through KD)",
                           choices=("cadr", "fixed", "none"))
    grad_mode: str = option("tweedie", "guidance gradient: 'tweedie' (eps held constant) or 'full' (through the "
                            "UNet)", choices=("tweedie", "full"))
    beta_adv: float = option(0.0, "weight of the adversarial term L_adv = -KL(teacher || student) on the preview",
                             ge=0)


@dataclass
class GuidanceConfig(Section):
    """The ``guidance`` section: how the guidance gradient acts, beyond the paper (docs/method.md).

    The defaults are the paper's: the noise is rectified (Eq. 8) with the full ``L_BN`` term, from the
    raw gradient of a single teacher view.
    """

    section = "guidance"
    rule: str = option("eps", "how the gradient acts: 'eps' rectifies the noise (Eq. 8, the paper); 'x0' takes one "
                       "normalised gradient step on the preview per timestep and keeps the prior's eps",
                       choices=("eps", "x0"))
    x0_step: float = option(0.1, "rule 'x0': per-pixel RMS size of the step at gate 1 (prior space [-1, 1])", ge=0)
    bn_weight: float = option(1.0, "weight of the BatchNorm-statistics term L_BN in the guidance loss", ge=0)
    grad_pool: int = option(1, "average the gradient over k x k pixel blocks before it is used (a low-pass: "
                            "shape-level changes instead of pixel textures); 1 = off", ge=1)
    smooth_samples: int = option(1, "noisy copies of the preview the loss averages over (a randomised-smoothing "
                                 "teacher)", ge=1)
    smooth_sigma: float = option(0.0, "std of the Gaussian noise added to each copy (prior space [-1, 1]); 0 = off",
                                 ge=0)


def entropy_nats(z: Tensor) -> Tensor:
    """Entropy of ``softmax(z)`` per sample, in nats: logits ``[B, K]`` -> ``[B]``."""
    logp = F.log_softmax(z.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def cadr_gate(entropy: Tensor, cfg: FastADConfig) -> Tensor:
    """Gate (Eq. 5) per sample: ``lam = lambda_max * sigmoid(k_sigmoid * (H - tau_ent))``.

    ``entropy`` [B] in nats -> ``lam`` [B]. An unsure teacher (high H) gets strong rectification,
    a confident one little; ``lam = lambda_max / 2`` at ``H = tau_ent``. ``cfg.guidance == "fixed"``
    gives ``lambda_max`` for every sample.
    """
    if cfg.guidance == "fixed":
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
    """Per-step guidance statistics, appended by :meth:`GuidanceLoss.record` at each guided step.

    Each entry of :attr:`steps` has ``t`` (largest timestep of the batch), ``gate_mean`` (mean
    ``lam``), ``entropy_mean`` (nats), ``loss`` (``L``, batch-mean convention), ``ce`` (mean CE),
    ``l_bn``, ``l_adv`` (mean, 0 when off), ``nonfinite`` (samples left unguided),
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


class GuidanceLoss:
    """Steps 3-5 of the method on a preview, towards ``labels`` ``[B]``.

    Call it as ``loss(x0_hat) -> (B * L, parts)``, inside ``torch.enable_grad()`` when a gradient is
    wanted. It owns forward pre-hooks on the teacher's BatchNorm layers, registered once here and
    active only during its own teacher forward; :meth:`close` (or leaving a ``with`` block, or
    garbage collection) removes them.

    Args:
        teacher: frozen classifier in eval mode (checked by :meth:`check`; never modified).
        labels: ``[B]`` target classes.
        cfg, guidance: the ``fast_ad`` and ``guidance`` sections.
        view: prior space -> teacher input (:func:`fastad.data.make_view`).
        student: needed only when ``cfg.beta_adv > 0``; run in eval mode (mode restored).
        stats: a :class:`GuidanceStats` that :meth:`record` appends to.
        generator: source of the smoothing noise (``guidance.smooth_sigma > 0``); the default one when None.
    """

    def __init__(self, teacher: nn.Module, labels: Tensor, cfg: FastADConfig, guidance: GuidanceConfig, *,
                 view: Callable[[Tensor], Tensor], student: Optional[nn.Module] = None,
                 stats: Optional[GuidanceStats] = None, generator: Optional[torch.Generator] = None) -> None:
        if not isinstance(cfg, FastADConfig) or not isinstance(guidance, GuidanceConfig):
            raise UserError(f"cfg and guidance must be a FastADConfig and a GuidanceConfig, got "
                            f"{type(cfg).__name__} and {type(guidance).__name__}")
        if cfg.beta_adv > 0 and student is None:
            raise UserError(f"config key 'fast_ad.beta_adv': got {cfg.beta_adv} but no student was given "
                            "(student=...); or set it to 0")
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise UserError(f"labels must be a 1-D integer tensor [B], got {labels.dtype} {list(labels.shape)}")
        self.teacher, self.student, self.labels = teacher, student, labels.long()
        # Read once here, so that checking them against the teacher's classes never waits for the device.
        self._label_range = (int(labels.min()), int(labels.max())) if labels.numel() else (0, -1)
        self.cfg, self.guidance, self.view, self.stats, self.generator = cfg, guidance, view, stats, generator
        # L_BN's hooks, only when it counts: with bn_weight 0 its statistics would cost a third of the
        # teacher's forward and backward for a zero term (docs/results.md, "Scale and speed on the CPU").
        self.bn = BNStatsRecorder(teacher) if guidance.bn_weight > 0 else None
        # Hooks go away with this object even if close() is never called (the hooks reference the
        # recorder, not this object, so it can be collected).
        self._finalizer = weakref.finalize(self, self.bn.remove if self.bn is not None else _no_hooks)
        self._labels_checked = False

    def close(self) -> None:
        """Remove the BatchNorm hooks from the teacher (idempotent); the loss is unusable after."""
        self._finalizer()

    def __enter__(self) -> "GuidanceLoss":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self, x_t: Tensor, t: Tensor) -> None:
        """Refuse a closed loss, a batch that does not match the labels, or a teacher in training mode."""
        B = x_t.shape[0]
        if not self._finalizer.alive:
            raise RuntimeError("this guidance was closed")
        if x_t.ndim != 4 or self.labels.shape[0] != B:
            raise UserError(f"x_t {list(x_t.shape)} must be [B, C, H, W] with B = len(labels) = {self.labels.shape[0]}")
        if t.shape != (B,) or t.dtype != torch.long:
            raise UserError(f"t must be a LongTensor [B={B}], got {t.dtype} {list(t.shape)}")
        if self.teacher.training:
            raise UserError("the teacher is in training mode; call teacher.eval() (guidance never changes its mode)")

    def __call__(self, x0_hat: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``x0_hat`` [B, C, H, W] (prior space) -> ``(B * L, parts)``; see the module docstring."""
        cfg, B = self.cfg, x0_hat.shape[0]
        n, sigma = self.guidance.smooth_samples, self.guidance.smooth_sigma
        y = self.labels.to(x0_hat.device)
        # 3. One teacher forward on the view serves entropy, CE and the BN statistics. Smoothing: the forward
        #    sees n noisy copies (randomised smoothing, Cohen et al. 2019: the gradient of a noise-averaged
        #    classifier changes shapes rather than adding adversarial texture, Kaur et al. 2019).
        x_in = x0_hat.repeat(n, 1, 1, 1) if n > 1 else x0_hat
        if sigma > 0:
            g = self.generator
            noise = torch.randn(x_in.shape, generator=g, device=g.device if g is not None else x_in.device)
            x_in = x_in + sigma * to_device(noise, x_in.device).to(x_in.dtype)
        v = self.view(x_in)
        if self.bn is None:
            z_all = self.teacher(v.to(_param_dtype(self.teacher))).float()  # logits [n * B, K]
            l_bn = torch.zeros((), device=x0_hat.device)
        else:
            with self.bn.record():
                z_all = self.teacher(v.to(_param_dtype(self.teacher))).float()
                l_bn = self.bn.loss().to(x0_hat.device)
        # The smoothed classifier's log-probabilities (mean of the copies' probabilities) drive gate and stats.
        z = z_all if n == 1 else (F.softmax(z_all, 1).view(n, B, -1).mean(0) + 1e-12).log()
        if not self._labels_checked:
            if self._label_range[0] < 0 or self._label_range[1] >= z.shape[1]:
                raise UserError(f"labels must lie in [0, {z.shape[1]}) for this teacher")
            self._labels_checked = True
        H = entropy_nats(z.detach())  # [B], nats
        # 4. Gate (Eq. 5): lam [B], from how sure the teacher is.
        lam = cadr_gate(H, cfg)
        # 5. Guidance loss L = bn_weight * L_BN + gamma * CE(z, y) [+ beta_adv * L_adv], per-sample terms.
        bn_weight = self.guidance.bn_weight
        ce = F.cross_entropy(z_all, y.repeat(n), reduction="none").view(n, B).mean(0)  # [B], mean over copies
        per_sample = cfg.gamma * ce
        l_adv = torch.zeros(B, device=x0_hat.device)
        if cfg.beta_adv > 0:  # L_adv = -KL(T || S), per copy, then averaged
            l_adv = -_kl_teacher_student(z_all, self._student_logits(v)).view(n, B).mean(0)
            per_sample = per_sample + cfg.beta_adv * l_adv
        parts = {"z": z, "H": H, "lam": lam, "ce": ce, "l_bn": bn_weight * l_bn, "l_adv": l_adv,
                 "per_sample": per_sample}
        return per_sample.sum() + B * bn_weight * l_bn, parts

    def record(self, t: Tensor, parts: dict[str, Tensor], g: Tensor, ok: Tensor) -> None:
        """Append one step's statistics to ``stats`` (one device sync), if any."""
        if self.stats is None:
            return
        with torch.no_grad():
            g_norm = g.flatten(1).norm(dim=1)
            p, y = parts, self.labels.to(g.device)
            vals = torch.stack([
                p["lam"].mean(), p["H"].mean(), p["l_bn"].detach() + p["per_sample"].detach().mean(),
                p["ce"].detach().mean(), p["l_bn"].detach(), p["l_adv"].detach().mean(), (~ok).sum().float(),
                (p["z"].detach().argmax(1) == y).float().mean(), torch.where(ok, g_norm, torch.nan).nanmean(),
            ]).tolist()
        self.stats.add(int(t.max()), dict(zip(_STEP_KEYS, vals)))

    def _student_logits(self, v: Tensor) -> Tensor:
        # Eval mode so synthesis neither uses nor updates the student's BN batch statistics; restored after.
        s = self.student
        was_training = s.training
        s.eval()
        try:
            return s(v.to(_param_dtype(s))).float()
        finally:
            s.train(was_training)


def _no_hooks() -> None:
    """What closing a loss without BatchNorm hooks removes: nothing."""


def _param_dtype(m: nn.Module) -> torch.dtype:
    p = next(m.parameters(), None)
    return torch.float32 if p is None or not p.is_floating_point() else p.dtype


def _kl_teacher_student(z_t: Tensor, z_s: Tensor) -> Tensor:
    """``KL(softmax(z_t) || softmax(z_s))`` per sample: ``[B, K], [B, K] -> [B]``."""
    logp_t, logp_s = F.log_softmax(z_t, dim=1), F.log_softmax(z_s, dim=1)
    return (logp_t.exp() * (logp_t - logp_s)).sum(dim=1)
