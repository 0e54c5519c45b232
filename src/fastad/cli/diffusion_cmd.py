"""``fastad train-diffusion``: train a diffusion prior (diffusers UNet2DModel) on a real dataset."""

from __future__ import annotations

import argparse
import shlex

from fastad.cli.common import add_config_flags, config_from_args, overwrite, resumed_config, unchanged_on_refusal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-diffusion", help="train a diffusion prior (diffusers UNet2DModel) on a real dataset",
        description="Train an epsilon-prediction UNet2DModel with the DDPM objective on a dataset's train split "
                    "(optionally an index range or class subset). Labels are read only for a class-conditional "
                    "prior. Writes config.yaml, metrics.jsonl, TensorBoard events, samples/step_*.png, last.pt "
                    "(resumable) and prior/ (diffusers format, EMA weights, with a record of the data it saw).",
        epilog="example: fastad train-diffusion --config configs/fashion_mnist.yaml "
               "--set data.train_range=[50000,60000] --out runs/prior",
    )
    add_config_flags(p)
    p.add_argument("--steps", type=int, help="optimiser steps (diffusion.steps); with --resume, extends the run")
    p.add_argument("--dataset", help="dataset name (data.dataset), e.g. fashion_mnist")
    p.add_argument("--class-conditional", action="store_true",
                   help="train a class-conditional prior (diffusion.class_conditional=true; reads labels)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from RUN_DIR/last.pt")
    p.set_defaults(run=run)


def _command(args: argparse.Namespace) -> str:
    """The command line as parsed (not ``sys.argv``, which is the host's when ``main`` is called
    from Python), recorded in the prior's metadata."""
    parts = ["fastad", "train-diffusion"]
    for flag, value in (("--config", args.config), ("--device", args.device), ("--seed", args.seed),
                        ("--out", args.out), ("--steps", args.steps), ("--dataset", args.dataset),
                        ("--resume", args.resume)):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--class-conditional"] * args.class_conditional
    for item in args.set:
        parts += ["--set", item]
    return shlex.join(parts)


def check_diffusion_run(cfg) -> None:
    """What train_diffusion checks once its folder exists, checked before: the device, the sampling options,
    the data (read once here) and the UNet's shape."""
    import torch

    from fastad.diffusion.ddim import ddim_timesteps
    from fastad.diffusion.prior import build_unet
    from fastad.data import DATASETS, load_dataset
    from fastad.errors import UserError
    from fastad.utils.runtime import resolve_device

    resolve_device(cfg.run.device)
    d, data = cfg.diffusion, cfg.data
    ddim_timesteps(d.num_train_timesteps, d.sample_steps)
    if not data.dataset:
        raise UserError("config key 'data.dataset' is not set; train-diffusion trains on a dataset: --dataset NAME or "
                        f"--set data.dataset=NAME (one of {', '.join(DATASETS)})")
    # The selection train_diffusion will read (it reads it again: it takes no loaded data).
    info = load_dataset(data.dataset, "train", root=data.root,
                        index_range=tuple(data.train_range) if data.train_range else None, classes=data.classes,
                        range_key="config key 'data.train_range'").info
    if info.image_size[0] != info.image_size[1]:
        raise UserError(f"{info.name}: images are {info.image_size[0]}x{info.image_size[1]}; train-diffusion needs "
                        "square images")
    levels = len(d.block_out_channels)
    if info.image_size[0] % 2 ** (levels - 1):
        raise UserError(f"config key 'diffusion.block_out_channels': got {d.block_out_channels} ({levels} levels); "
                        f"the UNet's sample_size={info.image_size[0]} ({info.name}) must be divisible by "
                        f"2**(levels-1) = {2 ** (levels - 1)}: use at most {_max_levels(info.image_size[0])} levels")
    with torch.device("meta"):  # shapes only
        build_unet(sample_size=info.image_size[0], in_channels=info.channels,
                   block_out_channels=tuple(d.block_out_channels), layers_per_block=d.layers_per_block,
                   attention=d.attention, num_class_embeds=info.num_classes if d.class_conditional else None)


def _max_levels(size: int) -> int:
    levels = 1
    while size % 2 ** levels == 0:
        levels += 1
    return levels


def run(args: argparse.Namespace) -> None:
    from fastad.diffusion.train import train_diffusion  # heavy imports only when the command runs
    from fastad.utils.runtime import check_out, prepare_run

    command = _command(args)
    if args.resume:
        with unchanged_on_refusal(args.resume):
            cfg, run_dir = resumed_config(args, "train-diffusion", extend_key="diffusion.steps",
                                          extend_flag="--steps")
            summary = train_diffusion(cfg, run_dir, resume=True, command=command)
    else:
        args.set = list(args.set) + [f"data.dataset={args.dataset}"] * bool(args.dataset) \
            + ["diffusion.class_conditional=true"] * args.class_conditional \
            + [f"diffusion.steps={args.steps}"] * (args.steps is not None)
        cfg = config_from_args(args)
        with overwrite(args.overwrite):
            check_out(cfg.run.out, "train-diffusion")  # before the data is read
            check_diffusion_run(cfg)
            out = prepare_run(cfg, "train-diffusion")
        summary = train_diffusion(cfg, out, resume=False, command=command)
    grids = summary["grids"]
    print(f"prior on {summary['dataset']} {summary['split']}{summary['index_range']}"
          + (f" classes {summary['classes']}" if summary["classes"] else "")
          + f" ({summary['num_images']} images, {'class-conditional' if summary['class_conditional'] else 'no labels'}):"
          f" {summary['steps']} steps in {summary['wall_seconds']:.0f}s, final loss {summary['final_loss']:.4f}"
          f" -> {summary['prior']}" + (f"; sample grids in {summary['samples']} (last {grids[-1]})" if grids else ""))
