"""One round's synthesis: target labels -> conditioning -> (guided) DDIM -> images in [-1, 1].

The conditioning hook: a provider turns the round's target labels into the prior's conditioning
and returns the ``eps_fn(x_t, t)`` the sampler and the guidance consume. Built in: ``none``
(unconditional prior) and ``class_labels`` (a class-conditional ``UNet2DModel``). A text-prompt
provider (per-class prompts encoded by a text encoder for a ``UNet2DConditionModel``) is one more
function with the same signature; neither the sampler nor the guidance changes.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from fastad.diffusion import ddim_sample, ddim_timesteps
from fastad.diffusion.prior import Prior
from fastad.errors import UserError
from fastad.guidance import CADRConfig, GuidanceStats, make_cadr_eps_fn

EpsFn = Callable[[Tensor, Tensor], Tensor]
ConditioningProvider = Callable[[Prior, Tensor], EpsFn]


def unconditional(prior: Prior, labels: Tensor) -> EpsFn:
    """The prior ignores the labels; only the guidance sees them."""
    return prior.bind(None)


def class_labels(prior: Prior, labels: Tensor) -> EpsFn:
    """A class-conditional prior receives the round's target labels."""
    return prior.bind(labels)


PROVIDERS: dict[str, ConditioningProvider] = {"none": unconditional, "class_labels": class_labels}


def conditioning_provider(name: str, prior: Prior) -> ConditioningProvider:
    """Resolve ``distillation.conditioning`` ('auto' follows the prior) to a provider."""
    if name == "auto":
        name = "class_labels" if prior.conditional else "none"
    if name == "class_labels" and not prior.conditional:
        raise UserError(f"config key 'distillation.conditioning': got 'class_labels' but prior '{prior.path}' "
                        "is unconditional; use auto or none")
    if name == "none" and prior.conditional:
        raise UserError(f"config key 'distillation.conditioning': got 'none' but prior '{prior.path}' is "
                        "class-conditional; use auto or class_labels")
    return PROVIDERS[name]


def balanced_labels(n: int, num_classes: int, *, generator: torch.Generator) -> Tensor:
    """``[n]`` random target classes, balanced: every class appears floor(n/K) or ceil(n/K) times."""
    offset = int(torch.randint(num_classes, (1,), generator=generator))  # which classes get the remainder
    labels = (torch.arange(n) + offset) % num_classes
    return labels[torch.randperm(n, generator=generator)]


class Coverage:
    """Which of the teacher's classes the prior produces on its own (data-free: teacher and prior only).

    Counts the teacher's top-1 class on every unguided sample so far. A class whose share is below
    ``threshold / K`` is *uncovered*: the prior rarely makes anything the teacher calls that class.
    Before any count, every class counts as covered (the first round is unguided and measures).
    """

    def __init__(self, num_classes: int, threshold: float) -> None:
        self.counts = torch.zeros(num_classes, dtype=torch.long)
        self.threshold = threshold

    def update(self, predicted: Tensor) -> None:
        self.counts += torch.bincount(predicted.cpu(), minlength=len(self.counts))

    def uncovered(self) -> Tensor:
        """``[K]`` bool: classes to guide."""
        total = int(self.counts.sum())
        if total == 0:
            return torch.zeros(len(self.counts), dtype=torch.bool)
        return self.counts.double() / total < self.threshold / len(self.counts)

    def state_dict(self) -> dict:
        return {"counts": self.counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.counts = state["counts"].clone()


class Synthesizer:
    """Draws a batch of images for given labels with the configured guidance (``none`` = plain DDIM).

    Which images are guided: with ``guide_classes="all"`` the first ``guided_fraction`` of the batch
    (the rest are plain DDIM samples mixed into the buffer); with ``"uncovered"`` the targets of
    classes the prior does not produce on its own (:class:`Coverage`, measured by ``classify`` on
    the unguided samples), of which :meth:`plan_targets` puts ``guided_fraction`` in each batch.
    ``recurrence`` re-noises and redoes each guided step (time travel); unguided samples never pay for it.
    ``candidates`` > 1 draws that many guided samples per target and keeps the one the teacher gives the
    highest probability of the target (best-of-n, at n times the cost).
    ``inverter`` (a :class:`~fastad.baselines.deepinversion.DeepInversionSynthesizer`) draws the last
    ``inversion_fraction`` of the guided targets instead of the guided prior: pixels optimised against the
    teacher, for classes the prior's manifold may not hold at all. ``refiner`` (the same kind of object)
    continues from each guided prior sample instead of from noise: its pixels optimised a few steps more
    against the teacher.
    """

    def __init__(
        self, prior: Prior, teacher: nn.Module, *, guidance: str, cadr: CADRConfig, view: Callable[[Tensor], Tensor],
        num_steps: int, spacing: str, ddim_eta: float, clip_x0: bool, provider: ConditioningProvider,
        device: torch.device, student: nn.Module | None = None, recurrence: int = 0, guided_fraction: float = 1.0,
        guide_classes: str = "all", coverage_threshold: float = 0.5, num_classes: int = 0,
        classify: Callable[[Tensor], Tensor] | None = None, clip_x0_guided: bool | None = None,
        candidates: int = 1, inverter: Callable[..., Tensor] | None = None, inversion_fraction: float = 0.0,
        refiner: Callable[..., Tensor] | None = None,
    ) -> None:
        self.prior, self.teacher, self.guidance, self.cadr, self.view = prior, teacher, guidance, cadr, view
        self.provider, self.device, self.student = provider, device, student
        self.ddim_eta, self.clip_x0 = ddim_eta, clip_x0
        self.clip_x0_guided = clip_x0 if clip_x0_guided is None else clip_x0_guided
        self.recurrence, self.guided_fraction = recurrence, guided_fraction
        if guide_classes not in ("all", "uncovered"):
            raise UserError(f"guide_classes={guide_classes!r} is not allowed; choose all or uncovered")
        if guide_classes == "uncovered" and (classify is None or num_classes < 1):
            raise UserError("guide_classes='uncovered' needs classify (the teacher on images in [-1, 1]) and "
                            "num_classes")
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise UserError(f"candidates={candidates!r} is not allowed; it must be an integer >= 1")
        if candidates > 1 and classify is None:
            raise UserError("candidates > 1 needs classify (the teacher on images in [-1, 1])")
        self.classify, self.candidates = classify, candidates
        if not 0.0 <= inversion_fraction <= 1.0:
            raise UserError(f"inversion_fraction={inversion_fraction!r} is not allowed; it must be in [0, 1]")
        if inversion_fraction > 0 and inverter is None:
            raise UserError("inversion_fraction > 0 needs an inverter (DeepInversion)")
        self.inverter, self.inversion_fraction, self.refiner = inverter, inversion_fraction, refiner
        self.coverage = Coverage(num_classes, coverage_threshold) if guide_classes == "uncovered" else None
        self.timesteps = ddim_timesteps(prior.num_train_timesteps, num_steps, spacing=spacing)
        self.stats = GuidanceStats()

    def plan_targets(self, labels: Tensor, *, generator: torch.Generator) -> Tensor:
        """The round's targets. Routing by coverage: the first ``guided_fraction`` of the batch is aimed
        at the uncovered classes (balanced over them), the rest keep their balanced targets and stay
        plain DDIM samples of covered classes (the teacher labels every image through KD anyway)."""
        if self.coverage is None or self.guidance == "none":
            return labels
        uncovered = self.coverage.uncovered().nonzero().flatten()
        n = round(len(labels) * self.guided_fraction)
        if len(uncovered) == 0 or n == 0:
            return labels
        labels = labels.clone()
        labels[:n] = uncovered[balanced_labels(n, len(uncovered), generator=generator)].to(labels.device)
        return labels

    def _guided_mask(self, labels: Tensor) -> Tensor:
        if self.guidance == "none":
            return torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
        if self.coverage is not None:
            return self.coverage.uncovered().to(labels.device)[labels]
        mask = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
        mask[:round(len(labels) * self.guided_fraction)] = True
        return mask

    def __call__(self, labels: Tensor, *, generator: torch.Generator) -> Tensor:
        """``labels [B]`` -> images ``[B, C, H, W]`` in [-1, 1] (float32, on the run's device)."""
        x_T = torch.randn((len(labels), *self.prior.sample_shape), generator=generator).to(self.device)
        labels = labels.to(self.device)
        guided = self._guided_mask(labels)
        out = torch.empty_like(x_T)
        if guided.any():
            idx = guided.nonzero().flatten()
            k = round(len(idx) * self.inversion_fraction)
            prior_idx, inverted_idx = idx[:len(idx) - k], idx[len(idx) - k:]
            if len(prior_idx):
                images = self._guided(x_T[prior_idx], labels[prior_idx], generator)
                if self.refiner is not None:  # the refiner clamps its starting images itself
                    images = self.refiner(labels[prior_idx], generator=generator, init=images).to(out.device)
                out[prior_idx] = images
            if len(inverted_idx):
                out[inverted_idx] = self.inverter(labels[inverted_idx], generator=generator).to(out.device)
        if not guided.all():
            plain = ~guided
            eps_fn = self.provider(self.prior, labels[plain])
            images = ddim_sample(eps_fn, x_T[plain], self.prior.alphas_cumprod, self.timesteps,
                                 ddim_eta=self.ddim_eta, generator=generator, clip_x0=self.clip_x0).clamp(-1, 1)
            out[plain] = images
            if self.coverage is not None:
                with torch.no_grad():
                    self.coverage.update(self.classify(images).argmax(1))
        return out.clamp(-1, 1)

    def state_dict(self) -> dict:
        """What a resumed run needs (the coverage counts, when routing by coverage)."""
        return {} if self.coverage is None else {"coverage": self.coverage.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.coverage is not None and "coverage" in state:
            self.coverage.load_state_dict(state["coverage"])

    def _guided(self, x_T: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        n, B = self.candidates, len(labels)
        if n > 1:  # best-of-n: n - 1 more starting noises per target, drawn after the batch's own
            extra = torch.randn(((n - 1) * B, *x_T.shape[1:]), generator=generator).to(x_T.device)
            x_T, labels = torch.cat([x_T, extra]), labels.repeat(n)
        eps_fn = self.provider(self.prior, labels)
        with make_cadr_eps_fn(eps_fn, self.teacher, labels, self.prior.alphas_cumprod, self.cadr, view=self.view,
                              student=self.student, stats=self.stats, generator=generator) as guided:
            images = ddim_sample(guided, x_T, self.prior.alphas_cumprod, self.timesteps, ddim_eta=self.ddim_eta,
                                 generator=generator, clip_x0=self.clip_x0_guided,
                                 x0_fn=guided.correct_x0 if self.cadr.rule == "x0" else None,
                                 recurrence=self.recurrence, recur_if=guided.active)
        if n == 1:
            return images
        with torch.no_grad():
            p = self.classify(images.clamp(-1, 1)).float().softmax(1)
            p_target = p.gather(1, labels.view(-1, 1)).view(n, B)
        best = p_target.argmax(0)  # [B]: which candidate each target keeps
        return images.view(n, B, *images.shape[1:])[best, torch.arange(B, device=best.device)]
