"""``fastad sample``: draw images from a diffusion prior with DDIM; optionally read them with a teacher."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", help="draw images from a diffusion prior (DDIM) into a PNG grid, optionally labelled by a teacher",
        description="Unguided DDIM sampling from a diffusers-format prior. Writes a PNG grid (small images are "
                    "upscaled, nearest neighbour) and optionally an .npz (images uint8 [N, C, H, W]; with "
                    "--teacher also predictions and confidence). With --teacher, each cell is captioned with "
                    "the teacher's predicted class and confidence.",
        epilog="example: fastad sample --prior models/fmnist_prior_50k60k --teacher runs/teacher/teacher.safetensors "
               "--n 64 --steps 50 --out samples.png",
    )
    p.add_argument("--prior", required=True, metavar="DIR", help="diffusers-format prior folder")
    p.add_argument("--teacher", metavar="FILE", help="classifier checkpoint whose predictions caption each cell")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--steps", type=int, default=50, help="sampler steps (default 50)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity ddim_eta (default 0: deterministic)")
    p.add_argument("--spacing", default="leading", choices=("leading", "trailing", "linspace"),
                   help="DDIM timestep spacing (default leading, as diffusers' DDIMScheduler)")
    p.add_argument("--clip-x0", action=argparse.BooleanOptionalAction, default=None,
                   help="clamp each step's preview x0_hat to [-1, 1] (diffusers' clip_sample); default: what the "
                        "prior's scheduler config says (diffusers' default when absent: on)")
    p.add_argument("--solver", default="ddim", choices=("ddim", "dpmpp-2m"),
                   help="ddim, or dpmpp-2m: DPM-Solver++(2M), deterministic, the same cost per step (default ddim)")
    p.add_argument("--seed", type=int, default=0, help="seed of the start noise (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="images per sampler batch (default 64)")
    p.add_argument("--class-labels", type=int, nargs="+", metavar="K",
                   help="class-conditional priors: one label per image, or a shorter list repeated; "
                        "default: balanced over all classes")
    p.add_argument("--out", default="samples.png", metavar="FILE.png", help="PNG grid to write (default samples.png)")
    p.add_argument("--npz", metavar="FILE.npz", help="also write the images (and teacher predictions) as .npz")
    p.add_argument("--nrow", type=int, help="grid cells per row (default: square grid)")
    p.add_argument("--scale", type=int, help="nearest-neighbour upscale of each cell (default: about 96 px wide)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch; 0 = all cores (default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import time

    import numpy as np
    import torch

    from fastad.diffusion import load_prior
    from fastad.diffusion.ddim import SOLVER_NAMES
    from fastad.diffusion.sampling import cyclic_labels, sample_prior
    from fastad.train.evaluate import classify
    from fastad.errors import UserError
    from fastad.utils.images import save_grid, to_uint8, view_scale
    from fastad.cli.common import existing_file, writable_file
    from fastad.options import shown
    from fastad.utils.runtime import resolve_device
    from fastad.utils.threads import set_threads

    for flag, value, low in (("--n", args.n, 1), ("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1),
                             ("--threads", args.threads, 0), ("--nrow", args.nrow, 1), ("--scale", args.scale, 1)):
        if value is not None and value < low:
            raise UserError(f"{flag}={value} must be >= {low}")
    if not (args.eta >= 0 and np.isfinite(args.eta)):
        raise UserError(f"--eta={args.eta} must be a finite number >= 0")
    if args.solver == "dpmpp-2m" and args.eta > 0:
        raise UserError(f"--eta={args.eta}: --solver dpmpp-2m is deterministic, so it needs 0")
    if Path(args.out).suffix.lower() != ".png":
        raise UserError(f"--out {shown(args.out)} must be a .png file")
    if args.npz and Path(args.npz).suffix.lower() != ".npz":
        raise UserError(f"--npz {shown(args.npz)} must be a .npz file")
    writable_file(args.out, "--out")
    if args.npz:
        writable_file(args.npz, "--npz")
    set_threads(args.threads)
    device = resolve_device(args.device, "--device")
    if not Path(args.prior).exists():
        raise UserError(f"prior {shown(args.prior)} not found")
    prior = load_prior(args.prior, device=device)
    C, H, W = prior.sample_shape
    if args.steps > prior.num_train_timesteps:
        raise UserError(f"--steps={args.steps} must be <= the prior's {prior.num_train_timesteps} training timesteps")

    teacher = None
    if args.teacher:
        from fastad.models import load_classifier

        teacher, meta = load_classifier(existing_file(args.teacher, "--teacher"), map_location=device)
        if meta["in_channels"] != C:
            raise UserError(f"teacher '{args.teacher}' takes {meta['in_channels']} channels but the prior makes {C}")
        if meta.get("input_size") is not None and tuple(meta["input_size"]) != (H, W):
            raise UserError(f"teacher '{args.teacher}' takes {tuple(meta['input_size'])} images but the prior makes {(H, W)}")
        if meta.get("mean") is None or meta.get("std") is None:
            raise UserError(f"teacher '{args.teacher}' records no input mean/std; save it with fastad train-teacher")
        names = list(meta.get("class_names") or range(meta["num_classes"]))

    labels = None
    if prior.conditional:
        K = prior.num_class_embeds
        given = torch.tensor(args.class_labels) if args.class_labels else torch.arange(K)
        if bool(((given < 0) | (given >= K)).any()):
            raise UserError(f"--class-labels must lie in [0, {K}), got {given.tolist()}")
        labels = given[cyclic_labels(args.n, len(given))]  # repeat the list over the n images
    elif args.class_labels:
        raise UserError(f"prior '{args.prior}' is unconditional; --class-labels needs a class-conditional prior")

    clip = args.clip_x0 if args.clip_x0 is not None else bool(prior.scheduler_config.get("clip_sample", True))
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    x = sample_prior(prior, args.n, steps=args.steps, ddim_eta=args.eta, spacing=args.spacing, generator=gen,
                     batch_size=args.batch_size, class_labels=labels, clip_x0=clip, solver=args.solver,
                     progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    images = to_uint8(x)

    captions, arrays = None, {"images": images.numpy()}
    if labels is not None:
        arrays["class_labels"] = labels.numpy()
    if teacher is not None:
        pred, conf = classify(teacher, x, mean=meta["mean"], std=meta["std"], batch_size=args.batch_size)
        captions = [f"{names[p]}\n{100 * c:.0f}%" for p, c in zip(pred.tolist(), conf.tolist())]
        arrays.update(predictions=pred.numpy(), confidence=conf.numpy())
    save_grid(args.out, images, nrow=args.nrow, scale=args.scale or view_scale(W), captions=captions)
    if args.npz:
        Path(args.npz).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.npz, **arrays)
    line = (f"{args.n} images ({C}x{H}x{W}), {args.steps} {SOLVER_NAMES[args.solver]} steps ({'clipped' if clip else 'unclipped'} x0_hat)"
            f" in {seconds:.1f}s: {args.n / seconds:.2f} images/s on {device} -> {args.out}" + (f", {args.npz}" if args.npz else ""))
    if teacher is not None:
        counts = torch.bincount(pred, minlength=len(names)).tolist()
        line += "; teacher's classes: " + ", ".join(f"{names[k]} {c}" for k, c in enumerate(counts) if c)
    print(line)
