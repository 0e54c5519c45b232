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


class Synthesizer:
    """Draws a batch of images for given labels with the configured guidance (``none`` = plain DDIM).

    ``guided_fraction`` < 1 leaves that share of each batch (its last images) unguided: plain DDIM
    samples mixed into the buffer beside the guided ones. ``recurrence`` re-noises and redoes each
    guided step (time travel); unguided samples never pay for it.
    """

    def __init__(
        self, prior: Prior, teacher: nn.Module, *, guidance: str, cadr: CADRConfig, view: Callable[[Tensor], Tensor],
        num_steps: int, spacing: str, ddim_eta: float, clip_x0: bool, provider: ConditioningProvider,
        device: torch.device, student: nn.Module | None = None, recurrence: int = 0, guided_fraction: float = 1.0,
    ) -> None:
        self.prior, self.teacher, self.guidance, self.cadr, self.view = prior, teacher, guidance, cadr, view
        self.provider, self.device, self.student = provider, device, student
        self.ddim_eta, self.clip_x0 = ddim_eta, clip_x0
        self.recurrence, self.guided_fraction = recurrence, guided_fraction
        self.timesteps = ddim_timesteps(prior.num_train_timesteps, num_steps, spacing=spacing)
        self.stats = GuidanceStats()

    def __call__(self, labels: Tensor, *, generator: torch.Generator) -> Tensor:
        """``labels [B]`` -> images ``[B, C, H, W]`` in [-1, 1] (float32, on the run's device)."""
        x_T = torch.randn((len(labels), *self.prior.sample_shape), generator=generator).to(self.device)
        labels = labels.to(self.device)
        n_guided = 0 if self.guidance == "none" else round(len(labels) * self.guided_fraction)
        parts = []
        if n_guided:
            parts.append(self._guided(x_T[:n_guided], labels[:n_guided], generator))
        if n_guided < len(labels):
            eps_fn = self.provider(self.prior, labels[n_guided:])
            parts.append(ddim_sample(eps_fn, x_T[n_guided:], self.prior.alphas_cumprod, self.timesteps,
                                     ddim_eta=self.ddim_eta, generator=generator, clip_x0=self.clip_x0))
        return torch.cat(parts).clamp(-1, 1)

    def _guided(self, x_T: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        eps_fn = self.provider(self.prior, labels)
        with make_cadr_eps_fn(eps_fn, self.teacher, labels, self.prior.alphas_cumprod, self.cadr, view=self.view,
                              student=self.student, stats=self.stats) as guided:
            return ddim_sample(guided, x_T, self.prior.alphas_cumprod, self.timesteps, ddim_eta=self.ddim_eta,
                               generator=generator, clip_x0=self.clip_x0,
                               x0_fn=guided.correct_x0 if self.cadr.rule == "x0" else None,
                               recurrence=self.recurrence, recur_if=guided.active)
