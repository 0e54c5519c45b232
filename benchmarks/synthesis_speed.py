"""Synthesis speed by recipe, and where a synthesis call's time goes.

For each recipe: images per second of one round's synthesis (``Synthesizer`` on ``--batch``
balanced targets at the config's DDIM steps; median of ``--repeats`` calls after warm-up calls),
and the time split into the prior's forward passes, the teacher's forward passes, the guidance
gradient (``torch.autograd.grad``: the teacher's backward) and the rest (DDIM arithmetic, the
view, smoothing noise, bookkeeping). The split comes from separate, instrumented calls, so it
does not slow the images/s figure. Each recipe's achieved FLOP/s is given against this
machine's float32 and bfloat16 matmul rates, measured in the same run (with
``--set distillation.autocast=bf16`` the prior's and the teacher's convolutions run in bfloat16).

Routed recipes (``routing.guide_classes: uncovered``) need the classes the prior lacks, so every
recipe runs on ``--prior`` (default: the prior that never saw Fashion-MNIST classes 5-9); the
warm-up calls fill the routing's coverage counts, as a run's first rounds do.

    python benchmarks/synthesis_speed.py --threads 2
    PYTHONPATH=/path/to/other/checkout/src python benchmarks/synthesis_speed.py   # another version

Only public entry points are used (``load_config``, ``recipe_sets``, ``fastad.distill.build``), so
the same script times older and newer checkouts alike.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import fastad
from fastad.bench.flops import FlopCount, matmul_flops_per_second
from fastad.config import load_config
from fastad.config.recipes import recipe_sets
from fastad.distill import build
from fastad.guidance.routing import balanced_labels

HERE = Path(__file__).resolve().parent.parent


class Breakdown(contextlib.AbstractContextManager):
    """Seconds spent in the prior's forward, the teacher's forward and ``torch.autograd.grad``."""

    def __init__(self, prior: torch.nn.Module, teacher: torch.nn.Module) -> None:
        self.seconds = {"prior forward": 0.0, "teacher forward": 0.0, "teacher backward": 0.0}
        self._handles, self._start = [], {}
        for name, m in (("prior forward", prior), ("teacher forward", teacher)):
            self._handles.append(m.register_forward_pre_hook(self._pre(name)))
            self._handles.append(m.register_forward_hook(self._post(name)))
        self._grad = torch.autograd.grad

    def _pre(self, name):
        def hook(module, args):
            self._start[name] = time.perf_counter()
        return hook

    def _post(self, name):
        def hook(module, args, out):
            self.seconds[name] += time.perf_counter() - self._start.pop(name)
        return hook

    def __enter__(self) -> "Breakdown":
        def timed_grad(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return self._grad(*args, **kwargs)
            finally:
                self.seconds["teacher backward"] += time.perf_counter() - t0
        torch.autograd.grad = timed_grad
        return self

    def __exit__(self, *exc) -> None:
        torch.autograd.grad = self._grad
        for h in self._handles:
            h.remove()


def synthesis_call(recipe: str, args, extra_sets: list[str] = ()):
    """``(parts, gen, call)``: a run's parts for ``recipe`` on ``args.prior`` and a no-argument function that
    synthesises one round of ``args.batch`` balanced targets (``args.set`` then ``extra_sets`` on top)."""
    sets = [f"distillation.diffusion_checkpoint={args.prior}", f"distillation.synthesis_batch_size={args.batch}",
            "logging.progress=false", *recipe_sets(recipe), *args.set, *extra_sets]
    cfg = load_config(args.config, sets)
    gen = torch.Generator().manual_seed(0)
    parts = build(cfg, None, device=torch.device("cpu"), generator=gen)
    parts.student.eval()
    synth, k = parts.synthesizer, parts.spec.num_classes

    def call():
        synth(synth.plan_targets(balanced_labels(args.batch, k, generator=gen), generator=gen), generator=gen)
    return parts, gen, call


def measure(recipe: str, args) -> dict:
    parts, gen, call = synthesis_call(recipe, args)
    synth, k = parts.synthesizer, parts.spec.num_classes

    for _ in range(args.warmup):
        call()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    split_total, split = 0.0, None
    for _ in range(args.split_repeats):
        with Breakdown(parts.prior.unet, parts.teacher) as b:
            t0 = time.perf_counter()
            call()
            dt = time.perf_counter() - t0
        split_total += dt
        split = b.seconds if split is None else {n: split[n] + b.seconds[n] for n in split}
    with FlopCount() as counter:
        call()
    guided = int(synth.guided_mask(synth.plan_targets(balanced_labels(args.batch, k, generator=gen),
                                                      generator=gen)).sum()) if synth.guided else 0
    return {"recipe": recipe, "sec": sec, "ips": args.batch / sec, "flops": counter.total / args.batch,
            "guided": guided, "split": {n: v / split_total for n, v in split.items()}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(HERE / "configs/fashion_mnist.yaml"))
    p.add_argument("--prior", default=str(HERE / "models/fmnist_prior_50k60k_classes0-4"),
                   help="diffusers-format prior folder (default: the one that never saw classes 5-9)")
    p.add_argument("--recipes", nargs="+", default=["none", "cadr", "x0-routed-smooth"])
    p.add_argument("--batch", type=int, default=64, help="images per synthesis call (the main job's round)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (they also fill routing coverage)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per recipe (median)")
    p.add_argument("--split-repeats", type=int, default=1, help="instrumented calls for the time split")
    p.add_argument("--set", action="append", default=[], help="extra config override, section.key=value")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    peak = matmul_flops_per_second()
    peak_bf16 = matmul_flops_per_second(dtype=torch.bfloat16)
    rows = [measure(r, args) for r in args.recipes]
    peak_after = matmul_flops_per_second()
    try:
        commit = subprocess.run(["git", "-C", str(Path(fastad.__file__).parent), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        commit = "?"
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"fastad at {commit} ({Path(fastad.__file__).parent}); {cpu}, {args.threads} torch threads, torch "
          f"{torch.__version__}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average {load}.  ")
    print(f"float32 matmul (1024^3): {peak / 1e9:.1f} GFLOP/s before, {peak_after / 1e9:.1f} after; bfloat16 "
          f"{peak_bf16 / 1e9:.1f} GFLOP/s. Batch "
          f"{args.batch}, prior `{Path(args.prior).name}`, median of {args.repeats} calls after {args.warmup} "
          "warm-up calls.\n")
    names = list(rows[0]["split"])
    print("| recipe | guided of batch | s per call | images/s | GFLOPs per image | GFLOP/s | of matmul | "
          "of bf16 matmul | " + " | ".join(names) + " | rest |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(names) + 1))
    for r in rows:
        rate = r["flops"] * r["ips"]
        shares = [r["split"][n] for n in names]
        print(f"| {r['recipe']} | {r['guided']}/{args.batch} | {r['sec']:.2f} | {r['ips']:.1f} | "
              f"{r['flops'] / 1e9:.3f} | {rate / 1e9:.1f} | {100 * rate / peak:.0f}% | {100 * rate / peak_bf16:.0f}% | "
              + " | ".join(f"{100 * s:.0f}%" for s in shares) + f" | {100 * (1 - sum(shares)):.0f}% |")


if __name__ == "__main__":
    main()
