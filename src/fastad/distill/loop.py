"""``fastad distill``: the online loop of the paper's Sec. 3.5 (docs/method.md).

Per round: synthesise ``synthesis_batch_size`` images for balanced random targets, push them into
the FIFO buffer, then ``train_iterations`` KD steps of the student on buffer batches (crop/flip).
Every ``eval_every`` rounds the student is scored on the real test split, the only real data read.
``distillation.synthesizer: deepinversion`` swaps the prior for DeepInversion (the benchmark's
baseline); ``distillation.max_seconds`` ends the run early on a synthesis + training time budget.
State is checkpointed atomically after every round; ``--resume`` continues bit-identically on CPU.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from fastad.buffer import ReplayBuffer
from fastad.config import Config
from fastad.data import dataset_info, load_dataset, make_view
from fastad.distill.build import build
from fastad.errors import UserError
from fastad.guidance.routing import balanced_labels
from fastad.models import save_classifier
from fastad.train.evaluate import accuracy_report, predict
from fastad.train.kd import kd_step
from fastad.utils.images import save_grid, to_uint8
from fastad.utils.io import atomic_json, atomic_torch_save, load_resume_state
from fastad.utils.logger import RunLogger
from fastad.utils.runtime import resolve_device, rng_state, seed_everything, set_rng_state, set_threads
from fastad.utils.schedule import budget_position, lr_factor


@dataclass
class Timing:
    synthesis: float = 0.0
    training: float = 0.0
    evaluation: float = 0.0

    def total(self) -> float:
        return self.synthesis + self.training + self.evaluation


@dataclass
class Progress:
    """Everything besides model/optimiser/buffer state that a resumed run needs."""

    round: int = 0
    images: int = 0
    best_top1: float = -1.0
    last_top1: float | None = None
    last_per_class: list[float] | None = None
    teacher_top1: float | None = None
    stopped_by_budget: bool = False
    timing: Timing = field(default_factory=Timing)


def distill(cfg: Config, out: Path, *, resume: bool = False) -> dict:
    """Run (or resume) a distillation; returns the summary written to ``summary.json``."""
    set_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    gen = seed_everything(cfg.run.seed)
    d = cfg.distillation
    t_start = time.time()

    # Only the test split is read (the data-free rule); the train split's files are never opened.
    test = load_dataset(cfg.data.dataset, "test", root=cfg.data.root)
    info = test.info
    if info.num_classes != d.num_classes:
        raise UserError(f"config key 'distillation.num_classes': got {d.num_classes} but dataset "
                        f"'{info.name}' has {info.num_classes} classes")
    parts = build(cfg, info, device=device, generator=gen)
    teacher, student, synth, mean, std, view = (parts.teacher, parts.student, parts.synthesizer, parts.mean,
                                                parts.std, parts.view)
    opt = torch.optim.SGD(student.parameters(), lr=d.lr, momentum=d.momentum, weight_decay=d.weight_decay)
    buffer = ReplayBuffer(d.buffer_size)
    # The student's view of buffer images: the teacher's input, with the dataset's crop/flip when augmenting.
    train_view = make_view(mean, std, crop_padding=info.crop_padding if d.augment else 0,
                           flip=info.flip and d.augment, generator=gen)
    guided_mask = getattr(synth, "guided_mask", None)  # DeepInversion aims at every target

    stats_prefix = "guidance" if d.synthesizer == "diffusion" else "deepinversion"
    prog = Progress()
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume:
        state = load_resume_state(out)
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        buffer.load_state_dict(state["buffer"])
        if hasattr(synth, "load_state_dict"):
            synth.load_state_dict(state.get("synthesis", {}))
        set_rng_state(state["rng"], gen)
        p = state["progress"]
        prog = Progress(**{**p, "timing": Timing(**p["timing"])})
    if prog.teacher_top1 is None and d.evaluate_teacher:
        t0 = time.time()
        logits, labels = predict(teacher, test, mean=mean, std=std, batch_size=cfg.data.eval_batch_size, device=device)
        prog.teacher_top1 = accuracy_report(logits, labels, num_classes=d.num_classes)["top1"]
        prog.timing.evaluation += time.time() - t0

    if resume:
        _drop_rows_after(out / "metrics.jsonl", prog.round)  # rounds logged after the checkpoint are redone
    logger = RunLogger(out, tensorboard=cfg.logging.tensorboard)
    bar = _progress_bar(d, prog, disable=not cfg.logging.progress)
    try:
        while prog.round < d.epochs and not prog.stopped_by_budget:
            rnd = prog.round + 1
            lr = d.lr * lr_factor(d.schedule, _schedule_position(prog, d), d.epochs, d.milestones, d.lr_decay)
            for group in opt.param_groups:
                group["lr"] = lr
            # 1. synthesis (student in eval: the adversarial term must not touch its BN statistics)
            t0 = time.time()
            student.eval()
            targets = balanced_labels(d.synthesis_batch_size, d.num_classes, generator=gen)
            if hasattr(synth, "plan_targets"):
                targets = synth.plan_targets(targets, generator=gen)
            synth.stats.reset()
            aimed = torch.ones(len(targets), dtype=torch.bool) if guided_mask is None else guided_mask(targets).cpu()
            images = synth(targets, generator=gen)
            with torch.no_grad():  # does the teacher see the target class in what was synthesised?
                probs = teacher(view(images)).softmax(1).cpu()
            agreement = 100.0 * (probs.argmax(1) == targets).float().mean().item()
            buffer.push(images.cpu(), targets)
            newest = images.cpu()
            captions = _captions(info.class_names, targets, probs, aimed)
            prog.images += len(targets)
            _export(cfg, out, rnd, newest, targets)
            prog.timing.synthesis += time.time() - t0

            # 2. student updates on buffer batches
            t0 = time.time()
            student.train()
            losses = []
            for _ in range(d.train_iterations):
                x, _y = buffer.sample(d.train_batch_size, generator=gen)
                losses.append(kd_step(student, teacher, train_view(x.to(device)), opt, tau=d.kd_temperature)["kd_loss"])
            prog.timing.training += time.time() - t0

            # The budget counts synthesis + training only, so evaluation frequency does not change it.
            budget = d.max_seconds > 0 and prog.timing.synthesis + prog.timing.training >= d.max_seconds
            record = {"round": rnd, "train/kd_loss": float(np.mean(losses)), "train/lr": lr,
                      "images_synthesized": prog.images, "buffer_size": len(buffer),
                      "synthesis/teacher_agreement": agreement,
                      "synthesis/teacher_confidence": probs.max(1).values.mean().item(),
                      **{f"{stats_prefix}/{k}": v for k, v in synth.stats.summary().items()}}
            # 3. evaluation on the real test split
            if rnd % d.eval_every == 0 or rnd == d.epochs or budget:
                t0 = time.time()
                logits, labels = predict(student, test, mean=mean, std=std, batch_size=cfg.data.eval_batch_size,
                                         device=device)
                rep = accuracy_report(logits, labels, num_classes=d.num_classes)
                prog.last_top1, prog.last_per_class = rep["top1"], rep["per_class"]
                record.update({"eval/top1": rep["top1"], "eval/top5": rep.get("top5")})
                save_grid(out / "grids" / f"round_{rnd:05d}.png", to_uint8(newest), scale=2, captions=captions)
                prog.timing.evaluation += time.time() - t0
                if rep["top1"] > prog.best_top1:
                    prog.best_top1 = rep["top1"]
                    atomic_torch_save({"student": student.state_dict(), "round": rnd, "top1": rep["top1"]}, best_path)
            prog.round, prog.stopped_by_budget = rnd, budget
            record.update({"time/synthesis": prog.timing.synthesis, "time/training": prog.timing.training,
                           "time/evaluation": prog.timing.evaluation})
            logger.log(rnd, record)
            atomic_torch_save({"student": student.state_dict(), "optimizer": opt.state_dict(),
                               "buffer": buffer.state_dict(),
                               "synthesis": synth.state_dict() if hasattr(synth, "state_dict") else {},
                               "rng": rng_state(gen), "progress": _progress_dict(prog)}, last_path)
            _advance(bar, d, prog, loss=record["train/kd_loss"])
    finally:
        bar.close()
        logger.close()

    diffusion = d.synthesizer == "diffusion"
    guidance, prior_path = (cfg.fast_ad.guidance, d.diffusion_checkpoint) if diffusion else (None, None)
    meta = {"kind": "classifier", "arch": d.student_arch, "num_classes": d.num_classes, "in_channels": info.channels,
            "input_size": list(info.image_size), "dataset": info.name, "class_names": list(info.class_names),
            "mean": list(mean), "std": list(std), "test_top1": prog.last_top1,
            "distilled_from": d.teacher_checkpoint, "synthesizer": d.synthesizer, "prior": prior_path,
            "guidance": guidance,
            "images_synthesized": prog.images}
    save_classifier(out / "student.safetensors", student, meta)
    summary = {"teacher_top1": prog.teacher_top1, "student_top1": prog.last_top1,
               "student_per_class": prog.last_per_class, "best_student_top1": prog.best_top1,
               "images_synthesized": prog.images, "rounds": prog.round,
               "wall_seconds": prog.timing.total(), "synthesis_seconds": prog.timing.synthesis,
               "training_seconds": prog.timing.training, "evaluation_seconds": prog.timing.evaluation,
               "session_seconds": time.time() - t_start, "synthesizer": d.synthesizer, "guidance": guidance,
               "stopped_by_budget": prog.stopped_by_budget, "out": str(out),
               "student": str(out / "student.safetensors")}
    atomic_json(summary, out / "summary.json")
    return summary


def _schedule_position(prog: Progress, d) -> float:
    """Where the lr schedule stands, in rounds: the rounds done or, under a ``max_seconds`` budget, the
    share of the budget spent times ``epochs`` if that is further (the schedule ends with the budget)."""
    return budget_position(prog.round, d.epochs, prog.timing.synthesis + prog.timing.training, d.max_seconds)


def _captions(names: list[str], targets: Tensor, probs: Tensor, aimed: Tensor) -> list[str]:
    """Grid captions: the target class where something aimed at it, then the teacher's reading."""
    conf, pred = probs.max(1)
    return [(f"{names[y]}\n" if a else "") + f"{names[p]} ({c:.0%})"
            for y, p, c, a in zip(targets.tolist(), pred.tolist(), conf.tolist(), aimed.tolist())]


def _progress_bar(d, prog: Progress, *, disable: bool) -> tqdm:
    """Rounds, or under a ``max_seconds`` budget the budget's seconds (the run ends on whichever comes first)."""
    if d.max_seconds > 0:
        spent = prog.timing.synthesis + prog.timing.training
        return tqdm(total=round(d.max_seconds), initial=min(round(spent), round(d.max_seconds)), disable=disable,
                    desc=f"distill (budget {d.max_seconds:g} s)", unit="s",
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")
    return tqdm(total=d.epochs, initial=prog.round, desc="distill", disable=disable, unit="round")


def _advance(bar: tqdm, d, prog: Progress, *, loss: float) -> None:
    if d.max_seconds > 0:
        bar.update(min(round(prog.timing.synthesis + prog.timing.training), bar.total) - bar.n)
    else:
        bar.update(1)
    bar.set_postfix(round=prog.round, images=prog.images, loss=f"{loss:.3f}",
                    acc="-" if prog.last_top1 is None else f"{prog.last_top1:.1f}")


def _drop_rows_after(path: Path, last_round: int) -> None:
    if path.is_file():
        rows = [r for r in path.read_text().splitlines() if r.strip() and json.loads(r)["step"] <= last_round]
        path.write_text("".join(r + "\n" for r in rows))


def _progress_dict(p: Progress) -> dict:
    return {"round": p.round, "images": p.images, "best_top1": p.best_top1, "last_top1": p.last_top1, "last_per_class": p.last_per_class,
            "teacher_top1": p.teacher_top1, "stopped_by_budget": p.stopped_by_budget,
            "timing": vars(p.timing).copy()}


def _export(cfg: Config, out: Path, rnd: int, images: Tensor, labels: Tensor) -> None:
    """``--save-images``: every synthesised image, for offline reuse (uint8, as the buffer stores them)."""
    mode = cfg.distillation.save_images
    if mode == "none":
        return
    u8 = to_uint8(images)
    folder = out / "synthetic"
    if mode == "npz":
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / f"round_{rnd:05d}.npz", images=u8.numpy(), labels=labels.numpy())
        return
    from PIL import Image

    names = dataset_info(cfg.data.dataset, root=cfg.data.root).class_names
    for i, (img, y) in enumerate(zip(u8, labels.tolist())):
        d = folder / names[y].replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        arr = img.permute(1, 2, 0).numpy()
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(d / f"r{rnd:05d}_{i:03d}.png")
