"""The benchmark scripts still run: the GPU throughput table at its tiny CPU scale, and scripts/gpu_check.sh on a
machine without a GPU (it says so and exits 0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: gpu_check.sh would run in full")
def test_gpu_check_says_no_gpu_and_exits_0():
    env = {**os.environ, "PY": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("no GPU")


def test_gpu_throughput_table_at_tiny_scale(tmp_path):
    script = str(ROOT / "benchmarks/gpu_throughput.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, script, "--device", "cpu", "--scale", "tiny", "--warmup", "0",
                          "--repeats", "1", "--json", str(tmp_path / "one.json")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    table = subprocess.run([sys.executable, script, "--table", str(tmp_path / "one.json"), str(tmp_path / "one.json"),
                            "--peaks", str(tmp_path / "one.json")], capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr[-2000:]
    rows = [line for line in table.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    names = [r.split("|")[1].strip() for r in rows]
    assert names == ["synthesis none", "synthesis cadr", "synthesis x0-routed-smooth", "KD step (batch 8)"]
    assert "2 process(es)" in table.stdout
    for r in rows:
        per_second = float(r.split("|")[3].split()[0])
        gflops = float(r.split("|")[4])
        assert per_second > 0 and gflops > 0
