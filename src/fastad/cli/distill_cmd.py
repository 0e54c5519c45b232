"""``fastad distill``: data-free distillation of a student from a teacher and a diffusion prior."""

from __future__ import annotations

import argparse

from fastad.cli.common import (
    add_config_flags, config_from_args, existing_file, overwrite, resumed_config, suggest, unchanged_on_refusal,
    use_embedded_default,
)
from fastad.config.recipes import RECIPES, recipe_sets
from fastad.errors import UserError
from fastad.options import shown


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill", help="distil a student from a teacher and a diffusion prior, online (default: the embedded "
                        "Fashion-MNIST job, unguided DDIM)",
        description="Every round synthesises images with DDIM from the prior (guided by the teacher as the config's "
                    "fast_ad/guidance/routing sections or --recipe say; the embedded default is unguided) into a "
                    "FIFO replay buffer, then trains the student by KD on buffer batches; evaluates on the real "
                    "test split only. Writes config.yaml, metrics.jsonl, TensorBoard events, grids/, last.pt, "
                    "best.pt, student.safetensors and summary.json.",
        epilog="example: fastad distill --config configs/fashion_mnist.yaml --teacher runs/teacher/teacher.safetensors "
               "--prior models/fmnist_prior_50k60k --out runs/distill",
    )
    add_config_flags(p, epochs_help="distillation rounds (distillation.epochs)")
    p.epilog += ("; with no --config it runs the embedded default: Fashion-MNIST with the shipped "
                 "teacher and prior (configs/fashion_mnist.yaml), or with the --teacher / --prior given")
    p.add_argument("--teacher", metavar="FILE", help="teacher checkpoint (distillation.teacher_checkpoint)")
    p.add_argument("--prior", metavar="DIR", help="diffusers-format prior folder (distillation.diffusion_checkpoint)")
    p.add_argument("--recipe", metavar="NAME",
                   help="a complete synthesis recipe, as the bench runs it (docs/results.md), applied before --set: "
                        + ", ".join(RECIPES) + " (cadr is the paper's)")
    p.add_argument("--guidance", choices=("cadr", "fixed", "none"), help="guidance mode (fast_ad.guidance)")
    p.add_argument("--save-images", choices=("png", "npz"), help="export every synthesised image (distillation.save_images)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from RUN_DIR/last.pt (with --epochs: extend it)")
    p.add_argument("--nproc", type=int, metavar="N", help="run N data-parallel processes on this machine through "
                   "torchrun, one thread each (the same as torchrun --nproc-per-node=N -m fastad distill ...)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import os

    from fastad.api import distill
    from fastad.utils.runtime import check_out

    if args.nproc is not None:
        if args.nproc < 1:
            raise UserError(f"--nproc: got {args.nproc}; expected a number of processes >= 1")
        if args.nproc > 1 and "WORLD_SIZE" not in os.environ:  # relaunch this command line as N ranks
            from fastad.distill.distributed import launch

            argv = list(args.argv)
            i = next(k for k, a in enumerate(argv) if a == "--nproc" or a.startswith("--nproc="))
            del argv[i:i + (1 if "=" in argv[i] else 2)]
            launch(args.nproc, argv)
            return

    if args.recipe is not None and args.recipe not in RECIPES:
        raise UserError(f"--recipe: got {shown(args.recipe)}{suggest(args.recipe, RECIPES)}; choose one of "
                        f"{', '.join(RECIPES)}")
    if args.resume:
        if args.recipe:
            raise UserError(f"--recipe {args.recipe} with --resume: a resumed run keeps its own config.yaml; "
                            "start a new run for another recipe")
        with unchanged_on_refusal(args.resume):
            _, run_dir = resumed_config(args, "distill", extend_key="distillation.epochs", extend_flag="--epochs")
            summary = distill(out=run_dir, resume=True).summary
    else:
        if not args.config:
            if args.teacher:  # the embedded default evaluates on its shipped teacher's data; yours names its own
                from fastad.data import DATASETS
                from fastad.models import read_classifier_meta

                ds = read_classifier_meta(existing_file(args.teacher, "--teacher")).get("dataset")
            use_embedded_default(args, "distill", own={"teacher": args.teacher, "prior": args.prior})
            if args.teacher:
                args.set = [f"data.dataset={ds if ds in DATASETS else 'null'}"] + list(args.set)
        recipe = recipe_sets(args.recipe) if args.recipe else []
        args.set = recipe + list(args.set)  # the user's --set and the flags below still win
        flags = {"distillation.teacher_checkpoint": args.teacher, "distillation.diffusion_checkpoint": args.prior,
                 "fast_ad.guidance": args.guidance, "distillation.save_images": args.save_images}
        args.set = list(args.set) + [f"{k}={v}" for k, v in flags.items() if v]
        cfg = config_from_args(args, epochs_key="distillation.epochs")
        with overwrite(args.overwrite):
            check_out(cfg.run.out, "distill")  # before the models are loaded; the API checks it again
            summary = distill(config=cfg).summary
    if "out" in summary:  # rank 0's summary (other ranks of a torchrun job return their checksum only)
        print(format_summary(summary))


def format_summary(s: dict) -> str:
    """The closing table of a distill run: accuracies, images, time split and where the outputs are."""
    from pathlib import Path

    out = Path(s["out"])
    grids = sorted((out / "grids").glob("round_*.png"))
    def pct(v: float | None, missing: str) -> str:
        return missing if v is None else f"{v:.2f}%"

    rows = [("teacher top-1", pct(s["teacher_top1"], "not scored")),
            ("student top-1", pct(s["student_top1"], "not measured (no labelled data: data.dataset is null)")),
            ("agreement with teacher", "-" if s["synthetic_agreement_top1"] is None else
             f"{s['synthetic_agreement_top1']:.2f}% top-1, KL {s['synthetic_kl']:.3f} nats, on "
             f"{(s.get('synthetic_holdout') or '').split(' held-out')[0] or 'the'} held-out synthetic images"),
            ("images synthesised", f"{s['images_synthesized']}"),
            ("synthesis time", f"{s['synthesis_seconds']:.0f}s"), ("training time", f"{s['training_seconds']:.0f}s"),
            ("evaluation time", f"{s['evaluation_seconds']:.0f}s"),
            ("student", s["student"]), ("newest grid", str(grids[-1]) if grids else "-"),
            ("logs", f"{out / 'metrics.jsonl'} (tensorboard --logdir {out})"), ("summary", str(out / "summary.json"))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
