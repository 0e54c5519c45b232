"""Data-parallel distillation on PyTorch's own engine: ``torchrun`` processes, DistributedDataParallel.

``torchrun --nproc_per_node=N -m fastad distill ...`` (or ``fastad distill --nproc N``, which launches
the same on one machine; several machines join through torchrun's own ``--nnodes``/``--rdzv-*`` flags)
runs N ranks. Each round, every rank synthesises its share of the round's images with its own
generator stream, and the shares are gathered so that every rank's replay buffer receives the whole
round: the buffers stay identical, so a rank's KD batch is a draw from the same data a single process
would hold, and resuming needs one buffer, not N. The student is wrapped in DistributedDataParallel
(gradients averaged over the ranks' batches); the teacher and the prior never are. Evaluation, logs,
grids and checkpoints happen on rank 0; ``last.pt`` holds every rank's random state, so a resume with
the same number of ranks continues exactly, and another number is refused. Backends: ``gloo`` on
CPU, ``nccl`` on CUDA.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from fastad.errors import UserError

__all__ = ["World", "all_any", "broadcast_object", "finish", "gather_cat", "gather_objects", "launch", "rank_seed",
           "setup", "teardown", "world_from_env"]


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates, logs and writes."""
        return self.rank == 0


def world_from_env() -> World:
    """The ranks torchrun started (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``), else one."""
    env = os.environ
    size = int(env.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(env["RANK"]), size, int(env.get("LOCAL_RANK", "0")), int(env.get("LOCAL_WORLD_SIZE", size)))


def setup(world: World, device: torch.device) -> torch.device:
    """Join the process group (``nccl`` on CUDA, ``gloo`` on CPU); returns this rank's device."""
    if world.size <= 1:
        return device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"{world.local_size} processes on this machine need one GPU each (nccl cannot share "
                            f"one between ranks); it has {torch.cuda.device_count()}: lower --nproc or "
                            "--nproc_per_node")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own generator stream (rank 0 keeps the run's seed)."""
    return seed + 104_729 * rank


def gather_cat(x: Tensor, world: World) -> Tensor:
    """Every rank's ``x`` (same shape on every rank), concatenated along dim 0 in rank order, on every rank."""
    if world.size <= 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world.size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def gather_objects(obj: object, world: World) -> list:
    """Every rank's picklable ``obj``, in rank order, on every rank."""
    if world.size <= 1:
        return [obj]
    out: list = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def all_any(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any: ranks take stop decisions together."""
    if world.size <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj: object, world: World) -> object:
    """Rank 0's ``obj`` on every rank."""
    if world.size <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def finish(world: World) -> None:
    """A successful run's end: every rank waits until rank 0 has written its outputs, so no rank leaves the group
    while another still needs it."""
    if world.size > 1:
        dist.barrier()


def teardown(world: World) -> None:
    """Leave the process group. Anything a reference cycle still keeps holding the group (a DDP wrapper's reducer)
    is collected first, so the group's worker threads are joined here and not while the interpreter exits (a
    rank that exited that way once aborted with "terminate called without an active exception")."""
    if world.size > 1 and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def launch(nproc: int, argv: list[str]) -> int:
    """``fastad distill --nproc N``: run ``argv`` (a fastad command line without ``--nproc``) as N ranks on this
    machine through torchrun (one thread per rank unless ``OMP_NUM_THREADS`` says otherwise)."""
    from torch.distributed.run import main as torchrun

    if nproc < 1:
        raise UserError(f"--nproc: got {nproc}; expected a number of processes >= 1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", "--module", "fastad", *argv])
    except Exception as e:  # torchrun's ChildFailedError: the ranks printed their own errors
        raise UserError(f"--nproc {nproc}: a rank failed ({type(e).__name__}); its error is above") from None
    return 0
