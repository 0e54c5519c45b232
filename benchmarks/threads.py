"""Thread settings under load: seconds per DDIM batch of the shipped prior, idle and beside a busy process.

For each OpenMP wait policy (ACTIVE: threads spin between parallel regions; PASSIVE: they sleep) and
each thread count, a fresh subprocess times ``--steps`` DDIM steps on ``--batch`` images (median of
``--repeats`` after a warm-up), first on the idle machine, then while one single-threaded busy
process runs beside it. Also prints what ``run.threads: 0`` (auto) chooses in both cases.

    python benchmarks/threads.py                # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, statistics, sys, time
import torch
from fastad.diffusion import load_prior
from fastad.diffusion.sampling import sample_prior
from fastad.utils.threads import choose_threads
threads, batch, steps, repeats, prior = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
n = choose_threads(threads)
torch.set_num_threads(n)
p = load_prior(prior)
g = torch.Generator().manual_seed(0)
sample_prior(p, batch, steps=2, generator=g, batch_size=batch)  # warm-up
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    sample_prior(p, batch, steps=steps, generator=g, batch_size=batch, clip_x0=True)
    times.append(time.perf_counter() - t0)
print(json.dumps({"threads": n, "median_s": statistics.median(times)}))
"""


def _busy() -> None:
    x = 0
    while True:  # one core's worth of pure-Python work
        x += 1


def _time(policy: str, threads: int, args) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": policy, "PYTHONPATH": str(REPO / "src")}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(args.batch), str(args.steps),
                          str(args.repeats), args.prior], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", default=str(REPO / "models" / "fmnist_prior_50k60k_6k"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for load in ("idle", "one busy process"):
        busy = None
        if load != "idle":
            busy = mp.Process(target=_busy, daemon=True)
            busy.start()
            time.sleep(2)
        try:
            for policy in ("ACTIVE", "PASSIVE"):
                for threads in (1, 2, 0):
                    r = _time(policy, threads, args)
                    rows.append((load, policy, "auto" if threads == 0 else str(threads), r["threads"], r["median_s"]))
                    print(f"{load:17s} {policy:8s} threads={rows[-1][2]:4s} (used {r['threads']}): "
                          f"{r['median_s']:.2f} s per batch", flush=True)
        finally:
            if busy is not None:
                busy.terminate()
    print(f"\n| load | OMP_WAIT_POLICY | run.threads | threads used | s per {args.batch} images x {args.steps} "
          "DDIM steps |\n|---|---|---|---|---|")
    for load, policy, t, used, s in rows:
        print(f"| {load} | {policy} | {t} | {used} | {s:.2f} |")


if __name__ == "__main__":
    main()
