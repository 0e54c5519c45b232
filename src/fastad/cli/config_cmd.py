"""``fastad config``: print the resolved configuration with every field's meaning."""

from __future__ import annotations

import argparse

from fastad.cli.common import add_config_flags, config_from_args
from fastad.config import format_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the resolved config (defaults, YAML, --set) with comments",
                       description="Print the resolved configuration, one commented line per key.")
    add_config_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    print(format_config(config_from_args(args)), end="")
