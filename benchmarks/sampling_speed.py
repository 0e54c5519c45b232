"""Unguided DDIM sampling speed of a prior, counted before timed (FLOPs, then seconds).

For each step count: images per second of ``sample_prior`` (batch ``--batch``, median of
``--repeats`` runs after one warm-up), the FLOPs that run needs (the prior's forward FLOPs per image,
counted once with ``torch.utils.flop_counter.FlopCounterMode``, times the steps), the achieved FLOP/s
and that as a fraction of this machine's float32 matmul rate, measured in the same run. Prints a
Markdown table.

    python benchmarks/sampling_speed.py --prior models/fmnist_prior_50k60k_6k --threads 2

FlopCounterMode counts matmuls and convolutions (2 FLOPs per multiply-add); normalisation,
activations and the DDIM arithmetic are not counted, so the efficiency figure is a lower bound.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone

import torch
from torch.utils.flop_counter import FlopCounterMode

from fastad.diffusion import load_prior
from fastad.diffusion.sampling import sample_prior


def forward_flops(prior, batch: int) -> float:
    """FLOPs of one eps forward per image: ``x_t [batch, C, H, W]`` -> eps, divided by ``batch``."""
    x = torch.randn(batch, *prior.sample_shape)
    t = torch.full((batch,), 500, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        prior.eps_fn(x, t)
    return counter.get_total_flops() / batch


def matmul_rate(n: int = 1024, repeats: int = 20) -> float:
    """This machine's float32 matmul rate, FLOP/s: median over ``repeats`` of an ``[n, n] @ [n, n]``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):  # warm-up (thread pool, caches)
        a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def time_sampling(prior, steps: int, batch: int, repeats: int) -> float:
    """Median seconds of one DDIM run of ``steps`` steps on ``batch`` images, after one warm-up run."""
    times = []
    for i in range(repeats + 1):
        gen = torch.Generator().manual_seed(i)
        t0 = time.perf_counter()
        # Clip the preview as the prior's scheduler config says, as `fastad sample` does by default.
        sample_prior(prior, batch, steps=steps, generator=gen, batch_size=batch,
                     clip_x0=bool(prior.scheduler_config.get("clip_sample", True)))
        if i:  # run 0 is the warm-up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prior", default="models/fmnist_prior_50k60k_6k", help="diffusers-format prior folder")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50], help="DDIM step counts")
    p.add_argument("--batch", type=int, default=64, help="images per sampling run")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per step count (median)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    prior = load_prior(args.prior)
    params = sum(p.numel() for p in prior.unet.parameters())
    flops = forward_flops(prior, args.batch)
    peak = matmul_rate()
    rows = []
    for steps in args.steps:
        sec = time_sampling(prior, steps, args.batch, args.repeats)
        achieved = flops * steps * args.batch / sec
        rows.append((steps, sec, args.batch / sec, flops * steps / 1e9, achieved / 1e9, achieved / peak))
    peak_after = matmul_rate()  # a second reading shows how much the shared machine drifted meanwhile

    c, h, w = prior.sample_shape
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"Prior `{args.prior}`: {params / 1e6:.2f}M parameters, {c}x{h}x{w}, forward "
          f"{flops / 1e9:.3f} GFLOPs per image (FlopCounterMode).  ")
    print(f"Machine: {cpu_name()}, {args.threads} torch threads, torch {torch.__version__}; float32 matmul "
          f"(1024^3) {peak / 1e9:.1f} GFLOP/s before, {peak_after / 1e9:.1f} after; load average {load}.  ")
    print(f"Batch {args.batch}, deterministic DDIM (eta 0, leading spacing, clip_sample as the scheduler config says), median of {args.repeats} runs after "
          f"a warm-up; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.\n")
    print("| DDIM steps | s per batch | images/s | GFLOPs per image | achieved GFLOP/s | of matmul rate |")
    print("|---:|---:|---:|---:|---:|---:|")
    for steps, sec, ips, gf, ach, frac in rows:
        print(f"| {steps} | {sec:.2f} | {ips:.1f} | {gf:.2f} | {ach:.1f} | {100 * frac:.0f}% |")


if __name__ == "__main__":
    main()
