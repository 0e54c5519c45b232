"""Soak: a long ``fastad distill`` keeps its memory flat (no per-round growth).

A tiny run (8x8 prior, resnet8, a 16-image buffer, one KD step per round, no evaluation, no TensorBoard)
goes 300 rounds in a child process; its peak resident memory (VmHWM) is read from /proc while it runs,
at round 10 and again near round 300, before the end-of-run saves. The buffer is full from round 4, so
any growth after round 10 is a leak: something kept per round (tensors, autograd graphs, logs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_reliability import distill_args, tiny  # noqa: F401  (the module-scoped fixture)

ROUNDS = 300
#: allowed growth of peak RSS between round 10 and round ~300 (a leak of 14 kB per round exceeds it)
MARGIN_KB = 4 * 1024


def _status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of ``pid`` in kB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc/<pid>/status (Linux)")
def test_long_distill_keeps_memory_flat(tiny, tmp_path):  # noqa: F811
    out = tmp_path / "soak"
    proc = subprocess.Popen([sys.executable, "-m", "fastad", *map(str, distill_args(tiny, out, ROUNDS))],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    rows, samples = out / "metrics.jsonl", {}  # round -> (VmRSS, VmHWM)
    deadline = time.time() + 300
    try:
        while proc.poll() is None and time.time() < deadline:
            try:
                done = rows.read_text().count("\n") if rows.is_file() else 0
                mem = _status(proc.pid)
            except (OSError, ValueError):  # the child exited between poll() and the read
                break
            if done >= 10 and done < ROUNDS:  # rounds before the end-of-run saves
                samples[done] = (mem["VmRSS"], mem["VmHWM"])
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.communicate()[1].decode()
    assert proc.returncode == 0, err
    seen = sorted(samples)
    assert seen and seen[0] <= 15 and seen[-1] >= ROUNDS - 20, f"rounds sampled: {seen[:3]} ... {seen[-3:]}"
    early, late = samples[seen[0]][1], samples[seen[-1]][1]
    growth = late - early
    assert growth <= MARGIN_KB, (f"peak RSS grew by {growth} kB between round {seen[0]} ({early} kB) and round "
                                 f"{seen[-1]} ({late} kB)")
