"""Knowledge distillation: the loss (Eq. 9) and one student step, shared by ``fastad distill`` and the
real-data reference (``fastad.baselines.real_kd``)."""

from __future__ import annotations

import sys
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CompiledTeacher", "TeacherViewCache", "kd_loss", "kd_step"]


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


class TeacherViewCache:
    """The teacher's logits for each (buffer slot, crop/flip view) pair the KD steps have drawn, each computed once.

    The main job draws each of its 3,840 buffer images about 100 times, in one of 50 views (Fashion-MNIST's
    5 x 5 shifts x 2 flips), so running the teacher on every KD batch repeats most of its work. Here a round's
    KD batches are drawn first (or as many as ``DRAW_BYTES`` of images hold), the teacher runs once on the
    (image, view) pairs it has not seen, in batches of exactly ``batch_size`` (the last padded: a teacher
    compiled for the KD batch's shape is not compiled again), and the steps look the logits up: the student sees the same batches and views as with the teacher
    run live, and the same logits (bit for bit on the CPU, where a sample's logits do not depend on its
    batch-mates at a fixed batch shape; a GPU's kernels may round differently). Pairs are keyed by buffer
    slot, and a slot's pairs are forgotten when a new image is pushed into it. Memory: ``capacity * views *
    classes`` float32 on the CPU (the main job: 8 MB).
    """

    #: Larger caches are not built (the KD steps run the teacher live instead).
    MAX_BYTES = 1 << 30
    #: The KD batches drawn ahead of one teacher pass hold at most this many bytes of images (the main job's
    #: 50 batches of 128 28x28 images: 20 MB, a whole round).
    DRAW_BYTES = 256 << 20

    def __init__(self, capacity: int, views: int, num_classes: int) -> None:
        self.views = views
        self.known = torch.zeros(capacity, views, dtype=torch.bool)
        self.logits = torch.zeros(capacity, views, num_classes)

    @classmethod
    def nbytes(cls, capacity: int, views: int, num_classes: int) -> int:
        """The memory a cache of this size takes."""
        return capacity * views * (num_classes * 4 + 1)

    def forget(self, slots: Tensor) -> None:
        """New images in ``slots``: their views are unknown again."""
        self.known[slots] = False

    @torch.no_grad()
    def fill(self, teacher: nn.Module, x: Tensor, slots: Tensor, index: Tensor, *, batch_size: int,
             gather: Callable[[object], list] | None = None, rank: int = 0) -> None:
        """Run ``teacher`` on the rows of ``x`` [N, C, H, W] (teacher inputs) whose pair (``slots`` [N], ``index``
        [N], both int64 on the CPU) is not known yet, once per distinct pair.

        ``gather(obj)``: every rank's ``obj`` in rank order, for ranks with identical buffers (``rank``: this
        one's): each new pair then runs on the first rank that wants it, and every rank stores all of them.
        """
        new = (~self.known[slots, index]).nonzero()[:, 0]
        keys, inverse = torch.unique(slots[new] * self.views + index[new], return_inverse=True)
        rows = torch.empty(len(keys), dtype=torch.int64).scatter_(0, inverse, new)  # draws of a pair are equal
        gather = gather or (lambda obj: [obj])
        taken = torch.cat([torch.zeros(0, dtype=torch.int64), *gather(keys)[:rank]])
        own = ~torch.isin(keys, taken)
        x, out = x[rows[own].to(x.device)], [torch.zeros(0, self.logits.shape[-1])]
        for i in range(0, len(x), batch_size):
            chunk = x[i:i + batch_size]
            n = len(chunk)
            if n < batch_size:
                chunk = torch.cat([chunk, chunk.new_zeros((batch_size - n, *chunk.shape[1:]))])
            out.append(teacher(chunk)[:n].float().cpu())
        for k, logits in gather((keys[own], torch.cat(out))):
            s, v = k // self.views, k % self.views
            self.logits[s, v] = logits
            self.known[s, v] = True

    def lookup(self, slots: Tensor, index: Tensor) -> Tensor:
        """The logits ``[N, K]`` of known pairs."""
        return self.logits[slots, index]

    def state_dict(self) -> dict[str, Tensor]:
        return {"known": self.known.clone(), "logits": self.logits.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        known, logits = state["known"], state["logits"]
        if known.shape != self.known.shape or logits.shape != self.logits.shape or logits.dtype != torch.float32:
            raise ValueError(f"teacher view cache: {list(logits.shape)} does not fit {list(self.logits.shape)}")
        self.known, self.logits = known.clone(), logits.clone()
