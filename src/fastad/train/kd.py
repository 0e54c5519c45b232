"""Knowledge distillation: the loss (Eq. 9) and one student step, shared by ``fastad distill`` and the
real-data reference (``fastad.baselines.real_kd``)."""

from __future__ import annotations

import sys

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

    def new_pairs(self, slots: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """The distinct pairs among (``slots`` [N], ``index`` [N], int64 on the CPU) not known yet, as keys
        ``slot * views + view`` [M], and for each the position of one draw of it [M]."""
        new = (~self.known[slots, index]).nonzero()[:, 0]
        keys, inverse = torch.unique(slots[new] * self.views + index[new], return_inverse=True)
        return keys, torch.empty(len(keys), dtype=torch.int64).scatter_(0, inverse, new)  # draws of a pair are equal

    @staticmethod
    @torch.no_grad()
    def run(teacher: nn.Module, x: Tensor, *, batch_size: int) -> Tensor:
        """``teacher`` on ``x`` [M, C, H, W] in batches of exactly ``batch_size`` (the last padded): [M, K] float32, CPU."""
        out = [torch.zeros(0)]
        for i in range(0, len(x), batch_size):
            chunk = x[i:i + batch_size]
            n = len(chunk)
            if n < batch_size:
                chunk = torch.cat([chunk, chunk.new_zeros((batch_size - n, *chunk.shape[1:]))])
            out.append(teacher(chunk)[:n].float().cpu())
        return torch.cat(out) if len(out) > 1 else out[0]

    def store(self, keys: Tensor, logits: Tensor) -> None:
        """Remember ``logits`` [M, K] for the pairs ``keys`` [M] (:meth:`new_pairs`' keys)."""
        s, v = keys // self.views, keys % self.views
        self.logits[s, v] = logits
        self.known[s, v] = True

    def fill(self, teacher: nn.Module, x: Tensor, slots: Tensor, index: Tensor, *, batch_size: int) -> None:
        """Run ``teacher`` on the rows of ``x`` [N, C, H, W] (teacher inputs) whose pair (``slots`` [N], ``index``
        [N], both int64 on the CPU) is not known yet, once per distinct pair."""
        keys, rows = self.new_pairs(slots, index)
        if len(keys):
            self.store(keys, self.run(teacher, x[rows.to(x.device)], batch_size=batch_size))

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
