"""The ``fastad`` command line: subcommands, and the one place user errors become exit code 2."""

from __future__ import annotations

import argparse
import sys

from fastad import __version__
from fastad.cli import bench_cmd, config_cmd, diffusion_cmd, distill_cmd, evaluate_cmd, sample_cmd, teacher_cmd
from fastad.errors import UserError

COMMANDS = (distill_cmd, teacher_cmd, diffusion_cmd, sample_cmd, evaluate_cmd, bench_cmd, config_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastad",
        description="Diffusion-based data-free knowledge distillation (Fast-AD).",
    )
    parser.add_argument("--version", action="version", version=f"fastad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        args.run(args)
    except UserError as e:
        print(f"fastad {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"fastad {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
