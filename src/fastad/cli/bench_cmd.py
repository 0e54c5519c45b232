"""``fastad bench``: fastad against the data-free baselines at equal images and at equal wall-clock time."""

from __future__ import annotations

import argparse

from fastad.bench.runner import METHODS, QUICK_BUDGET
from fastad.cli.common import use_embedded_default


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="compare CADR, fixed, unguided and DeepInversion synthesis (plus teacher and real-data KD)",
        description="One fastad distill run per (method, comparison, seed): 'images' gives every method the same "
                    "number of synthesised images, 'time' the same synthesis + training budget. References: the "
                    "teacher, and real-kd (the same student by KD on the real training images: not data-free). "
                    "Writes bench.md and bench.json; finished runs are reused, so an interrupted bench resumes.",
        epilog="example: fastad bench --seeds 0 1 2 --budget-seconds 120 --out runs/bench; with no --config it "
               "uses the embedded default (configs/fashion_mnist.yaml with the shipped teacher and prior)",
    )
    p.add_argument("--config", metavar="YAML", help="YAML config file (see configs/)")
    p.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                   help="override one config value for every run (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds per method (default 0 1 2; --quick: 0)")
    p.add_argument("--budget-seconds", type=float, help=f"synthesis + training seconds per run in the 'time' "
                   f"comparison (default 120; --quick: {QUICK_BUDGET:g})")
    p.add_argument("--images", type=int, help="images each method synthesises in the 'images' comparison "
                   "(default: distillation.epochs x synthesis_batch_size)")
    p.add_argument("--methods", nargs="+", choices=METHODS, metavar="METHOD",
                   help=f"subset to run (default all): {', '.join(METHODS)}")
    p.add_argument("--out", metavar="DIR", default="runs/bench", help="bench folder (default runs/bench)")
    p.add_argument("--quick", action="store_true", help="tiny everything (1 seed, 2 rounds, few images), for tests")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from fastad.bench import BenchSpec, format_table, run_bench

    if not args.config:
        use_embedded_default(args, "bench")
    spec = BenchSpec(config=args.config, sets=list(args.set), out=args.out, quick=args.quick,
                     seeds=args.seeds or ([0] if args.quick else [0, 1, 2]),
                     budget_seconds=(QUICK_BUDGET if args.quick else 120.0) if args.budget_seconds is None
                     else args.budget_seconds,
                     images=args.images, methods=list(args.methods or METHODS))
    print(format_table(run_bench(spec)))
