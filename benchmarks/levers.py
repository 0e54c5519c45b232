"""Speed levers of one synthesis step, each timed against its baseline in the same run (interleaved, medians).

Prior forward (the Fashion-MNIST prior, batch 64): eager under ``no_grad`` against ``inference_mode``,
channels_last, ``torch.compile`` and ``torch.compile`` with frozen weights. Teacher (the shipped
``resnet20``, 180 images: 45 guided targets x 4 smoothing copies, as ``x0-routed-smooth`` runs it):
forward and input-gradient backward with and without the ``L_BN`` statistics, contiguous against
channels_last, and ``L_BN``'s backward by autograd against its closed form. Student (``resnet8``):
one KD training step, contiguous against channels_last. The main job's KD step (the teacher's forward, then
the student's step, batch 128) with the eager teacher against the compiled one (``distillation.compile_kd_teacher``),
timed in blocks of consecutive steps as the loop runs them. docs/results.md ("Scale and speed on the CPU") quotes
these figures.

    python benchmarks/levers.py --threads 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from fastad.config import load_config
from fastad.diffusion import load_prior
from fastad.distill import load_teacher
from fastad.guidance.bn_stats import BNStatsRecorder
from fastad.models import create_model

HERE = Path(__file__).resolve().parent.parent
CL = torch.channels_last


def interleaved(cases: dict, repeats: int, block: int = 1) -> dict[str, float]:
    """Median seconds per call of each case, run round-robin ``repeats`` times after one warm-up round; each turn
    times ``block`` consecutive calls (a loop's caches stay warm within a block)."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(repeats + 1):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            for _ in range(block):
                fn()
            if r:
                times[name].append((time.perf_counter() - t0) / block)
    return {name: statistics.median(v) for name, v in times.items()}


def autograd_bn_term(x, running_mean, running_var):
    """``L_BN``'s per-layer term through autograd's own ``var_mean`` backward (the formula before its closed form)."""
    var, mu = torch.var_mean(x.float(), dim=[0, *range(2, x.ndim)], correction=0)
    return (mu - running_mean).pow(2).sum() + (var - running_var).pow(2).sum()


def prior_cases(prior_path: str, compile_: bool) -> dict:
    unet = load_prior(prior_path).unet
    x, t = torch.randn(64, 1, 28, 28), torch.full((64,), 500)
    cl = copy.deepcopy(unet).to(memory_format=CL)
    cases = {"eager, no_grad": lambda: _nograd(unet, x, t), "inference_mode": lambda: _infer(unet, x, t),
             "channels_last": lambda: _infer(cl, x.contiguous(memory_format=CL), t)}
    if compile_:
        for name, options in (("torch.compile", None), ("torch.compile, frozen weights", {"freezing": True})):
            compiled = torch.compile(copy.deepcopy(unet), options=options)
            t0 = time.perf_counter()
            _nograd(compiled, x, t)
            print(f"  {name}: first call (compiling) {time.perf_counter() - t0:.1f} s", flush=True)
            cases[name] = (lambda m: lambda: _nograd(m, x, t))(compiled)
    return cases


def _nograd(m, x, t):
    with torch.no_grad():
        m(x, t)


def _infer(m, x, t):
    with torch.inference_mode():
        m(x, t)


def teacher_cases(compile_: bool) -> dict:
    import fastad.guidance.bn_stats as bn_stats

    cfg = load_config(str(HERE / "configs/fashion_mnist.yaml"), [
        f"distillation.teacher_checkpoint={HERE / 'models/fmnist_teacher_resnet20/teacher.safetensors'}"])
    teacher, _ = load_teacher(cfg, torch.device("cpu"))
    contiguous = copy.deepcopy(teacher).to(memory_format=torch.contiguous_format)
    x = torch.randn(180, 1, 28, 28)
    y = torch.zeros(180, dtype=torch.long)
    closed_form = bn_stats.bn_stat_term

    def step(model, term):
        def run():
            bn_stats.bn_stat_term = term or closed_form
            rec = BNStatsRecorder(model) if term else None
            xi = x.clone().requires_grad_(True)
            with torch.enable_grad():
                if rec is None:
                    loss = F.cross_entropy(model(xi), y)
                else:
                    with rec.record():
                        loss = F.cross_entropy(model(xi), y) + rec.loss()
                torch.autograd.grad(loss, xi)
            if rec is not None:
                rec.remove()
            bn_stats.bn_stat_term = closed_form
        return run

    cases = {"teacher fwd+bwd, L_BN by autograd, contiguous": step(contiguous, autograd_bn_term),
             "teacher fwd+bwd, L_BN by autograd, channels_last": step(teacher, autograd_bn_term),
             "teacher fwd+bwd, L_BN closed form, channels_last": step(teacher, closed_form),
             "teacher fwd+bwd, no L_BN, contiguous": step(contiguous, None),
             "teacher fwd+bwd, no L_BN, channels_last": step(teacher, None)}
    if compile_:  # as distillation.compile builds the guidance's teacher (first calls compile: about a minute)
        compiled = torch.compile(teacher, dynamic=True)
        for name, term in (("L_BN closed form", closed_form), ("no L_BN", None)):
            cases[f"teacher fwd+bwd, {name}, channels_last, compiled"] = step(compiled, term)
            cases[f"teacher fwd+bwd, {name}, channels_last, compiled"]()
    return cases


def student_cases() -> dict:
    student = create_model("resnet8", num_classes=10, in_channels=1)
    cl = copy.deepcopy(student).to(memory_format=CL)
    x = torch.randn(128, 1, 28, 28)

    def step(model):
        def run():
            model.zero_grad()
            model(x).square().mean().backward()
        return run

    return {"student KD step, contiguous": step(student), "student KD step, channels_last": step(cl)}


def kd_step_cases() -> dict:
    from fastad.train.kd import CompiledTeacher, kd_step

    cfg = load_config(str(HERE / "configs/fashion_mnist.yaml"), [
        f"distillation.teacher_checkpoint={HERE / 'models/fmnist_teacher_resnet20/teacher.safetensors'}"])
    teacher, _ = load_teacher(cfg, torch.device("cpu"))
    compiled = CompiledTeacher(teacher)
    x = torch.randn(128, 1, 28, 28)
    with torch.no_grad():
        compiled(x)  # compiles (about 10 s)

    def step(kd_teacher):
        student = create_model("resnet8", num_classes=10, in_channels=1).to(memory_format=CL)
        opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
        return lambda: kd_step(student, kd_teacher, x, opt, tau=4.0)

    return {"KD step, eager teacher": step(teacher), "KD step, compiled teacher": step(compiled)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prior", default=str(HERE / "models/fmnist_prior_50k60k_6k"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (a minute each)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {args.threads} threads, torch {torch.__version__}")
    tables = [("prior forward, batch 64", prior_cases(args.prior, not args.no_compile), 1),
              ("teacher, 180 images", teacher_cases(not args.no_compile), 1), ("student, batch 128", student_cases(), 1)]
    if not args.no_compile:
        tables.append(("the main job's KD step, batch 128, blocks of 10 steps", kd_step_cases(), 10))
    for title, cases, block in tables:
        res = interleaved(cases, args.repeats, block)
        base = next(iter(res.values()))
        print(f"\n| {title} | ms (median of {args.repeats}) | speed-up |\n|---|---:|---:|")
        for name, sec in res.items():
            print(f"| {name} | {1000 * sec:.1f} | {base / sec:.2f}x |")


if __name__ == "__main__":
    main()
