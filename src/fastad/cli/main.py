"""The ``fastad`` command line: subcommands, and the one place user errors become exit code 2."""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

from fastad import __version__
from fastad.cli import bench_cmd, config_cmd, diffusion_cmd, distill_cmd, evaluate_cmd, sample_cmd, teacher_cmd
from fastad.errors import UserError

COMMANDS = (distill_cmd, teacher_cmd, diffusion_cmd, sample_cmd, evaluate_cmd, bench_cmd, config_cmd)


class OneLineParser(argparse.ArgumentParser):
    """argparse with the project's error style: one line on stderr (no usage block), long values shortened,
    the nearest valid choice suggested, exit code 2. Subcommand parsers inherit it."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        from fastad.cli.common import suggest
        from fastad.options import ECHO_LIMIT

        message = " ".join(message.split())
        m = re.search(r"invalid choice: '(.*?)' \(choose from (.*)\)$", message)
        if m:
            choices = [c.strip().strip("'") for c in m.group(2).split(",")]
            hint = suggest(m.group(1), choices)
            message += f"; did you mean {hint[len(' (did you mean '):-1]}" if hint else ""
        message = re.sub(r"'([^']{%d,})'" % (ECHO_LIMIT + 1),
                         lambda q: f"'{q.group(1)[:ECHO_LIMIT - 10]}...' ({len(q.group(1)):,} characters)", message)
        if len(message) > 4 * ECHO_LIMIT:
            message = message[: 4 * ECHO_LIMIT - 3] + "..."
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad flag (already reported in one line)
        return e.code if isinstance(e.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 0
    args.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]  # e.g. for --nproc to relaunch
    try:
        args.run(args)
    except UserError as e:
        message = " ".join(str(e).split())  # one line, whatever the message held
        print(f"fastad {args.command}: error: {message}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a write outside the atomic helpers (logs, exports, tables) on a full or read-only disk
        where = f" '{e.filename}'" if e.filename else ""
        print(f"fastad {args.command}: error: cannot read or write{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastad {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
