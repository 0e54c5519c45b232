"""Knowledge distillation: the loss (Eq. 9) and one student step, shared by ``fastad distill`` and the
real-data reference (``fastad.baselines.real_kd``)."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CompiledTeacher", "kd_loss", "kd_step"]


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float) -> Tensor:
    """``tau^2 * KL(softmax(T/tau) || softmax(S/tau))``, batch mean (Eq. 9): ``[B, K], [B, K] -> scalar``."""
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    log_p_t = F.log_softmax(teacher_logits / tau, dim=1)
    return tau * tau * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


def kd_step(student: nn.Module, teacher: nn.Module | None, x: Tensor, optimizer: torch.optim.Optimizer, *,
            tau: float, teacher_logits: Tensor | None = None) -> dict[str, float]:
    """One SGD step of ``student`` towards the frozen ``teacher`` on a batch ``x`` [B, C, H, W] of teacher inputs.

    The teacher runs under ``no_grad`` and its labels are never used; ``teacher_logits`` [B, K]: its logits on
    ``x``, computed before (``teacher`` is then not run). Returns ``{"kd_loss": value}`` (reading it syncs the
    device, so a caller's timing is honest).
    """
    if teacher_logits is not None:
        t_logits = teacher_logits
    else:
        with torch.no_grad():
            t_logits = teacher(x)
    loss = kd_loss(student(x), t_logits, tau)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"kd_loss": loss.item()}


class CompiledTeacher(nn.Module):
    """A frozen teacher whose no-grad forward runs through ``torch.compile`` with its weights frozen (KD steps).

    Frozen weights let inductor fold BatchNorm into the convolutions, prepack them and fuse the ReLUs and
    residual adds: the Fashion-MNIST resnet20 at batch 128 ran 1.5x faster per forward, and the main job's KD
    step 1.07-1.15x, on 2 CPU threads after about 10 s of compiling (docs/results.md). One compile per input
    shape (``dynamic=False``): the KD step's batch never changes. Under autograd, or if compiling fails (no
    C++ compiler, an op inductor cannot take), it runs the eager teacher; a failure says so once on stderr.
    """

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher
        # Not a submodule: the compiled wrapper shares the teacher's parameters and is never saved.
        self.__dict__["_compiled"] = torch.compile(teacher, options={"freezing": True}, dynamic=False)
        self._proven = False  # the compiled forward has run once; later errors are real errors
        self.train(teacher.training)

    def forward(self, x: Tensor) -> Tensor:
        if self._compiled is None or torch.is_grad_enabled():
            return self.teacher(x)
        if self._proven:
            return self._compiled(x)
        try:
            out = self._compiled(x)
        except Exception as e:  # inductor's failures have many types; fall back rather than lose the run
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            print(f"fastad: warning: compiling the teacher for KD steps failed ({first}); it runs eagerly",
                  file=sys.stderr)
            self.__dict__["_compiled"] = None
            return self.teacher(x)
        self._proven = True
        return out
