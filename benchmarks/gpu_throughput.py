"""Synthesis and KD throughput at CIFAR scale with random weights, against the device's matmul rates.

The ``cifar`` scale: a prior with the shape of the public 32x32 DDPM CIFAR-10 UNet (Ho et al. 2020, as
``google/ddpm-cifar10-32`` lays it out in diffusers: 35.7M parameters), a ``resnet34`` teacher, a
``resnet18`` student, batch 256 and 50 DDIM steps. Rows: synthesis images/s for each recipe in
float32 and with ``distillation.autocast: bf16`` (and one with ``distillation.compile``), the
student's KD steps/s, and each row's achieved FLOP/s (counted by ``FlopCount``) against this device's
measured float32 and bfloat16 matmul rates, all in one process. ``--json`` writes the rows for
``--table``, which prints one table per process count, summing the processes' rates (scripts/gpu_check.sh
runs it with 1 and 2 processes). The ``tiny`` scale is a seconds-long version of the same code for CPU tests.

    python benchmarks/gpu_throughput.py --device cuda
    python benchmarks/gpu_throughput.py --device cpu --scale tiny
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from fastad.bench.flops import FlopCount, matmul_flops_per_second
from fastad.config import load_config
from fastad.config.recipes import recipe_sets
from fastad.diffusion.prior import Prior
from fastad.distill import build
from fastad.guidance.routing import balanced_labels
from fastad.models import create_model
from fastad.train.kd import kd_step

# google/ddpm-cifar10-32's unet/config.json (diffusers), as keyword arguments of UNet2DModel.
DDPM_CIFAR10 = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
                    layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D",
                                                          "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), downsample_padding=0,
                    flip_sin_to_cos=False, freq_shift=1, norm_num_groups=32, norm_eps=1e-6, attention_head_dim=None)
SCALES = {
    "cifar": {"unet": DDPM_CIFAR10, "teacher": "resnet34", "student": "resnet18", "batch": 256, "steps": 50},
    "tiny": {"unet": dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 32),
                          layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8),
             "teacher": "resnet8", "student": "resnet8", "batch": 8, "steps": 2},
}
RECIPES = ("none", "cadr", "x0-routed-smooth")


def random_prior(scale: dict, device: torch.device) -> Prior:
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**scale["unet"]).to(device).eval().requires_grad_(False)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    c, s = scale["unet"]["in_channels"], scale["unet"]["sample_size"]
    return Prior(unet=unet, alphas_cumprod=torch.cumprod(1 - betas, 0), num_train_timesteps=1000,
                 sample_shape=(c, s, s), num_class_embeds=None, prediction_type="epsilon",
                 scheduler_config={"beta_schedule": "linear"}, path="random DDPM-CIFAR10-shaped UNet")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, *, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn()`` after ``warmup`` calls, the device synchronised around each."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def parts_for(scale: dict, sets: list[str], device: torch.device, teacher, student, prior):
    cfg = load_config(None, ["distillation.num_classes=10", "distillation.mean=[0.5,0.5,0.5]",
                             "distillation.std=[0.25,0.25,0.25]", f"fast_ad.ddim_steps={scale['steps']}",
                             f"distillation.synthesis_batch_size={scale['batch']}", "logging.progress=false",
                             *sets])
    return build(cfg, None, device=device, generator=torch.Generator().manual_seed(0), teacher=teacher,
                 student=student, prior=prior)


def rows_for(args):
    """Yield the table's rows as they are measured (so a run cut short still leaves the rows it finished)."""
    device, scale = torch.device(args.device), SCALES[args.scale]
    prior = random_prior(scale, device)
    teacher = create_model(scale["teacher"], num_classes=10, in_channels=3)
    student = create_model(scale["student"], num_classes=10, in_channels=3)
    batch = scale["batch"]
    variants = [("float32", [])]
    if device.type == "cuda":
        variants += [("bf16", ["distillation.autocast=bf16"]),
                     ("bf16 + compile", ["distillation.autocast=bf16", "distillation.compile=true"])]
    for recipe in RECIPES:
        flops = None  # counted once per recipe, in float32 and eager: precision and compiling do not change them
        for name, extra in variants:
            if name.endswith("compile") and (recipe != "none" or args.no_compile):
                continue  # compiling costs a minute per process; one row says whether it pays
            parts = parts_for(scale, [*recipe_sets(recipe), *extra], device, teacher, student, prior)
            synth, gen = parts.synthesizer, torch.Generator().manual_seed(0)

            def call(n: int = batch) -> None:
                labels = balanced_labels(n, 10, generator=gen)
                synth(synth.plan_targets(labels, generator=gen), generator=gen)

            sec = timed(call, device, warmup=args.warmup, repeats=args.repeats)
            if flops is None:  # after the timed calls: routing guides only the classes the samples so far miss
                n = min(batch, 20)  # every class twice
                with FlopCount() as fc:
                    call(n)
                flops = fc.total / n
            yield {"what": f"synthesis {recipe}", "precision": name, "per_second": batch / sec,
                   "unit": "images/s", "flops_per_item": flops}
    flops = None
    for name, extra in variants[:2]:
        parts = parts_for(scale, extra, device, teacher, student, prior)
        model = parts.student.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(batch, 3, scale["unet"]["sample_size"], scale["unet"]["sample_size"], device=device)

        def step() -> None:
            kd_step(model, parts.teacher, x, opt, tau=4.0)

        if flops is None:
            with FlopCount() as fc:
                step()
            flops = fc.total
        sec = timed(step, device, warmup=args.warmup, repeats=args.repeats)
        yield {"what": f"KD step (batch {batch})", "precision": name, "per_second": 1 / sec,
               "unit": "steps/s", "flops_per_item": flops}


def machine(device: torch.device) -> dict:
    n = 8192 if device.type == "cuda" else 1024
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
           "fp32_matmul": matmul_flops_per_second(n=n, device=device)}
    if device.type == "cuda":
        out["bf16_matmul"] = matmul_flops_per_second(n=n, device=device, dtype=torch.bfloat16)
    return out


def print_table(results: list[dict], peaks: dict | None = None) -> None:
    first = results[0]
    peaks = peaks or first["machine"]
    bf16 = peaks.get("bf16_matmul")
    print(f"{peaks['device']}, {len(results)} process(es), torch {first['torch']}, {first['date']}. Measured matmul: "
          f"float32 {peaks['fp32_matmul'] / 1e12:.1f} TFLOP/s"
          + (f", bfloat16 {bf16 / 1e12:.1f} TFLOP/s" if bf16 else "") + ".\n")
    print("| what | precision | per second (all processes) | GFLOPs per item | TFLOP/s | of fp32 matmul | "
          "of bf16 matmul |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for i, row in enumerate(first["rows"][:min(len(r["rows"]) for r in results)]):
        total = sum(r["rows"][i]["per_second"] for r in results)
        rate = total * row["flops_per_item"]
        of_bf16 = f"{100 * rate / bf16:.0f}%" if bf16 else "-"
        print(f"| {row['what']} | {row['precision']} | {total:.1f} {row['unit']} | {row['flops_per_item'] / 1e9:.2f} "
              f"| {rate / 1e12:.2f} | {100 * rate / peaks['fp32_matmul']:.0f}% | {of_bf16} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--scale", choices=tuple(SCALES), default="cifar")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled row (a minute of compiling)")
    p.add_argument("--json", help="write the results here instead of printing a table")
    p.add_argument("--table", nargs="+", help="print the table of these --json files (one per process)")
    p.add_argument("--peaks", help="with --table: take the matmul rates from this --json file (processes that ran "
                   "side by side measured them while sharing the device)")
    args = p.parse_args(argv)
    if args.table:
        peaks = json.loads(Path(args.peaks).read_text())["machine"] if args.peaks else None
        print_table([json.loads(Path(f).read_text()) for f in args.table], peaks)
        return
    device = torch.device(args.device)
    result = {"machine": machine(device), "rows": [], "torch": torch.__version__,
              "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"}
    for row in rows_for(args):
        result["rows"].append(row)
        print(f"[{args.device}] {row['what']}, {row['precision']}: {row['per_second']:.1f} {row['unit']}",
              file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(result))
    if not args.json:
        print_table([result])


if __name__ == "__main__":
    main()
