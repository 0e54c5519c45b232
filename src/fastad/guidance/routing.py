"""Routing: which of a round's targets are guided (the ``routing`` config section, owned here).

With ``guide_classes: all`` the first ``guided_fraction`` of each batch is guided and the rest are
plain DDIM samples. With ``uncovered``, guidance goes only to the classes the prior does not make on
its own, measured data-free by the teacher's predictions on the plain samples (:class:`Coverage`):
the first ``guided_fraction`` of each batch is re-aimed at them, and every target of an uncovered
class is guided, so the rest of the batch (balanced random targets) is guided where its target is
uncovered too (docs/method.md, "Beyond the paper").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fastad.options import Section, option

__all__ = ["COVERAGE_THRESHOLD", "Coverage", "RoutingConfig", "balanced_labels", "ranked_assignment"]

#: A class is uncovered when its share of the teacher's predictions on plain samples is below this / K.
COVERAGE_THRESHOLD = 0.5


@dataclass
class RoutingConfig(Section):
    """The ``routing`` section: which targets are guided (the paper guides every image)."""

    section = "routing"
    guide_classes: str = option("all", "which targets are guided: 'all' (guided_fraction of each batch) or "
                                "'uncovered': only classes the prior does not make on its own, measured by the "
                                "teacher's predictions on the unguided samples (data-free)",
                                choices=("all", "uncovered"))
    guided_fraction: float = option(1.0, "'all': share of each round's images that are guided, the rest plain "
                                    "DDIM samples; 'uncovered': share of each round's targets re-aimed at uncovered "
                                    "classes (all targets of uncovered classes are guided)", ge=0, le=1)
    assign: str = option("balanced", "EXPERIMENT: 'ranked' gives the guided targets (rule x0) to the samples the "
                         "teacher finds nearest to them on the plain preview after assign_step steps",
                         choices=("balanced", "ranked"))
    assign_step: int = option(0, "EXPERIMENT: plain DDIM steps before the ranked assignment and the guidance", ge=0)


def balanced_labels(n: int, num_classes: int, *, generator: torch.Generator) -> Tensor:
    """``[n]`` random target classes, balanced: every class appears floor(n/K) or ceil(n/K) times."""
    offset = int(torch.randint(num_classes, (1,), generator=generator))  # which classes get the remainder
    labels = (torch.arange(n) + offset) % num_classes
    return labels[torch.randperm(n, generator=generator)]


class Coverage:
    """Which of the teacher's classes the prior produces on its own (data-free: teacher and prior only).

    Counts the teacher's top-1 class on every unguided sample so far. A class whose share is below
    ``COVERAGE_THRESHOLD / K`` is *uncovered*: the prior rarely makes anything the teacher calls that
    class. Before any count, every class counts as covered (the first round is unguided and measures).
    """

    def __init__(self, num_classes: int) -> None:
        self.counts = torch.zeros(num_classes, dtype=torch.long)

    def update(self, predicted: Tensor) -> None:
        self.counts += torch.bincount(predicted.cpu(), minlength=len(self.counts))

    def uncovered(self) -> Tensor:
        """``[K]`` bool: classes to guide."""
        total = int(self.counts.sum())
        if total == 0:
            return torch.zeros(len(self.counts), dtype=torch.bool)
        return self.counts.double() / total < COVERAGE_THRESHOLD / len(self.counts)

    def state_dict(self) -> dict:
        return {"counts": self.counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.counts = state["counts"].clone()


def ranked_assignment(logits: Tensor, labels: Tensor) -> Tensor:
    """A permutation of ``labels`` [B] over the samples whose teacher ``logits`` [B, K] rank them: greedily, the
    (sample, class) pair of highest log-probability first, each class taken as often as ``labels`` holds it."""
    logp = logits.float().log_softmax(1).cpu()
    left = torch.bincount(labels.cpu(), minlength=logp.shape[1])
    out = torch.full_like(labels.cpu(), -1)
    order = logp.flatten().argsort(descending=True)
    for flat in order.tolist():
        i, k = divmod(flat, logp.shape[1])
        if out[i] < 0 and left[k] > 0:
            out[i], left[k] = k, left[k] - 1
    return out.to(labels.device)
