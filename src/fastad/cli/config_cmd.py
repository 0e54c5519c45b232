"""``fastad config``: print the resolved configuration with every field's meaning."""

from __future__ import annotations

import argparse

from fastad.cli.common import REPO, EMBEDDED_CONFIG, add_config_flags, config_from_args
from fastad.config import format_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the resolved config with comments (default: the embedded default "
                                      "that fastad distill runs)",
                       description="Print the resolved configuration, one commented line per key: defaults <- "
                                   "--config (default: the embedded Fashion-MNIST job, as fastad distill runs it) "
                                   "<- --set <- flags.")
    add_config_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    source = args.config
    if not source:
        args.config = str(EMBEDDED_CONFIG)
        source = f"the embedded default, {EMBEDDED_CONFIG.relative_to(REPO)}"
    cfg = config_from_args(args)
    extra = f" with {len(args.set)} --set override(s)" if args.set else ""
    print(f"# fastad config: {source}{extra}\n" + format_config(cfg), end="")
