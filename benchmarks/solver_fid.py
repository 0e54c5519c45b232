"""Sample quality per solver and step count, before a student is trained: the Frechet distance between the
teacher's penultimate features of prior samples and of real test images (``fastad.metrics.fid``; comparable
only within this script), and the teacher's mean confidence and class spread on the samples.

    python benchmarks/solver_fid.py --n 1000 --real-range 0 1000 ddim:10 dpmpp-2m:10 dpmpp-2m:6:trailing
"""

from __future__ import annotations

import argparse
import time

import torch

from fastad.data import load_dataset, to_float
from fastad.diffusion import SamplerConfig, load_prior
from fastad.metrics.fid import compute_features, frechet_distance
from fastad.models import load_classifier
from fastad.utils.threads import set_threads

REPO_PRIOR, REPO_TEACHER = "models/fmnist_prior_50k60k_6k", "models/fmnist_teacher_resnet20/teacher.safetensors"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="SOLVER:STEPS[:SPACING], e.g. ddim:10 dpmpp-2m:6:trailing (sampler.spacing, "
                   "default leading)")
    p.add_argument("--prior", default=REPO_PRIOR)
    p.add_argument("--teacher", default=REPO_TEACHER)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--real-range", nargs=2, type=int, default=[0, 1000], help="test images [START, STOP)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    set_threads(args.threads)
    prior = load_prior(args.prior)
    teacher, meta = load_classifier(args.teacher)
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    norm = lambda u: (u - mean) / std  # noqa: E731  images in [0, 1] -> the teacher's input
    real = load_dataset(meta["dataset"], "test", index_range=args.real_range)
    real_feats = compute_features(teacher, to_float(real.images), transform=norm)
    print(f"prior {args.prior}, teacher {args.teacher}, {args.n} samples per run, real test{args.real_range}")
    print("| solver | steps | spacing | FD to real (teacher features) | teacher confidence | classes (min-max share) "
          "| s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for run in args.runs:
        solver, steps, spacing = (run.split(":") + ["leading"])[:3]
        cfg = SamplerConfig(solver=solver, clip_x0=True, spacing=spacing)
        ts = cfg.timesteps(prior.num_train_timesteps, int(steps))
        gen = torch.Generator().manual_seed(args.seed)  # the same start noise for every run
        x_T = torch.randn(args.n, *prior.sample_shape, generator=gen)
        t0 = time.perf_counter()
        x = torch.cat([cfg.sample(prior.bind(None), x_T[i:i + 100], prior.alphas_cumprod, ts)
                       for i in range(0, args.n, 100)]).clamp(-1, 1)
        sec = time.perf_counter() - t0
        u = (x + 1) / 2
        feats = compute_features(teacher, u, transform=norm)
        with torch.no_grad():
            prob = torch.cat([teacher(norm(u[i:i + 500])).softmax(1) for i in range(0, args.n, 500)])
        share = torch.bincount(prob.argmax(1), minlength=prob.shape[1]).float() / args.n
        print(f"| {solver} | {steps} | {spacing} | {frechet_distance(feats, real_feats):.2f} | {prob.max(1).values.mean():.3f} | "
              f"{share.min():.3f}-{share.max():.3f} | {sec:.0f} |", flush=True)


if __name__ == "__main__":
    main()
