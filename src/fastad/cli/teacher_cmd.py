"""``fastad train-teacher``: train a zoo classifier on a real dataset."""

from __future__ import annotations

import argparse

from fastad.cli.common import add_config_flags, config_from_args, overwrite, resumed_config, unchanged_on_refusal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-teacher", help="train a teacher classifier (zoo model) on a real dataset",
        description="Train a zoo classifier with SGD on a dataset's train split (optionally an index range "
                    "or class subset), evaluating on the test split every epoch. Writes config.yaml, "
                    "metrics.jsonl, TensorBoard events, last.pt (resumable) and teacher.safetensors.",
        epilog="example: fastad train-teacher --config configs/fashion_mnist.yaml --epochs 12 --out runs/teacher",
    )
    add_config_flags(p, epochs_help="training epochs (teacher_training.epochs)")
    p.add_argument("--arch", help="zoo model (teacher_training.arch), e.g. resnet20")
    p.add_argument("--dataset", help="dataset name (data.dataset), e.g. fashion_mnist")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from RUN_DIR/last.pt (with --epochs: extend it)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from fastad.train.teacher import setup_teacher, train_teacher  # heavy imports only when the command runs
    from fastad.utils.runtime import check_out, prepare_run

    if args.resume:
        with unchanged_on_refusal(args.resume):
            cfg, run_dir = resumed_config(args, "train-teacher", extend_key="teacher_training.epochs",
                                          extend_flag="--epochs")
            summary = train_teacher(cfg, run_dir, resume=True)
    else:
        args.set = list(args.set) + [f"teacher_training.arch={args.arch}"] * bool(args.arch) \
            + [f"data.dataset={args.dataset}"] * bool(args.dataset)
        cfg = config_from_args(args, epochs_key="teacher_training.epochs")
        with overwrite(args.overwrite):
            check_out(cfg.run.out, "train-teacher")  # before the data is read
            setup = setup_teacher(cfg)  # every check, before the run folder is made
            out = prepare_run(cfg, "train-teacher")
        summary = train_teacher(cfg, out, setup=setup)
    print(f"teacher {summary['arch']} on {summary['dataset']}: test top-1 {summary['test_top1']:.2f}%"
          + (f", top-5 {summary['test_top5']:.2f}%" if summary.get("test_top5") is not None else "")
          + f" in {summary['wall_seconds']:.0f}s -> {summary['checkpoint']}")
