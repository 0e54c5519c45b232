"""``fastad train-teacher``: supervised training of a zoo classifier on a real dataset.

Outputs in the run folder: config.yaml, metrics.jsonl, TensorBoard events, last.pt (resumable,
written atomically each epoch), teacher.safetensors (weights + metadata) and summary.json.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from fastad.config import Config
from fastad.errors import UserError
from fastad.data import DATASETS, augment, iterate_batches, load_dataset, to_float
from fastad.models import create_model, save_classifier
from fastad.train.evaluate import accuracy_report, normalizer, predict
from fastad.utils.io import atomic_json, atomic_torch_save, load_resume_state
from fastad.utils.logger import RunLogger
from fastad.utils.runtime import (
    resolve_device, rng_state, seed_everything, set_rng_state, sync_scheduler_lr,
)
from fastad.utils.threads import set_threads
from fastad.utils.schedule import lr_factor


def lr_lambda(cfg: Config, iters_per_epoch: int):
    """Multiplier of the base lr at iteration i: optional linear warm-up, then cosine or step decay."""
    t = cfg.teacher_training
    total = t.epochs * iters_per_epoch
    warm = int(t.warmup_epochs * iters_per_epoch)

    def f(i: int) -> float:
        if i < warm:
            return (i + 1) / warm
        if t.schedule == "cosine":
            return lr_factor("cosine", i - warm, max(1, total - warm), t.milestones, t.lr_decay)
        return lr_factor("step", i // iters_per_epoch, total, t.milestones, t.lr_decay)  # milestones in epochs

    return f


@dataclass
class TeacherSetup:
    """Everything a teacher run reads, loaded and checked before its folder is made."""

    device: torch.device
    generator: torch.Generator
    train: Any
    test: Any


def setup_teacher(cfg: Config) -> TeacherSetup:
    """Check and load what :func:`train_teacher` needs (device, data, model): a bad value fails here, before
    any run folder exists."""
    set_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    gen = seed_everything(cfg.run.seed)
    t, d = cfg.teacher_training, cfg.data
    if not d.dataset:
        raise UserError("config key 'data.dataset' is not set; train-teacher trains on a dataset: --dataset NAME or "
                        f"--set data.dataset=NAME (one of {', '.join(DATASETS)})")
    train = load_dataset(d.dataset, "train", root=d.root,
                         index_range=tuple(d.train_range) if d.train_range else None, classes=d.classes,
                         range_key="config key 'data.train_range'")
    test = load_dataset(d.dataset, "test", root=d.root)
    if len(train) == 0:
        raise UserError(f"config keys 'data.train_range' / 'data.classes' select no images of {d.dataset}'s train split")
    create_model(t.arch, num_classes=train.info.num_classes, in_channels=train.info.channels)  # fails now if it must
    return TeacherSetup(device, gen, train, test)


def train_teacher(cfg: Config, out: Path, *, resume: bool = False, setup: TeacherSetup | None = None) -> dict:
    """Train ``cfg.teacher_training.arch`` on ``cfg.data``; returns the summary dict. ``setup``: from
    :func:`setup_teacher` (called here when not given)."""
    s = setup or setup_teacher(cfg)
    device, gen, train, test = s.device, s.generator, s.train, s.test
    t, d = cfg.teacher_training, cfg.data
    info = train.info
    model = create_model(t.arch, num_classes=info.num_classes, in_channels=info.channels).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                          nesterov=t.momentum > 0)
    iters = math.ceil(len(train) / t.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, iters))
    norm = normalizer(info.mean, info.std)

    start_epoch, best, history = 0, 0.0, []
    ckpt_path = out / "last.pt"
    if resume:
        state = load_resume_state(out)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        sync_scheduler_lr(sched)
        set_rng_state(state["rng"], gen)
        start_epoch, best, history = state["epoch"], state["best_top1"], state["history"]

    images = train.images.to(device)
    labels = train.labels.to(device)
    logger = RunLogger(out, tensorboard=cfg.logging.tensorboard)
    t0 = time.time() - (history[-1]["wall_seconds"] if history else 0.0)  # wall time survives a resume
    for epoch in range(start_epoch, t.epochs):
        model.train()
        bar = tqdm(iterate_batches((images, labels), t.batch_size, shuffle=True, generator=gen), total=iters,
                   desc=f"epoch {epoch + 1}/{t.epochs}", disable=not cfg.logging.progress, leave=False)
        run_loss = run_correct = run_n = 0.0
        for i, (xb, yb) in enumerate(bar):
            x = to_float(xb)
            if t.augment:
                x = augment(x, crop_padding=info.crop_padding, flip=info.flip, generator=gen)
            logits = model(norm(x))
            loss = F.cross_entropy(logits, yb, label_smoothing=t.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss += loss.item() * len(yb)
            run_correct += (logits.argmax(1) == yb).sum().item()
            run_n += len(yb)
            step = epoch * iters + i + 1
            if step % cfg.logging.log_every == 0:
                logger.log(step, {"train/loss": loss.item(), "train/lr": sched.get_last_lr()[0]})
                bar.set_postfix(loss=f"{run_loss / run_n:.3f}", acc=f"{100 * run_correct / run_n:.1f}")
        logits, ytest = predict(model, test, mean=info.mean, std=info.std, batch_size=d.eval_batch_size,
                                device=device)
        report = accuracy_report(logits, ytest, num_classes=info.num_classes)
        best = max(best, report["top1"])
        row = {"epoch": epoch + 1, "train_loss": run_loss / run_n, "train_top1": 100 * run_correct / run_n,
               "test_top1": report["top1"], "test_top5": report.get("top5"), "wall_seconds": time.time() - t0}
        history.append(row)
        logger.log((epoch + 1) * iters, {f"epoch/{k}": v for k, v in row.items()})
        tqdm.write(f"epoch {epoch + 1}/{t.epochs}: loss {row['train_loss']:.4f}  train {row['train_top1']:.2f}%  "
                   f"test top-1 {report['top1']:.2f}%  ({row['wall_seconds']:.0f}s)")
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                           "rng": rng_state(gen), "epoch": epoch + 1, "best_top1": best, "history": history}, ckpt_path)
    logger.close()

    final = history[-1]
    meta = {
        "kind": "classifier", "arch": t.arch, "num_classes": info.num_classes, "in_channels": info.channels,
        "input_size": list(info.image_size), "dataset": info.name, "class_names": list(info.class_names),
        "mean": list(info.mean), "std": list(info.std), "test_top1": final["test_top1"],
        "test_top5": final["test_top5"], "epochs": t.epochs, "trained_on": train.source,
    }
    save_classifier(out / "teacher.safetensors", model, meta)
    summary = {**meta, "wall_seconds": final["wall_seconds"], "history": history,
               "checkpoint": str(out / "teacher.safetensors")}
    atomic_json(summary, out / "summary.json")
    return summary
