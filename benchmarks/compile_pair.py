"""``distillation.compile`` against eager synthesis, in one process: each recipe's synthesizer built twice
(compile off and on), warmed up (the compiled one compiles the prior and the guidance's teacher then), and
the two timed in turns, so that the machine's drift between processes does not enter the ratio.

    python benchmarks/compile_pair.py --recipes cadr x0-routed-smooth --threads 2

Settings as ``benchmarks/synthesis_speed.py``: one round of ``--batch`` images on the prior that never saw
Fashion-MNIST classes 5-9 (so routing guides the classes it lacks), the config's sampler at ``--steps``.
docs/results.md ("Scale and speed on the CPU") quotes its figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from synthesis_speed import synthesis_call  # this folder's synthesis benchmark: one round as it builds it

HERE = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(HERE / "configs/fashion_mnist.yaml"))
    p.add_argument("--prior", default=str(HERE / "models/fmnist_prior_50k60k_classes0-4"))
    p.add_argument("--recipes", nargs="+", default=["cadr", "x0-routed-smooth"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="solver steps (the guided recipes step DDIM)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3, help="untimed calls of each (they compile and fill routing)")
    p.add_argument("--repeats", type=int, default=4, help="timed calls of each, in turns")
    args = p.parse_args(argv)
    args.set = [f"fast_ad.ddim_steps={args.steps}"]
    torch.set_num_threads(args.threads)
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {args.threads} threads, torch {torch.__version__}, "
          f"batch {args.batch}, {args.steps} steps, median of {args.repeats} calls in turns after {args.warmup}\n")
    print("| recipe | eager s per call | compiled s per call | speed-up | warm-up s, eager / compiled |")
    print("|---|---:|---:|---:|---:|")
    for recipe in args.recipes:
        calls = {name: synthesis_call(recipe, args, [f"distillation.compile={flag}"])[2]
                 for name, flag in (("eager", "false"), ("compiled", "true"))}
        warm = {}
        for name, call in calls.items():
            t0 = time.perf_counter()
            for _ in range(args.warmup):
                call()
            warm[name] = time.perf_counter() - t0
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, call in calls.items():
                t0 = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t0)
        e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
        print(f"| {recipe} | {e:.2f} | {c:.2f} | {e / c:.2f}x | {warm['eager']:.0f} / {warm['compiled']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
