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


def resumed_config(args: argparse.Namespace, command: str, *, extend_key: str, extend_flag: str) -> tuple[Config, Path]:
    """Config of a run being resumed: RUN_DIR/config.yaml, optionally extended by one flag.

    Other configuration flags are refused: a resumed run keeps the config it started with.
    """
    from fastad.config import save_config

    extend = getattr(args, extend_flag.lstrip("-").replace("-", "_"), None)
    given = [flag for flag in ("--config", "--set", "--device", "--seed", "--out", "--arch", "--dataset", "--teacher",
                               "--prior", "--guidance", "--save-images", "--class-conditional")
             if getattr(args, flag.lstrip("-").replace("-", "_"), None)]
    if given:
        raise UserError(f"--resume takes its config from RUN_DIR/config.yaml; only {extend_flag} may be given "
                        f"with it, not {', '.join(given)}")
    run_dir = Path(args.resume)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"--resume '{run_dir}': no config.yaml there (not a {command} run folder)")
    cfg = load_config(run_dir / "config.yaml", [f"{extend_key}={extend}"] if extend is not None else [])
    save_config(cfg, run_dir / "config.yaml")  # an extended run's config says so
    return cfg, run_dir


# The embedded default: configs/fashion_mnist.yaml of this checkout with the shipped teacher and prior.
REPO = Path(__file__).resolve().parents[3]
EMBEDDED_CONFIG = REPO / "configs" / "fashion_mnist.yaml"


def use_embedded_default(args: argparse.Namespace, command: str, own: dict[str, str | None] | None = None) -> None:
    """No --config: run the embedded default, its shipped models found from any working folder (--set and the
    common flags still apply). ``own``: the models the user named instead (``{"teacher": path or None, "prior": ...}``);
    they replace the shipped ones (the caller's --teacher / --prior overrides come after these)."""
    from fastad.config.loader import read_yaml

    if not EMBEDDED_CONFIG.is_file():
        raise UserError(f"no --config given and the embedded default ({EMBEDDED_CONFIG}) is not here "
                        "(it ships with a fastad checkout); pass --config")
    args.config = str(EMBEDDED_CONFIG)
    d = read_yaml(EMBEDDED_CONFIG)["distillation"]
    shipped = [f"distillation.{k}={REPO / d[k]}" for k in ("teacher_checkpoint", "diffusion_checkpoint")]
    args.set = shipped + list(args.set)  # the user's --set still wins
    given = [name for name, path in (own or {}).items() if path]
    models = " and ".join([*(f"your {n}" for n in given), *(f"the shipped {n}" for n in ("teacher", "prior")
                                                              if n not in given)])
    print(f"fastad {command}: no --config, running the embedded default ({EMBEDDED_CONFIG.relative_to(REPO)} with "
          f"{models})", flush=True)
