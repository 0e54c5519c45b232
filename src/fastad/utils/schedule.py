"""Learning-rate multipliers shared by teacher training, distillation and the real-data KD reference."""

from __future__ import annotations

import math
from typing import Sequence


def lr_factor(schedule: str, step: int, total: int, milestones: Sequence[int], lr_decay: float) -> float:
    """Multiplier of the base lr at 0-based ``step``: 'cosine' over ``total`` steps, 'step' decays by
    ``lr_decay`` at each milestone reached, anything else ('constant') keeps 1."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / total))
    if schedule == "step":
        return lr_decay ** sum(step >= m for m in milestones)
    return 1.0


def budget_position(done: float, total: int, spent: float, budget: float | None) -> float:
    """Where an lr schedule over ``total`` steps stands after ``done`` of them: under a time ``budget``
    (seconds, None or <= 0 = none) the share of it ``spent`` times ``total``, if that is further, so the
    schedule ends with the budget (or with the steps, whichever comes first)."""
    if not budget or budget <= 0:
        return float(done)
    return max(float(done), min(spent / budget, 1.0) * total)
