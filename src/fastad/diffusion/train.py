"""``fastad train-diffusion``: train an eps-prediction ``UNet2DModel`` prior with the DDPM objective.

Outputs in the run folder: config.yaml, metrics.jsonl, TensorBoard events, ``samples/step_XXXXXX.png``
(DDIM grids from the EMA weights), last.pt (resumable, atomic, ``weights_only``-loadable),
``prior/`` (diffusers pipeline folder of the EMA UNet, with a record of the data it saw) and
summary.json.

Labels: :func:`training_data` keeps the labels only for a class-conditional prior; an
unconditional run's loop receives ``labels=None`` and so cannot read them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from fastad import __version__
from fastad.config import Config
from fastad.data import DATASETS, DatasetInfo, augment, load_dataset, to_float
from fastad.diffusion.ddim import ddim_timesteps
from fastad.diffusion.prior import Prior, build_unet, load_prior, save_prior
from fastad.diffusion.sampling import cyclic_labels, sample_prior
from fastad.errors import UserError
from fastad.utils.images import save_grid, to_uint8, view_scale
from fastad.utils.io import atomic_json, atomic_torch_save, drop_rows_after, load_resume_state
from fastad.utils.logger import RunLogger
from fastad.utils.runtime import resolve_device, rng_state, seed_everything, set_rng_state
from fastad.utils.threads import set_threads

# What a train-diffusion last.pt must hold (its "commands" are optional: older runs lack them).
_STATE_KEYS = ("model", "ema", "optimizer", "scheduler", "rng", "step", "wall_seconds", "recent_losses")

__all__ = ["TrainData", "training_data", "noise_schedule", "ddpm_loss", "train_diffusion"]


@dataclass
class TrainData:
    """Everything the training loop may read: the selected images, and labels only if conditional."""

    images: Tensor  # uint8 [N, C, H, W], exactly the selected train images
    labels: Optional[Tensor]  # int64 [N] original class ids; None unless diffusion.class_conditional
    info: DatasetInfo
    source: dict[str, Any]  # ImageDataset.source: dataset, split, index_range, classes, num_images, files


def training_data(cfg: Config) -> TrainData:
    """Load ``data.dataset``'s train split restricted to ``data.train_range`` / ``data.classes``.

    The labels are dropped here (not merely ignored later) for an unconditional prior.
    """
    d = cfg.data
    if not d.dataset:
        raise UserError("config key 'data.dataset' is not set; train-diffusion trains on a dataset: --dataset NAME or "
                        f"--set data.dataset=NAME (one of {', '.join(DATASETS)})")
    ds = load_dataset(d.dataset, "train", root=d.root,
                      index_range=tuple(d.train_range) if d.train_range else None, classes=d.classes,
                      range_key="config key 'data.train_range'")
    labels = ds.labels if cfg.diffusion.class_conditional else None
    return TrainData(ds.images, labels, ds.info, dict(ds.source))


def noise_schedule(cfg: Config) -> Tensor:
    """``alphas_cumprod`` float64 ``[T]``, computed as :func:`~fastad.diffusion.load_prior` will
    recompute it from the saved scheduler config (DDIMScheduler betas, float64 cumprod)."""
    from diffusers import DDIMScheduler

    d = cfg.diffusion
    betas = DDIMScheduler(num_train_timesteps=d.num_train_timesteps, beta_schedule=d.beta_schedule,
                          beta_start=d.beta_start, beta_end=d.beta_end).betas
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


def ddpm_loss(unet: nn.Module, x0: Tensor, t: Tensor, noise: Tensor, alphas_cumprod: Tensor,
              class_labels: Optional[Tensor] = None) -> Tensor:
    """The DDPM "simple" objective: ``||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t)||^2``.

    Args:
        x0: ``[B, C, H, W]`` clean images in [-1, 1]; noise: same shape, standard normal.
        t: ``[B]`` long timesteps in ``[0, T)``; alphas_cumprod: float64 ``[T]`` (CPU).
        class_labels: ``[B]`` long for a class-conditional UNet, else None.

    Returns:
        Scalar MSE (mean over every element), float32.
    """
    abar = alphas_cumprod[t.cpu()].view(-1, 1, 1, 1)  # coefficients in float64, then cast
    x_t = abar.sqrt().to(x0) * x0 + (1 - abar).sqrt().to(x0) * noise
    pred = unet(x_t, t.to(x0.device), class_labels=class_labels).sample
    return F.mse_loss(pred.float(), noise.float())


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _init_from(unet: nn.Module, path: str) -> None:
    """Start ``unet`` from the weights of the prior folder ``path`` (``diffusion.init_from``)."""
    try:
        source = load_prior(path).unet
    except UserError as e:
        raise UserError(f"config key 'diffusion.init_from': {e}") from None
    try:
        unet.load_state_dict(source.state_dict())
    except RuntimeError:
        raise UserError(f"config key 'diffusion.init_from': the prior '{path}' has another architecture than "
                        f"diffusion.block_out_channels/layers_per_block/attention/class_conditional describe; "
                        "set those to the prior's") from None


def _git_commit() -> Optional[str]:
    """The commit of the fastad source tree, if it is a git checkout (provenance only)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _grid_labels(cfg: Config, data: TrainData, n: int) -> Optional[Tensor]:
    """Balanced labels over the classes the prior was trained on (conditional priors only)."""
    if not cfg.diffusion.class_conditional:
        return None
    classes = torch.tensor(list(data.source["classes"] or range(data.info.num_classes)))
    return classes[cyclic_labels(n, len(classes))]


def _write_grid(path: Path, ema: nn.Module, abar: Tensor, cfg: Config, data: TrainData) -> Path:
    """A DDIM sample grid from the EMA weights. Its noise comes from a generator seeded with
    ``run.seed``, never from the training generator: grids are comparable across steps and do not
    change the training trajectory (resume stays exact)."""
    d, info = cfg.diffusion, data.info
    prior = Prior(unet=ema, alphas_cumprod=abar, num_train_timesteps=d.num_train_timesteps,
                  sample_shape=(info.channels, *info.image_size),
                  num_class_embeds=getattr(ema.config, "num_class_embeds", None), prediction_type="epsilon",
                  scheduler_config={}, path=str(path.parent))
    x = sample_prior(prior, d.sample_images, steps=d.sample_steps, generator=torch.Generator().manual_seed(cfg.run.seed),
                     batch_size=min(d.sample_images, 256), class_labels=_grid_labels(cfg, data, d.sample_images),
                     clip_x0=d.sample_clip)
    return save_grid(path, to_uint8(x), scale=view_scale(info.image_size[1]))


def train_diffusion(cfg: Config, out: Path, *, resume: bool = False, command: Optional[str] = None) -> dict:
    """Train the prior described by ``cfg.diffusion`` on ``cfg.data``; returns the summary dict.

    With ``resume``, continues from ``out/last.pt`` up to ``cfg.diffusion.steps`` (which may have
    been raised to extend a finished run). On CPU, N steps in two resumed halves give bit-identical
    weights to N steps straight: every random draw (batch indices, flips, t, noise) comes from one
    CPU generator whose state is checkpointed.
    """
    set_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    gen = seed_everything(cfg.run.seed)
    d = cfg.diffusion
    if d.sample_steps > d.num_train_timesteps:
        raise UserError(f"config key 'diffusion.sample_steps': got {d.sample_steps}; expected <= "
                        f"diffusion.num_train_timesteps ({d.num_train_timesteps})")
    ddim_timesteps(d.num_train_timesteps, d.sample_steps)  # any other bad sampling option fails now

    data = training_data(cfg)
    info = data.info
    if info.image_size[0] != info.image_size[1]:
        raise UserError(f"{info.name}: images are {info.image_size[0]}x{info.image_size[1]}; train-diffusion needs square images")
    unet = build_unet(sample_size=info.image_size[0], in_channels=info.channels,
                      block_out_channels=tuple(d.block_out_channels), layers_per_block=d.layers_per_block,
                      attention=d.attention, num_class_embeds=info.num_classes if d.class_conditional else None).to(device)
    if d.init_from and not resume:  # a resumed run's weights come from its last.pt
        _init_from(unet, d.init_from)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    abar = noise_schedule(cfg)
    opt = torch.optim.AdamW(unet.parameters(), lr=d.lr, weight_decay=d.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / d.warmup_steps) if d.warmup_steps else 1.0)

    step, wall_prev, recent, commands = 0, 0.0, deque(maxlen=100), []
    ckpt_path = out / "last.pt"
    if resume:
        state = load_resume_state(out, required=_STATE_KEYS, command="train-diffusion")
        if state["step"] > d.steps:
            raise UserError(f"--resume: '{out}' is at step {state['step']}, beyond diffusion.steps={d.steps}")
        try:
            unet.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"], gen)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            why = " ".join(str(e).split())[:200]
            raise UserError(f"--resume: '{ckpt_path}' does not fit the run's config.yaml: {why}") from None
        drop_rows_after(out / "metrics.jsonl", state["step"])  # steps logged after the checkpoint are redone
        step, wall_prev, recent = state["step"], state["wall_seconds"], deque(state["recent_losses"], maxlen=100)
        commands = list(state.get("commands", []))
    commands.append(command)  # every command that contributed steps, for provenance

    def save_checkpoint() -> None:
        atomic_torch_save({"model": unet.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                           "scheduler": sched.state_dict(), "rng": rng_state(gen), "step": step,
                           "wall_seconds": time.time() - t0, "recent_losses": list(recent),
                           "commands": commands}, ckpt_path)

    images = data.images.to(device)  # uint8 on the device: 10k 28x28 images are 8 MB
    labels = None if data.labels is None else data.labels.to(device)
    flip = d.flip and info.flip
    logger = RunLogger(out, tensorboard=cfg.logging.tensorboard)
    grids: list[Path] = []
    t0 = time.time() - wall_prev  # wall time survives a resume
    t_log, n_log, loss_sum = time.time(), 0, 0.0
    unet.train()
    bar = tqdm(total=d.steps, initial=step, desc="train-diffusion", unit="step", disable=not cfg.logging.progress)
    while step < d.steps:
        # Batches are drawn with replacement: the generator state alone is the position in the data,
        # which is what makes resume exact without storing a permutation.
        idx = torch.randint(len(images), (d.batch_size,), generator=gen)
        x0 = to_float(images[idx.to(device)]) * 2 - 1  # [B, C, H, W] in [-1, 1]
        if flip:
            x0 = augment(x0, crop_padding=0, flip=True, generator=gen)
        t = torch.randint(d.num_train_timesteps, (d.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        loss = ddpm_loss(unet, x0, t, noise, abar, None if labels is None else labels[idx.to(device)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(unet.parameters(), d.grad_clip if d.grad_clip > 0 else math.inf)
        opt.step()
        sched.step()
        step += 1
        # EMA warm-up (as diffusers' EMAModel): a short run's EMA is not stuck near the random init.
        ema_update(ema, unet, min(d.ema_decay, (1 + step) / (10 + step)))

        value = loss.item()
        recent.append(value)
        loss_sum, n_log = loss_sum + value, n_log + 1
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
        if step % cfg.logging.log_every == 0 or step == d.steps:
            now = time.time()
            logger.log(step, {"train/loss": loss_sum / n_log, "train/lr": sched.get_last_lr()[0],
                              "train/grad_norm": float(grad_norm), "train/steps_per_s": n_log / max(now - t_log, 1e-9)})
            t_log, n_log, loss_sum = now, 0, 0.0
        if d.sample_every and (step % d.sample_every == 0 or step == d.steps):
            grids.append(_write_grid(out / "samples" / f"step_{step:06d}.png", ema, abar, cfg, data))
            unet.train()
        if step % d.save_every == 0 or step == d.steps:
            save_checkpoint()
    bar.close()
    if not ckpt_path.is_file():  # resumed a finished run: nothing ran, but keep the contract
        save_checkpoint()
    wall = time.time() - t0
    logger.close()

    src = data.source
    final_loss = sum(recent) / len(recent) if recent else float("nan")
    meta = {
        "kind": "diffusion_prior", "dataset": src["dataset"], "split": src["split"],
        "index_range": src["index_range"], "classes": src["classes"], "num_images": src["num_images"],
        "source": src, "class_conditional": d.class_conditional, "labels_read": d.class_conditional,
        "class_names": list(info.class_names), "channels": info.channels, "image_size": list(info.image_size),
        "steps": step, "batch_size": d.batch_size, "wall_seconds": wall, "final_loss": final_loss,
        "diffusion": dataclasses.asdict(d), "seed": cfg.run.seed, "command": command, "commands": commands,
        "git_commit": _git_commit(), "fastad_version": __version__,
    }
    prior_dir = save_prior(out / "prior", ema, num_train_timesteps=d.num_train_timesteps, beta_schedule=d.beta_schedule,
                           beta_start=d.beta_start, beta_end=d.beta_end, metadata=meta, overwrite=True)
    summary = {**meta, "prior": str(prior_dir), "samples": str(out / "samples"), "grids": [str(g) for g in grids],
               "parameters": sum(p.numel() for p in ema.parameters())}
    atomic_json(summary, out / "summary.json")
    return summary
