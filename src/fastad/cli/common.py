"""Flags shared by the commands that run from a config."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastad.config import Config, load_config
from fastad.errors import UserError


def add_config_flags(p: argparse.ArgumentParser, *, epochs_help: str | None = None) -> None:
    g = p.add_argument_group("configuration (defaults <- --config <- --set <- flags)")
    g.add_argument("--config", metavar="YAML", help="YAML config file (see configs/)")
    g.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                   help="override one config value, e.g. --set distillation.lr=0.05 (repeatable)")
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N (run.device)")
    g.add_argument("--seed", type=int, help="random seed (run.seed)")
    if epochs_help:
        g.add_argument("--epochs", type=int, help=epochs_help)
    g.add_argument("--out", metavar="DIR", help="run output folder (run.out)")


def config_from_args(args: argparse.Namespace, *, epochs_key: str | None = None) -> Config:
    """Resolve the config from --config, --set and the common flags."""
    overrides = {"run.device": args.device, "run.seed": args.seed, "run.out": args.out}
    if epochs_key:
        overrides[epochs_key] = getattr(args, "epochs", None)
    return load_config(args.config, args.set, overrides)


def existing_file(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} '{p}' not found")
    return p
