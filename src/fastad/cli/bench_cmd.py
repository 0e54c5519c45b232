"""``fastad bench``: fastad against the data-free baselines at equal images and at equal wall-clock time."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastad.bench.runner import BENCH_BUDGET, METHODS, QUICK_BUDGET
from fastad.cli.common import REPO, use_embedded_default
from fastad.errors import UserError

# The embedded default's out-of-domain setting: the shipped prior trained on classes 0-4 only.
OOD_PRIOR = REPO / "models" / "fmnist_prior_50k60k_classes0-4"
SETTINGS = ("in-domain", "out-of-domain")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="run every recipe (unguided, CADR, DeepInversion, ...) against the teacher and real-data KD, "
                      "at equal images and equal time (default: the embedded Fashion-MNIST job, in and out of domain)",
        description="One fastad distill run per (method, comparison, seed): 'images' gives every method the same "
                    "number of synthesised images, 'time' the same synthesis + training budget. Every student is "
                    "also scored on a validation and a report range of the test split: bench.md names the method "
                    "the validation range chose and reports it on the other. References: the "
                    "teacher, and real-kd (the same student by KD on the real training images: not data-free). "
                    "Writes bench.md and bench.json; finished runs are reused, so an interrupted bench resumes.",
        epilog="example: fastad bench --seeds 0 1 2 --out runs/bench; with no --config it uses the embedded "
               "default (configs/fashion_mnist.yaml with the shipped teacher and prior) and, as the out-of-domain "
               "setting, the shipped prior that never saw classes 5-9",
    )
    p.add_argument("--config", metavar="YAML", help="YAML config file (see configs/)")
    p.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                   help="override one config value for every run (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds per method (default 0 1 2; --quick: 0)")
    p.add_argument("--budget-seconds", type=float, help=f"synthesis + training seconds per run in the 'time' "
                   f"comparison (default {BENCH_BUDGET:g}; --quick: {QUICK_BUDGET:g})")
    p.add_argument("--images", type=int, help="images each method synthesises in the 'images' comparison "
                   "(default: distillation.epochs x synthesis_batch_size)")
    p.add_argument("--methods", nargs="+", choices=METHODS, metavar="METHOD",
                   help=f"subset to run (default all): {', '.join(METHODS)}")
    p.add_argument("--ood-prior", metavar="DIR", help="a second prior that lacks some of the teacher's classes "
                   "(its fastad_prior.json names the classes it saw): adds the 'out-of-domain' setting "
                   "(default with no --config: the shipped classes-0-4 prior)")
    p.add_argument("--settings", nargs="+", choices=SETTINGS, help="run only these settings (e.g. one per "
                   "process into the same --out, then once more with all to write the combined table)")
    p.add_argument("--comparisons", nargs="+", choices=("images", "time"), help="run only these comparisons")
    p.add_argument("--config-size", action="store_true", help="keep the config's own run size (rounds, KD steps, "
                   "batch) instead of the bench's smaller one: e.g. the embedded default's job against real-kd")
    p.add_argument("--validation-range", nargs=2, type=int, metavar=("START", "STOP"),
                   help="test images [START, STOP) on which bench.md chooses the best method (default: the first "
                        "half of the test split)")
    p.add_argument("--report-range", nargs=2, type=int, metavar=("START", "STOP"),
                   help="test images [START, STOP), disjoint from the validation range, on which the chosen method "
                        "is reported (default: the second half)")
    p.add_argument("--out", metavar="DIR", default="runs/bench", help="bench folder (default runs/bench)")
    p.add_argument("--quick", action="store_true", help="tiny everything (1 seed, 2 rounds, few images), for tests")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from fastad.bench import BenchSpec, format_table, run_bench
    from fastad.cli.common import existing_file

    ood = args.ood_prior
    if not args.config:
        use_embedded_default(args, "bench")
        ood = ood or (None if args.quick else str(OOD_PRIOR))
    settings = {"in-domain": []}
    if ood:
        existing_file(str(Path(ood) / "fastad_prior.json"), "--ood-prior")
        settings["out-of-domain"] = [f"distillation.diffusion_checkpoint={ood}"]
    for name in args.settings or []:
        if name not in settings:
            raise UserError(f"--settings: '{name}' needs --ood-prior (or no --config)")
    if args.settings:
        settings = {k: v for k, v in settings.items() if k in args.settings}
    spec = BenchSpec(config=args.config, sets=list(args.set), out=args.out, quick=args.quick,
                     seeds=args.seeds or ([0] if args.quick else [0, 1, 2]),
                     budget_seconds=(QUICK_BUDGET if args.quick else BENCH_BUDGET) if args.budget_seconds is None
                     else args.budget_seconds,
                     images=args.images, methods=list(args.methods or METHODS), settings=settings,
                     config_size=args.config_size, comparisons=list(args.comparisons or ("images", "time")),
                     validation_range=args.validation_range, report_range=args.report_range)
    print(format_table(run_bench(spec)))
