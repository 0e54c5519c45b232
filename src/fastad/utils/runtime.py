"""Run set-up shared by every command: device, threads, seeds, the run folder."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch

from fastad.config import Config, save_config
from fastad.errors import UserError


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda when available; an unavailable device is a UserError, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"config key 'run.device': got {name!r} but CUDA is not available here; use cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"config key 'run.device': got {name!r}; this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"config key 'run.device': got {name!r} but MPS is not available here")
    return dev


def set_threads(n: int) -> None:
    """n > 0 pins torch's intra-op threads; 0 keeps torch's own choice (its default is the core count)."""
    if n > 0:
        torch.set_num_threads(n)


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


def prepare_run(cfg: Config, command: str) -> Path:
    """Create the run folder (default runs/<command>-<timestamp>) and write config.yaml into it."""
    out = Path(cfg.run.out) if cfg.run.out else Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' exists and is not a folder")
    if (out / "last.pt").exists():  # never overwrite a run's checkpoints and logs
        raise UserError(f"--out '{out}' already holds a {command} run; continue it with --resume {out} "
                        "or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out '{out}': cannot create the folder ({e.strerror})") from None
    cfg.run.out = str(out)
    save_config(cfg, out / "config.yaml")
    return out


def sync_scheduler_lr(sched: torch.optim.lr_scheduler.LambdaLR) -> None:
    """After loading a LambdaLR's state: set the current lr from *this* run's lambda, so a run extended
    with a longer schedule continues on the new curve (for a plain resume the value is unchanged)."""
    for group, base, fn in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
        group["lr"] = base * fn(sched.last_epoch)
    sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]
