"""Knowledge distillation: the loss (Eq. 9) and one student step, shared by ``fastad distill`` and the
real-data reference (``fastad.baselines.real_kd``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["kd_loss", "kd_step"]


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float) -> Tensor:
    """``tau^2 * KL(softmax(T/tau) || softmax(S/tau))``, batch mean (Eq. 9): ``[B, K], [B, K] -> scalar``."""
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    log_p_t = F.log_softmax(teacher_logits / tau, dim=1)
    return tau * tau * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


def kd_step(student: nn.Module, teacher: nn.Module, x: Tensor, optimizer: torch.optim.Optimizer, *,
            tau: float) -> dict[str, float]:
    """One SGD step of ``student`` towards the frozen ``teacher`` on a batch ``x`` [B, C, H, W] of teacher inputs.

    The teacher runs under ``no_grad`` and its labels are never used. Returns ``{"kd_loss": value}``
    (reading it syncs the device, so a caller's timing is honest).
    """
    with torch.no_grad():
        t_logits = teacher(x)
    loss = kd_loss(student(x), t_logits, tau)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"kd_loss": loss.item()}
