"""Flags shared by the commands that run from a config."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Iterator

from fastad.config import Config, load_config
from fastad.errors import UserError
from fastad.options import shown


def add_config_flags(p: argparse.ArgumentParser, *, epochs_help: str | None = None, run_folder: bool = True) -> None:
    g = p.add_argument_group("configuration (defaults <- --config <- --set <- flags)")
    g.add_argument("--config", metavar="YAML", help="YAML config file (see configs/)")
    g.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                   help="override one config value, e.g. --set distillation.lr=0.05 (repeatable)")
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N (run.device)")
    g.add_argument("--seed", type=int, help="random seed (run.seed)")
    if epochs_help:
        g.add_argument("--epochs", type=int, help=epochs_help)
    if run_folder:
        g.add_argument("--out", metavar="DIR", help="run output folder (run.out); one that already holds a run is "
                       "refused unless --overwrite")
        g.add_argument("--overwrite", action="store_true", help="replace the run already in --out (its files are "
                       "deleted once every check has passed)")
    else:
        g.add_argument("--out", metavar="DIR", help="run output folder (run.out)")


def config_from_args(args: argparse.Namespace, *, epochs_key: str | None = None) -> Config:
    """Resolve the config from --config, --set and the common flags."""
    overrides = {"run.device": args.device, "run.seed": args.seed, "run.out": args.out}
    if epochs_key:
        overrides[epochs_key] = getattr(args, "epochs", None)
    return load_config(args.config, args.set, overrides)


def suggest(name: str, choices) -> str:
    """``" (did you mean 'x'?)"`` for the nearest valid name, or ``""``."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def existing_file(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} {shown(str(p))} not found")
    if p.is_dir():
        raise UserError(f"{what} {shown(str(p))} is a directory; expected a file")
    return p


def writable_file(path: str, flag: str) -> Path:
    """An output file the command will write at its end, checked at its start: not a folder, and its folder
    exists (or can be made) and is writable. Writes nothing."""
    import os

    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {shown(str(p))} is a directory; expected a file name")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {shown(str(p))}: '{parent}' is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UserError(f"{flag} {shown(str(p))}: not writable")
    return p


def resumed_config(args: argparse.Namespace, command: str, *, extend_key: str, extend_flag: str) -> tuple[Config, Path]:
    """Config of a run being resumed: RUN_DIR/config.yaml, optionally extended by one flag.

    Other configuration flags are refused: a resumed run keeps the config it started with. Everything is
    checked (the folder is a run of ``command``, its config loads, its last.pt is whole) before config.yaml is
    rewritten, and it is rewritten only when the extension changes it.
    """
    from fastad.config import save_config
    from fastad.utils.io import load_resume_state
    from fastad.utils.runtime import CHECKPOINT_KEYS, run_kind

    extend = getattr(args, extend_flag.lstrip("-").replace("-", "_"), None)
    given = [flag for flag in ("--config", "--set", "--device", "--seed", "--out", "--arch", "--dataset", "--teacher",
                               "--prior", "--guidance", "--save-images", "--class-conditional", "--overwrite")
             if getattr(args, flag.lstrip("-").replace("-", "_"), None)]
    if given:
        raise UserError(f"--resume takes its config from RUN_DIR/config.yaml; only {extend_flag} may be given "
                        f"with it, not {', '.join(given)}")
    run_dir = Path(args.resume)
    name = f"--resume {shown(str(run_dir))}"
    if not run_dir.exists():
        raise UserError(f"{name}: no such folder")
    if not run_dir.is_dir():
        raise UserError(f"{name}: not a folder; expected a {command} run folder")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{name}: no config.yaml there (not a {command} run folder)")
    kind = run_kind(run_dir)
    if kind is not None and kind != command:
        raise UserError(f"{name} is a {kind} run, not a {command} run; continue it with fastad {kind} --resume "
                        f"{run_dir}")
    saved = load_config(run_dir / "config.yaml")
    if not (run_dir / "last.pt").is_file():
        raise UserError(f"{name}: no last.pt there (the run stopped before its first checkpoint); start it again "
                        f"with --out {run_dir} --overwrite")
    try:
        state = load_resume_state(run_dir)  # a file cut short or corrupt is a one-line UserError
    except UserError:
        raise
    except Exception as e:  # torch's errors for a file cut short or not a checkpoint at all
        why = " ".join(str(e).split())[:80]
        raise UserError(f"{name}: last.pt is cut short or corrupt ({type(e).__name__}: {why}); it cannot be "
                        f"resumed (best.pt, if there, holds the best weights)") from None
    expected = CHECKPOINT_KEYS[command]
    if not isinstance(state, dict) or any(k not in state for k in expected):
        held = ", ".join(map(str, list(state)[:6])) if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{name}: last.pt is not a {command} checkpoint (it holds {held}; expected "
                        f"{', '.join(expected)})")
    done = {"train-teacher": lambda st: st["epoch"], "distill": lambda st: st["progress"]["round"],
            "train-diffusion": lambda st: st["step"]}[command](state)
    if extend is not None and isinstance(done, int) and extend < done:
        raise UserError(f"{extend_flag}: got {extend}; the run in '{run_dir}' has already done {done}, expected "
                        f">= {done}")
    cfg = load_config(saved, [f"{extend_key}={extend}"] if extend is not None else [])
    if cfg != saved:
        save_config(cfg, run_dir / "config.yaml", command=command)  # an extended run's config says so
    return cfg, run_dir


@contextlib.contextmanager
def unchanged_on_refusal(run_dir: str | Path) -> Iterator[None]:
    """A resume refused after its config.yaml was extended (a teacher file gone, ...) puts the old config.yaml
    back, as long as the run has not moved on (its last.pt is the same file)."""
    config, last = Path(run_dir) / "config.yaml", Path(run_dir) / "last.pt"

    def stamp() -> tuple[int, int] | None:
        try:
            st = last.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    try:
        text = config.read_bytes() if config.is_file() else None
    except OSError:
        text = None
    before = stamp()
    try:
        yield
    except UserError:
        if text is not None and stamp() == before and config.read_bytes() != text:
            config.write_bytes(text)
        raise


@contextlib.contextmanager
def overwrite(allowed: bool) -> Iterator[None]:
    """--overwrite for the duration of one command (:func:`fastad.utils.runtime.prepare_run` reads it)."""
    from fastad.utils.runtime import OVERWRITE

    token = OVERWRITE.set(bool(allowed))
    try:
        yield
    finally:
        OVERWRITE.reset(token)


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
    keys = {"teacher": "teacher_checkpoint", "prior": "diffusion_checkpoint"}
    user_keys = {kv.split("=", 1)[0].strip() for kv in args.set}
    given = [n for n, k in keys.items() if (own or {}).get(n) or f"distillation.{k}" in user_keys]
    args.set = [f"distillation.{k}={REPO / d[k]}" for k in keys.values()] + list(args.set)  # the user's --set wins
    models = " and ".join([*(f"your {n}" for n in given), *(f"the shipped {n}" for n in keys if n not in given)])
    print(f"fastad {command}: no --config, running the embedded default ({EMBEDDED_CONFIG.relative_to(REPO)} with "
          f"{models})", flush=True)
