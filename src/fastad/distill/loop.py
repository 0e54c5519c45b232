"""``fastad distill``: the online loop of DESIGN.md section 2 (Sec. 3.5 of the paper).

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
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from fastad.buffer import ReplayBuffer
from fastad.config import Config
from fastad.data import augment, dataset_info, load_dataset
from fastad.diffusion import load_prior
from fastad.diffusion.prior import Prior
from fastad.distill.synthesis import Synthesizer, balanced_labels, conditioning_provider
from fastad.errors import UserError
from fastad.guidance import CADRConfig, make_view
from fastad.models import create_model, load_classifier, load_weights, read_classifier_meta, save_classifier
from fastad.train.evaluate import accuracy_report, normalizer, predict
from fastad.utils.images import save_grid, to_uint8
from fastad.utils.io import atomic_json, atomic_torch_save, load_resume_state
from fastad.utils.logger import RunLogger
from fastad.utils.runtime import (
    resolve_device, rng_state, seed_everything, set_rng_state, set_threads,
)
from fastad.utils.schedule import budget_position, lr_factor


if TYPE_CHECKING:
    from fastad.baselines.deepinversion import DeepInversionSynthesizer


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float) -> Tensor:
    """``tau^2 * KL(softmax(T/tau) || softmax(S/tau))``, batch mean (Eq. 9)."""
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    log_p_t = F.log_softmax(teacher_logits / tau, dim=1)
    return tau * tau * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


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


def load_teacher(cfg: Config, info, device: torch.device) -> tuple[nn.Module, list[float], list[float]]:
    """The frozen teacher (eval, no grads) and the normalisation it expects."""
    d = cfg.distillation
    if not d.teacher_checkpoint:
        raise UserError("config key 'distillation.teacher_checkpoint' is not set; pass a teacher checkpoint "
                        "(e.g. from fastad train-teacher, or a public zoo {'state_dict': ...} file)")
    # A fastad checkpoint names its architecture; a public zoo file needs distillation.teacher_arch.
    arch = None if read_classifier_meta(d.teacher_checkpoint).get("arch") else d.teacher_arch
    teacher, meta = load_classifier(d.teacher_checkpoint, arch=arch, num_classes=d.num_classes,
                                    in_channels=info.channels)
    if getattr(teacher, "num_classes", d.num_classes) != d.num_classes:
        raise UserError(f"teacher '{d.teacher_checkpoint}' has {teacher.num_classes} classes but "
                        f"distillation.num_classes is {d.num_classes}")
    teacher.to(device).eval().requires_grad_(False)
    return teacher, list(meta.get("mean") or info.mean), list(meta.get("std") or info.std)


def distill(cfg: Config, out: Path, *, resume: bool = False) -> dict:
    """Run (or resume) a distillation; returns the summary written to ``summary.json``."""
    set_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    gen = seed_everything(cfg.run.seed)
    d, f = cfg.distillation, cfg.fast_ad
    t_start = time.time()

    # Only the test split is read (the data-free rule); the train split's files are never opened.
    test = load_dataset(cfg.data.dataset, "test", root=cfg.data.root)
    info = test.info
    if info.num_classes != d.num_classes:
        raise UserError(f"config key 'distillation.num_classes': got {d.num_classes} but dataset "
                        f"'{info.name}' has {info.num_classes} classes")
    teacher, mean, std = load_teacher(cfg, info, device)
    prior = _load_prior(cfg, info, device) if d.synthesizer == "diffusion" else None  # before the student's init

    student = create_model(d.student_arch, num_classes=d.num_classes, in_channels=info.channels).to(device)
    if d.student_checkpoint:
        load_weights(student, d.student_checkpoint)
    opt = torch.optim.SGD(student.parameters(), lr=d.lr, momentum=d.momentum, weight_decay=d.weight_decay)
    buffer = ReplayBuffer(d.buffer_size)
    norm = normalizer(mean, std)

    synth = _synthesizer(cfg, info, prior, teacher, student, mean, std, gen, device)

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
    bar = tqdm(total=d.epochs, initial=prog.round, desc="distill", disable=not cfg.logging.progress, unit="round")
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
            images = synth(targets, generator=gen)
            with torch.no_grad():  # does the teacher see the target class in what was synthesised?
                probs = teacher(norm((images + 1) / 2)).softmax(1).cpu()
            agreement = 100.0 * (probs.argmax(1) == targets).float().mean().item()
            buffer.push(images.cpu(), targets)
            newest = images.cpu()
            # Grid captions: target class, then the teacher's prediction and confidence.
            conf, pred = probs.max(1)
            captions = [f"{info.class_names[y][:9]}\n{info.class_names[p][:6]} {c:.0%}"
                        for y, p, c in zip(targets.tolist(), pred.tolist(), conf.tolist())]
            prog.images += len(targets)
            _export(cfg, out, rnd, newest, targets)
            prog.timing.synthesis += time.time() - t0

            # 2. student updates on buffer batches
            t0 = time.time()
            student.train()
            losses = []
            for _ in range(d.train_iterations):
                x, _y = buffer.sample(d.train_batch_size, generator=gen)
                x = (x.to(device) + 1) / 2
                if d.augment:
                    x = augment(x, crop_padding=info.crop_padding, flip=info.flip, generator=gen)
                x = norm(x)
                with torch.no_grad():
                    t_logits = teacher(x)
                loss = kd_loss(student(x), t_logits, d.kd_temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
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
            bar.update(1)
            bar.set_postfix(images=prog.images, loss=f"{record['train/kd_loss']:.3f}",
                            acc="-" if prog.last_top1 is None else f"{prog.last_top1:.1f}")
    finally:
        bar.close()
        logger.close()

    diffusion = d.synthesizer == "diffusion"
    guidance, prior_path = (f.guidance, d.diffusion_checkpoint) if diffusion else (None, None)
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


def _load_prior(cfg: Config, info, device: torch.device) -> Prior:
    d, f = cfg.distillation, cfg.fast_ad
    if not d.diffusion_checkpoint:
        raise UserError("config key 'distillation.diffusion_checkpoint' is not set; pass a diffusers-format prior folder")
    prior = load_prior(d.diffusion_checkpoint, device=device)
    C, H, W = prior.sample_shape
    if (C, H, W) != (info.channels, *info.image_size) or [H, W] != list(d.image_size):
        raise UserError(f"prior '{d.diffusion_checkpoint}' makes {C}x{H}x{W} images but the teacher takes "
                        f"{info.channels}x{d.image_size[0]}x{d.image_size[1]} (distillation.image_size)")
    if prior.num_train_timesteps != f.T:
        raise UserError(f"config key 'fast_ad.T': got {f.T} but prior '{d.diffusion_checkpoint}' has "
                        f"{prior.num_train_timesteps} timesteps")
    return prior


def _synthesizer(cfg: Config, info, prior: Prior | None, teacher: nn.Module, student: nn.Module, mean: list[float],
                 std: list[float], gen: torch.Generator,
                 device: torch.device) -> Synthesizer | DeepInversionSynthesizer:
    """The round's image source: the guided prior, or DeepInversion (both ``synth(labels, generator=)``)."""
    d, f = cfg.distillation, cfg.fast_ad
    if prior is not None and f.guidance == "none":
        for key in ("inversion_fraction", "refine_steps"):
            if getattr(f, key) > 0:
                raise UserError(f"config key 'fast_ad.{key}': got {getattr(f, key)} but fast_ad.guidance is 'none', "
                                "so no target is guided; choose a guidance (it applies to guided targets)")

    def deepinversion(iterations: int) -> DeepInversionSynthesizer:
        from fastad.baselines.deepinversion import DeepInversionSynthesizer  # baselines import this module

        if list(d.image_size) != list(info.image_size):
            raise UserError(f"config key 'distillation.image_size': got {list(d.image_size)} but dataset "
                            f"'{info.name}' has {list(info.image_size)} images")
        # DeepInversion's own jitter and flip (the dataset's crop/flip), as in the paper's recipe.
        return DeepInversionSynthesizer(teacher, mean=mean, std=std, image_shape=(info.channels, *d.image_size),
                                        iterations=iterations, lr=d.deepinversion_lr, tv_l2=d.deepinversion_tv_l2,
                                        l2=d.deepinversion_l2, crop_padding=info.crop_padding, flip=info.flip,
                                        device=device)

    inverter = deepinversion(d.deepinversion_iterations) if prior is None or f.inversion_fraction > 0 else None
    if prior is None:
        return inverter
    cadr = CADRConfig(lambda_max=f.lambda_max, eta=f.eta, tau_ent=f.tau_ent, k_sigmoid=f.k_sigmoid, xi=f.xi,
                      gamma=f.gamma, beta_adv=f.beta_adv, grad_mode=f.grad_mode,
                      gate=f.guidance if f.guidance in ("fixed", "target") else "cadr", bn_weight=f.bn_weight, rule=f.rule,
                      t_window=tuple(f.t_window), inner_steps=f.inner_steps, x0_step=f.x0_step, grad_pool=f.grad_pool,
                      smooth_samples=f.smooth_samples, smooth_sigma=f.smooth_sigma,
                      step_scale=f.ddim_steps / f.strength_ref_steps if f.strength_ref_steps else 1.0)
    norm = normalizer(mean, std)
    view = make_view(mean, std, crop_padding=info.crop_padding if f.view_augment else 0,
                     flip=info.flip and f.view_augment, generator=gen)
    return Synthesizer(prior, teacher, guidance=f.guidance, cadr=cadr, view=view,
                       num_steps=f.ddim_steps, spacing=f.timestep_spacing, ddim_eta=f.ddim_eta, clip_x0=f.clip_x0,
                       clip_x0_guided=f.clip_x0_guided,
                       provider=conditioning_provider(d.conditioning, prior), device=device,
                       student=student if f.beta_adv > 0 else None, recurrence=f.recurrence,
                       guided_fraction=f.guided_fraction, guide_classes=f.guide_classes,
                       coverage_threshold=f.coverage_threshold, num_classes=d.num_classes, candidates=f.candidates,
                       inverter=inverter, inversion_fraction=f.inversion_fraction,
                       refiner=deepinversion(f.refine_steps) if f.refine_steps else None,
                       classify=lambda x: teacher(norm((x + 1) / 2)))


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
