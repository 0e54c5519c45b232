"""Run set-up shared by every command: device, threads, seeds, the run folder."""

from __future__ import annotations

import contextvars
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from fastad.config import Config, save_config
from fastad.errors import UserError
from fastad.options import shown


def resolve_device(name: str, what: str = "config key 'run.device'") -> torch.device:
    """'auto' picks cuda when available; an unavailable device is a UserError, not a fallback. ``what``: how the
    message names the setting (``--device`` for commands that take no config)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"{what}: got {shown(name)}; expected auto, cpu, cuda, cuda:N or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{what}: got {shown(name)}; expected auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{what}: got {name!r} but CUDA is not available here; use cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"{what}: got {name!r}; this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{what}: got {name!r} but MPS is not available here")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for the run's own random draws."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(generator: torch.Generator | None = None) -> dict:
    """Every RNG state a run depends on, for exact resume."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    # numpy's key array as a tensor: checkpoints must load with torch.load(weights_only=True).
    numpy_state = [name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


# A run folder holds a run once it has any of these (config.yaml alone is a run that stopped before its
# first checkpoint: nothing to lose, so it is started over).
RUN_OUTPUTS = ("last.pt", "summary.json", "best.pt", "teacher.safetensors", "student.safetensors", "prior")
# What each command's last.pt holds (to tell runs apart when config.yaml names no command).
CHECKPOINT_KEYS = {"train-teacher": ("model", "optimizer", "scheduler", "epoch"),
                   "distill": ("student", "optimizer", "buffer", "progress"),
                   "train-diffusion": ("model", "ema", "optimizer", "step")}
# Set by the command line's --overwrite for the duration of one command (the API's distill reaches
# prepare_run without a flag of its own).
OVERWRITE: contextvars.ContextVar[bool] = contextvars.ContextVar("fastad_overwrite", default=False)


def run_kind(folder: Path) -> str | None:
    """Which command made the run in ``folder``: recorded in its config.yaml, else told by its files."""
    from fastad.config.loader import run_command

    recorded = run_command(folder / "config.yaml")
    if recorded:
        return recorded
    if (folder / "teacher.safetensors").exists():
        return "train-teacher"
    if (folder / "student.safetensors").exists() or (folder / "grids").is_dir():
        return "distill"
    if (folder / "prior").is_dir() or (folder / "samples").is_dir():
        return "train-diffusion"
    return None


def default_out(command: str) -> Path:
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_out(out: str | Path | None, command: str, *, overwrite: bool | None = None) -> Path:
    """Refuse an output folder before any work: not a folder, not writable, or holding a run (unless
    ``overwrite``, default :data:`OVERWRITE`). Writes nothing."""
    out = Path(out) if out else default_out(command)
    overwrite = OVERWRITE.get() if overwrite is None else overwrite
    name = f"--out {shown(str(out))}"
    if out.exists() and not out.is_dir():
        raise UserError(f"{name} exists and is not a folder; expected a run folder")
    if out.is_dir():
        held = [n for n in RUN_OUTPUTS if (out / n).exists()]
        if held and not overwrite:
            kind = run_kind(out)
            what = f"a {kind} run" if kind else f"a run ({', '.join(held)})"
            resume = f"continue it with --resume {out}, " if kind == command else ""
            raise UserError(f"{name} already holds {what}; {resume}pass --overwrite to replace it, "
                            "or choose another --out")
        if not os.access(out, os.W_OK | os.X_OK):
            raise UserError(f"{name}: the folder is not writable")
    else:
        parent = out.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise UserError(f"{name}: '{parent}' is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"{name}: cannot create the folder ('{parent}' is not writable)")
    return out


def prepare_run(cfg: Config, command: str) -> Path:
    """Create the run folder (default runs/<command>-<timestamp>) and write config.yaml into it.

    Called once everything has been checked: an output folder that holds a run is refused (see
    :func:`check_out`) before anything is written, or replaced under --overwrite.
    """
    out = check_out(cfg.run.out, command)
    if OVERWRITE.get() and any((out / n).exists() for n in RUN_OUTPUTS):
        shutil.rmtree(out)  # only a folder that holds a fastad run (check_out) is ever removed
    try:
        out.mkdir(parents=True, exist_ok=True)
        cfg.run.out = str(out)
        save_config(cfg, out / "config.yaml", command=command)
    except OSError as e:
        raise UserError(f"--out {shown(str(out))}: cannot write the run folder ({e.strerror or e})") from None
    return out


def sync_scheduler_lr(sched: torch.optim.lr_scheduler.LambdaLR) -> None:
    """After loading a LambdaLR's state: set the current lr from *this* run's lambda, so a run extended
    with a longer schedule continues on the new curve (for a plain resume the value is unchanged)."""
    for group, base, fn in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
        group["lr"] = base * fn(sched.last_epoch)
    sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]
