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

from fastad.diffusion import EpsFn, SamplerConfig
from fastad.diffusion.prior import Prior
from fastad.guidance.routing import Coverage, RoutingConfig, balanced_labels, ranked_assignment
from fastad.errors import UserError
from fastad.guidance import FastADConfig, GuidanceConfig, GuidanceStats, make_cadr_eps_fn, preview_guided_sample

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


class Synthesizer:
    """Draws a batch of images for given labels with the configured guidance (``none`` = plain DDIM).

    Which images are guided is the routing's choice (:mod:`fastad.guidance.routing`); with
    ``guide_classes: uncovered``, :class:`~fastad.guidance.routing.Coverage` counts ``classify`` (the
    teacher's logits on images in [-1, 1]) on the plain samples, and :meth:`plan_targets` aims
    ``guided_fraction`` of each batch at the classes they lack. Guided images follow
    ``guidance.rule``: ``eps`` (CADR's rectified noise in the plain sampler) or ``x0`` (steps on the
    preview, :func:`~fastad.guidance.preview_guided_sample`).
    """

    def __init__(
        self, prior: Prior, teacher: nn.Module, *, fast_ad: FastADConfig, guidance: GuidanceConfig,
        routing: RoutingConfig, sampler: SamplerConfig, view: Callable[[Tensor], Tensor],
        provider: ConditioningProvider, device: torch.device, student: nn.Module | None = None,
        classify: Callable[[Tensor], Tensor] | None = None, num_classes: int = 0,
    ) -> None:
        if sampler.solver != "ddim" and fast_ad.guidance != "none" and guidance.rule == "x0":
            raise UserError(f"config key 'sampler.solver': got {sampler.solver!r}; the x0 guidance rule "
                            "(guidance.rule) steps DDIM itself, so it needs 'ddim'")
        if routing.guide_classes == "uncovered" and (classify is None or num_classes < 1):
            raise UserError("routing.guide_classes 'uncovered' needs classify (the teacher on images in [-1, 1]) "
                            "and num_classes")
        self.prior, self.teacher, self.view, self.provider = prior, teacher, view, provider
        self.fast_ad, self.guidance, self.routing, self.sampler = fast_ad, guidance, routing, sampler
        self.device, self.student, self.classify = device, student, classify
        self.coverage = Coverage(num_classes) if routing.guide_classes == "uncovered" else None
        self.timesteps = sampler.timesteps(prior.num_train_timesteps, fast_ad.ddim_steps)
        self.stats = GuidanceStats()

    @property
    def guided(self) -> bool:
        """Whether any image is ever guided."""
        return self.fast_ad.guidance != "none"

    def plan_targets(self, labels: Tensor, *, generator: torch.Generator) -> Tensor:
        """The round's targets. Routing by coverage: the first ``guided_fraction`` of the batch is aimed
        at the uncovered classes (balanced over them); the rest keep their balanced targets, guided where
        the class is uncovered and plain DDIM samples where it is covered (the teacher labels every image
        through KD anyway). With 5 of 10 classes uncovered and a fraction of 0.5, about 3/4 are guided."""
        if self.coverage is None or not self.guided:
            return labels
        uncovered = self.coverage.uncovered().nonzero().flatten()
        n = round(len(labels) * self.routing.guided_fraction)
        if len(uncovered) == 0 or n == 0:
            return labels
        labels = labels.clone()
        labels[:n] = uncovered[balanced_labels(n, len(uncovered), generator=generator)].to(labels.device)
        return labels

    def guided_mask(self, labels: Tensor) -> Tensor:
        """``[B]`` bool: which of these targets are guided."""
        if not self.guided:
            return torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
        if self.coverage is not None:
            return self.coverage.uncovered().to(labels.device)[labels]
        mask = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
        mask[:round(len(labels) * self.routing.guided_fraction)] = True
        return mask

    def __call__(self, labels: Tensor, *, generator: torch.Generator) -> Tensor:
        """``labels [B]`` -> images ``[B, C, H, W]`` in [-1, 1] (float32, on the run's device)."""
        x_T = torch.randn((len(labels), *self.prior.sample_shape), generator=generator).to(self.device)
        labels = labels.to(self.device)
        guided = self.guided_mask(labels)
        out = torch.empty_like(x_T)
        if guided.any():
            idx = guided.nonzero().flatten()
            guided_images = self._guided(x_T[idx], labels[idx], generator)
            if isinstance(guided_images, tuple):  # EXPERIMENT routing.assign: the targets were permuted
                guided_images, labels[idx] = guided_images
            out[idx] = guided_images
        if not guided.all():
            plain = ~guided
            images = self.plain(x_T[plain], labels[plain], generator=generator)
            out[plain] = images
            if self.coverage is not None:
                with torch.no_grad():
                    self.coverage.update(self.classify(images).argmax(1))
        return out.clamp(-1, 1)

    def plain(self, x_T: Tensor, labels: Tensor, *, generator: torch.Generator) -> Tensor:
        """Unguided DDIM from ``x_T`` [B, C, H, W] (``labels`` [B] condition a class-conditional prior) -> images
        in [-1, 1]; ``generator`` serves the ``ddim_eta > 0`` noise."""
        return self.sampler.sample(self.provider(self.prior, labels), x_T, self.prior.alphas_cumprod, self.timesteps,
                                   generator=generator).clamp(-1, 1)

    def state_dict(self) -> dict:
        """What a resumed run needs (the coverage counts, when routing by coverage)."""
        return {} if self.coverage is None else {"coverage": self.coverage.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.coverage is not None and "coverage" in state:
            self.coverage.load_state_dict(state["coverage"])

    def _guided(self, x_T: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        s, abar = self.sampler, self.prior.alphas_cumprod
        eps_fn = self.provider(self.prior, labels)
        kw = {"view": self.view, "student": self.student, "stats": self.stats, "generator": generator}
        if self.guidance.rule == "x0":
            if self.routing.assign == "ranked":
                kw["assign"] = lambda x0: ranked_assignment(self.classify(x0.clamp(-1, 1)), labels)
            return preview_guided_sample(eps_fn, self.teacher, labels, x_T, abar, self.timesteps, self.fast_ad,
                                         self.guidance, ddim_eta=s.ddim_eta, final_abar=s.final_abar,
                                         clip_x0=s.clip_x0, assign_step=self.routing.assign_step, **kw)
        with make_cadr_eps_fn(eps_fn, self.teacher, labels, abar, self.fast_ad, guidance=self.guidance, **kw) as g:
            return s.sample(g, x_T, abar, self.timesteps, generator=generator)
