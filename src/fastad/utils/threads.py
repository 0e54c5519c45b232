"""How many CPU threads a run uses: as many as the machine has idle cores, never more.

Torch's default is one thread per core, whatever else runs. On a busy machine that oversubscribes
the cores: with one other busy process on 2 cores, DDIM with 2 threads ran 4.4x slower than with
1 (docs/results.md, "Threads"). :func:`available_cores` measures the idle cores over short windows
(``/proc/stat``) at the start of a run; ``run.threads: 0`` (auto) uses that many. OpenMP's passive
wait policy (set by :mod:`fastad.cli` before torch loads) makes idle threads sleep instead of spin.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch
from torch import Tensor

__all__ = ["available_cores", "choose_threads", "in_slices", "set_threads"]


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None where it cannot be read."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def available_cores(window: float = 0.2, samples: int = 3) -> int:
    """Cores this process may use (its CPU affinity) minus those other processes kept busy, in the least busy
    of ``samples`` consecutive windows of ``window`` seconds; at least 1. A process that is ending when a run
    starts (busy in the first window only) does not cost the run a thread for its whole length; one that
    stays busy counts in every window. Without /proc/stat, the affinity alone."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    before = _cpu_times()
    if before is None:
        return cores
    busy = float("inf")
    for _ in range(samples):
        time.sleep(window)
        after = _cpu_times()
        if after is None or after[1] <= before[1]:
            return cores
        busy = min(busy, (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or cores))
        before = after
    return max(1, min(cores, round(cores - busy)))


def choose_threads(n: int, *, share: int = 1) -> int:
    """``n > 0``: that many; 0 (auto): :func:`available_cores`, split among ``share`` processes of this machine."""
    return n if n > 0 else max(1, available_cores() // share)


def set_threads(n: int, *, share: int = 1) -> int:
    """Set torch's intra-op threads to :func:`choose_threads`; returns the number set."""
    threads = choose_threads(n, share=share)
    torch.set_num_threads(threads)
    return threads


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_IN_SLICE = threading.local()


def in_slices(fn: Callable[..., Tensor], *batch: Tensor) -> Tensor:
    """EXPERIMENT: ``fn(*batch)`` as two batch slices in two threads sharing torch's intra-op threads (no_grad, CPU)."""
    n = torch.get_num_threads()
    size = batch[0].shape[0] if batch and batch[0].ndim else 0
    if (n < 2 or size < 2 or torch.is_grad_enabled() or getattr(_IN_SLICE, "on", False)
            or any(t.device.type != "cpu" for t in batch)):
        return fn(*batch)
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(2, thread_name_prefix="fastad-slice")
    shares = (n // 2, n - n // 2)
    cut = round(size * shares[0] / n)
    inference = torch.is_inference_mode_enabled()

    def work(i: int) -> Tensor:
        torch.set_num_threads(shares[i])
        _IN_SLICE.on = True
        part = slice(0, cut) if i == 0 else slice(cut, size)
        with torch.inference_mode(inference), torch.no_grad():
            return fn(*(t[part] for t in batch))

    try:
        outs = list(_POOL.map(work, range(2)))
    finally:
        torch.set_num_threads(n)
    return torch.cat(outs)
