"""Reference upper bound: the student trained by KD on the teacher's **real** training images.

This module reads the train split by design. It is a reference for the benchmark (what a
data-free method chases: the same student, KD loss, optimiser and augmentation as
``fastad distill``, but on real images instead of synthesised ones). It is never part of
data-free synthesis or distillation, which must not touch the training data.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch
from torch import nn

from fastad.data import ImageDataset, augment, to_float
from fastad.errors import UserError
from fastad.train.evaluate import accuracy_report, normalizer, predict
from fastad.train.kd import kd_step
from fastad.utils.schedule import budget_position, lr_factor

__all__ = ["SCHEDULES", "train_student_on_real"]

SCHEDULES = ("cosine", "step", "constant")


def _check(name: str, value: object, ok: bool, allowed: str) -> None:
    if not ok:
        raise UserError(f"real_kd: {name}={value!r} is not allowed; it must be {allowed}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def train_student_on_real(
    teacher: nn.Module, student: nn.Module, train: ImageDataset, test: ImageDataset, *,
    mean: Sequence[float], std: Sequence[float], steps: int, batch_size: int, lr: float = 0.1,
    momentum: float = 0.9, weight_decay: float = 5e-4, kd_temperature: float = 4.0, schedule: str = "cosine",
    milestones: Sequence[int] = (), lr_decay: float = 0.1, crop_padding: int | None = None,
    flip: bool | None = None, device: torch.device | str = "cpu", generator: torch.Generator,
    eval_every: int | None = None, max_seconds: float | None = None, eval_batch_size: int = 512,
) -> dict:
    """Train ``student`` in place by KD from ``teacher`` on real ``train`` images; score it on ``test``.

    Each step: ``batch_size`` images drawn without replacement from a per-epoch permutation of
    ``train`` (uint8 ``[N, C, H, W]`` -> [0, 1]), random crop/flip, normalised by ``mean``/``std``;
    loss ``kd_loss(S(x), T(x), kd_temperature)`` (the teacher under no_grad; the labels are never
    used); SGD with ``lr``, ``momentum``, ``weight_decay``; lr schedule per step: ``cosine`` over
    ``steps``, ``step`` (times ``lr_decay`` at each of ``milestones``, in steps) or ``constant``.
    ``crop_padding``/``flip`` default to the dataset's own (``train.info``).

    ``max_seconds`` stops training once that much training wall time has been spent (checked
    before each step; periodic evaluations are not counted), for equal-time comparisons; the lr
    schedule then runs over whichever ends first, ``steps`` or the budget. ``eval_every`` scores the test split every that many steps.
    All randomness comes from ``generator``.

    Returns a dict: ``student_top1``/``student_top5`` (percent on ``test``; top5 None below 5
    classes), ``student_per_class``, ``steps_done``, ``steps_requested``, ``stopped_early`` (the budget ran out),
    ``images_seen``, ``final_kd_loss``, ``train_seconds``, ``eval_seconds``, ``wall_seconds`` and
    ``history`` (``[{step, top1, top5, kd_loss, train_seconds}]``: the periodic evaluations, then
    the final one).
    """
    for name, ds in (("train", train), ("test", test)):
        _check(name, type(ds).__name__, isinstance(ds, ImageDataset), "an ImageDataset")
    _check("test", list(test.images.shape[1:]), test.images.shape[1:] == train.images.shape[1:],
           f"images shaped like train's {list(train.images.shape[1:])}")
    _check("mean/std", (list(mean), list(std)), len(mean) == len(std) == train.images.shape[1]
           and all(_is_num(s) and s > 0 for s in std), f"{train.images.shape[1]} values each, std > 0")
    _check("steps", steps, _is_int(steps) and steps >= 1, "an int >= 1")
    _check("batch_size", batch_size, _is_int(batch_size) and 1 <= batch_size <= len(train),
           f"an int in [1, {len(train)}] (the train images)")
    _check("lr", lr, _is_num(lr) and lr > 0, "a finite number > 0")
    _check("momentum", momentum, _is_num(momentum) and 0 <= momentum < 1, "in [0, 1)")
    _check("weight_decay", weight_decay, _is_num(weight_decay) and weight_decay >= 0, "a finite number >= 0")
    _check("kd_temperature", kd_temperature, _is_num(kd_temperature) and kd_temperature > 0, "a finite number > 0")
    _check("schedule", schedule, schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}")
    _check("milestones", list(milestones), all(_is_int(m) and m >= 1 for m in milestones), "ints >= 1")
    _check("lr_decay", lr_decay, _is_num(lr_decay) and 0 < lr_decay <= 1, "in (0, 1]")
    crop_padding = train.info.crop_padding if crop_padding is None else crop_padding
    flip = train.info.flip if flip is None else flip
    _check("crop_padding", crop_padding, _is_int(crop_padding) and crop_padding >= 0, "an int >= 0")
    _check("flip", flip, isinstance(flip, bool), "true or false")
    _check("eval_every", eval_every, eval_every is None or (_is_int(eval_every) and eval_every >= 1),
           "None or an int >= 1")
    _check("max_seconds", max_seconds, max_seconds is None or (_is_num(max_seconds) and max_seconds > 0),
           "None or a finite number > 0")
    if teacher.training:
        raise UserError("real_kd: the teacher is in training mode; call teacher.eval()")

    device = torch.device(device)
    norm = normalizer(mean, std)
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    was_training = student.training

    def evaluate() -> dict:
        logits, labels = predict(student, test, mean=mean, std=std, batch_size=eval_batch_size, device=device)
        return accuracy_report(logits, labels, num_classes=max(num_classes, logits.shape[1]))

    t_start = time.perf_counter()
    train_s = eval_s = 0.0
    history: list[dict] = []
    order, pos, done, loss_val = torch.empty(0, dtype=torch.long), 0, 0, float("nan")
    student.train()
    for step in range(steps):
        if max_seconds is not None and train_s >= max_seconds:
            break
        t0 = time.perf_counter()
        if pos + batch_size > len(order):  # a new epoch: fresh permutation (the short tail is dropped)
            order, pos = torch.randperm(len(train), generator=generator), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        x = augment(to_float(train.images[idx].to(device)), crop_padding=crop_padding, flip=flip, generator=generator)
        x = norm(x)
        position = budget_position(step, steps, train_s, max_seconds)  # under a budget, it ends with it
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(schedule, position, steps, milestones, lr_decay)
        loss_val = kd_step(student, teacher, x, opt, tau=kd_temperature)["kd_loss"]
        done += 1
        train_s += time.perf_counter() - t0
        if eval_every is not None and done % eval_every == 0 and done < steps:
            t0 = time.perf_counter()
            rep = evaluate()
            eval_s += time.perf_counter() - t0
            history.append({"step": done, "top1": rep["top1"], "top5": rep.get("top5"), "kd_loss": loss_val,
                            "train_seconds": train_s})
    t0 = time.perf_counter()
    rep = evaluate()
    eval_s += time.perf_counter() - t0
    history.append({"step": done, "top1": rep["top1"], "top5": rep.get("top5"), "kd_loss": loss_val,
                    "train_seconds": train_s})
    student.train(was_training)
    return {"student_top1": rep["top1"], "student_top5": rep.get("top5"), "student_per_class": rep["per_class"],
            "steps_done": done,
            "steps_requested": steps, "stopped_early": done < steps, "images_seen": done * batch_size,
            "final_kd_loss": loss_val, "train_seconds": train_s, "eval_seconds": eval_s,
            "wall_seconds": time.perf_counter() - t_start, "history": history}
