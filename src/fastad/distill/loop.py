"""The online distillation loop of the paper's Sec. 3.5 (docs/method.md); :func:`fastad.api.distill` runs it.

Per round: synthesise ``synthesis_batch_size`` images for balanced random targets, push them into
the FIFO buffer, then ``train_iterations`` KD steps of the student on buffer batches (crop/flip).
Every ``eval_every`` rounds the student is scored on the real test split (if one is configured: the
only real data read) and on held-out synthetic images (its agreement with the teacher).
``distillation.synthesizer: deepinversion`` swaps the prior for DeepInversion (the benchmark's
baseline); ``distillation.max_seconds`` ends the run early on a synthesis + training time budget.
State is checkpointed atomically after every round; ``--resume`` continues bit-identically on CPU.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from fastad.buffer import ReplayBuffer
from fastad.config import Config
from fastad.data import ImageDataset, make_view
from fastad.distill.build import Built
from fastad.distill.distributed import World, all_any, gather_cat, gather_objects
from fastad.distill.synthesis import Synthesizer
from fastad.errors import RunStopped, UserError
from fastad.guidance.routing import balanced_labels
from fastad.models import save_classifier
from fastad.train.evaluate import accuracy_report, predict
from fastad.train.kd import TeacherViewCache, kd_step
from fastad.utils.images import save_grid, to_uint8
from fastad.utils.io import atomic_json, atomic_torch_save, drop_rows_after, load_resume_state
from fastad.utils.logger import RunLogger
from fastad.utils.runtime import rng_state, set_rng_state
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
    last_agreement: float | None = None
    last_kl: float | None = None
    stopped_by_budget: bool = False
    round_seconds: list[float] = field(default_factory=list)  # synthesis + training per round
    warnings: list[str] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)


#: The held-out synthetic set's generator is seeded with ``run.seed`` plus this: a stream of its own.
HOLDOUT_SEED_OFFSET = 1_000_003


@torch.no_grad()
def draw_holdout(cfg: Config, parts: Built) -> Tensor:
    """``distillation.holdout_images`` images ``[N, C, H, W]`` in [-1, 1] (CPU), never trained on: unguided DDIM
    from the prior (DeepInversion for a run without one), drawn with a generator of their own."""
    d = cfg.distillation
    g = torch.Generator().manual_seed(cfg.run.seed + HOLDOUT_SEED_OFFSET)
    labels = balanced_labels(d.holdout_images, parts.spec.num_classes, generator=g)
    synth, out = parts.synthesizer, []
    for s in range(0, d.holdout_images, d.synthesis_batch_size):
        y = labels[s:s + d.synthesis_batch_size]
        if isinstance(synth, Synthesizer):
            x_T = torch.randn((len(y), *synth.prior.sample_shape), generator=g).to(synth.device)
            out.append(synth.plain(x_T, y.to(synth.device), generator=g).cpu())
        else:
            out.append(synth(y, generator=g).cpu())
    return torch.cat(out)


@torch.no_grad()
def agreement(student: nn.Module, teacher_logits: Tensor, images: Tensor, view, *, batch_size: int,
              device: torch.device) -> dict[str, float]:
    """The student's agreement with the teacher on prior-space ``images``: top-1 (percent of images where both
    pick the same class) and ``KL(teacher || student)`` at temperature 1 (nats, mean over images)."""
    was_training = student.training
    student.eval()
    s_logits = torch.cat([student(view(images[i:i + batch_size].to(device))).float().cpu()
                          for i in range(0, len(images), batch_size)])
    student.train(was_training)
    logp_t, logp_s = teacher_logits.log_softmax(1), s_logits.log_softmax(1)
    return {"top1": 100.0 * (s_logits.argmax(1) == teacher_logits.argmax(1)).float().mean().item(),
            "kl": (logp_t.exp() * (logp_t - logp_s)).sum(1).mean().item()}


def run_distillation(cfg: Config, parts: Built, out: Path, *, generator: torch.Generator,
                     test: ImageDataset | None = None, resume: bool = False, world: World = World()) -> dict:
    """The online loop over built parts (:func:`fastad.distill.build`); returns the summary written to
    ``summary.json``. ``test``: the labelled evaluation split, if any (the only real data read).
    ``world``: this process's rank among several (:mod:`fastad.distill.distributed`); rank 0 evaluates and writes."""
    gen, d, device = generator, cfg.distillation, next(parts.student.parameters()).device
    t_start = time.time()
    teacher, student, synth, spec, view = parts.teacher, parts.student, parts.synthesizer, parts.spec, parts.view
    kd_teacher = parts.kd_teacher  # the teacher as the KD steps run it (compiled or not)
    opt = torch.optim.SGD(student.parameters(), lr=d.lr, momentum=d.momentum, weight_decay=d.weight_decay)
    model: nn.Module = student  # what the KD step trains: the bare student, or its DDP wrapper
    if world.size > 1:
        model = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
    buffer = ReplayBuffer(d.buffer_size)
    # The student's view of buffer images: the teacher's input, with the data's crop/flip when augmenting.
    train_view = make_view(spec.mean, spec.std, crop_padding=spec.crop_padding if d.augment else 0,
                           flip=spec.flip and d.augment, generator=gen, size=spec.image_size,
                           resize=d.resize if d.resize != "none" else "bilinear")
    # The KD steps' teacher logits, each (image, view) pair computed once (distillation.teacher_view_cache).
    cache = None
    if d.teacher_view_cache:
        if TeacherViewCache.nbytes(d.buffer_size, train_view.count, spec.num_classes) <= TeacherViewCache.MAX_BYTES:
            cache = TeacherViewCache(d.buffer_size, train_view.count, spec.num_classes)
        elif world.main:
            print(f"fastad distill: note: distillation.teacher_view_cache is off for this run: {d.buffer_size} "
                  f"images x {train_view.count} views x {spec.num_classes} classes pass 1 GiB", file=sys.stderr)
    # KD steps drawn ahead per teacher pass: the whole round, unless their images would pass DRAW_BYTES
    cache_steps = max(1, min(d.train_iterations, TeacherViewCache.DRAW_BYTES // (
        (d.train_batch_size // world.size) * spec.channels * spec.image_size[0] * spec.image_size[1] * 4)))
    guided_mask = getattr(synth, "guided_mask", None)  # DeepInversion aims at every target

    stats_prefix = "guidance" if d.synthesizer == "diffusion" else "deepinversion"
    prog = Progress()
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume:
        state = load_resume_state(out)
        if state.get("world_size", 1) != world.size:
            raise UserError(f"--resume '{out}': its last.pt was written by {state.get('world_size', 1)} process(es) and "
                            f"holds that many random streams; resume it with --nproc {state.get('world_size', 1)}, "
                            f"not {world.size}")
        try:
            student.load_state_dict(state["student"])
            opt.load_state_dict(state["optimizer"])
            buffer.load_state_dict(state["buffer"])
            if cache is not None and "teacher_views" in state:  # else it is rebuilt as the steps draw
                cache.load_state_dict(state["teacher_views"])
            if hasattr(synth, "load_state_dict"):
                synth.load_state_dict(state.get("synthesis", {}))
            set_rng_state(state["rng_ranks"][world.rank] if world.size > 1 else state["rng"], gen)
            p = state["progress"]
            prog = Progress(**{**p, "timing": Timing(**p["timing"])})
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UserError(f"--resume '{out}': its last.pt does not fit this run ({first})") from None
    bs = cfg.data.eval_batch_size
    if test is not None and prog.teacher_top1 is None and d.evaluate_teacher:
        t0 = time.time()
        logits, labels = predict(teacher, test, mean=spec.mean, std=spec.std, batch_size=bs, device=device)
        prog.teacher_top1 = accuracy_report(logits, labels, num_classes=spec.num_classes)["top1"]
        prog.timing.evaluation += time.time() - t0
    finished = prog.round >= d.epochs or prog.stopped_by_budget  # a resumed run that had already ended
    holdout = None
    if d.holdout_images and world.main and not finished:
        t0 = time.time()
        holdout = draw_holdout(cfg, parts)
        holdout_logits = torch.cat([teacher(view(holdout[i:i + bs].to(device))).float().cpu()
                                    for i in range(0, len(holdout), bs)])
        prog.timing.evaluation += time.time() - t0

    if resume and world.main:
        drop_rows_after(out / "metrics.jsonl", prog.round)  # rounds logged after the checkpoint are redone
    logger = RunLogger(out, tensorboard=cfg.logging.tensorboard) if world.main else None
    bar = _progress_bar(d, prog, disable=not (cfg.logging.progress and world.main))
    share, batch = d.synthesis_batch_size // world.size, d.train_batch_size // world.size
    try:
        while prog.round < d.epochs and not prog.stopped_by_budget:
            rnd = prog.round + 1
            lr = d.lr * lr_factor(d.schedule, _schedule_position(prog, d), d.epochs, d.milestones, d.lr_decay)
            for group in opt.param_groups:
                group["lr"] = lr
            # 1. synthesis (student in eval: the adversarial term must not touch its BN statistics)
            t0 = t_round = time.time()
            student.eval()
            targets = balanced_labels(share, spec.num_classes, generator=gen)  # this rank's share of the round
            if hasattr(synth, "plan_targets"):
                targets = synth.plan_targets(targets, generator=gen)
            synth.stats.reset()
            aimed = torch.ones(len(targets), dtype=torch.bool) if guided_mask is None else guided_mask(targets).cpu()
            coverage = getattr(synth, "coverage", None)
            before = None if coverage is None else coverage.counts.clone()
            images = synth(targets, generator=gen)
            # Every rank's buffer receives the whole round (see fastad.distill.distributed), and every rank
            # counts what all the round's plain samples showed.
            images, targets = gather_cat(images, world).cpu(), gather_cat(targets.to(images.device), world).cpu()
            aimed = gather_cat(aimed.to(device), world).cpu()
            if coverage is not None and world.size > 1:
                coverage.counts = before + gather_cat((coverage.counts - before).to(device)[None], world).sum(0).cpu()
            slots = buffer.push(images, targets)
            if cache is not None:
                cache.forget(slots)
            prog.images += len(targets)
            if world.main:
                with torch.no_grad():  # does the teacher see the target class in what was synthesised?
                    probs = teacher(view(images.to(device))).softmax(1).cpu()
                target_rate = 100.0 * (probs.argmax(1) == targets).float().mean().item()
                newest = images
                captions = _captions(spec.class_names, targets, probs, aimed)
                _export(cfg, out, rnd, newest, targets, spec.class_names)
            prog.timing.synthesis += time.time() - t0

            # 2. student updates on buffer batches
            t0 = time.time()
            student.train()
            losses = []
            if cache is None:
                for _ in range(d.train_iterations):
                    x, _y = buffer.sample(batch, generator=gen)
                    step = kd_step(model, kd_teacher, train_view(x.to(device)), opt, tau=d.kd_temperature)
                    losses.append(step["kd_loss"])
            else:  # the same draws in the same order, the teacher's logits computed once per new (image, view)
                for start in range(0, d.train_iterations, cache_steps):
                    draws = []
                    for _ in range(min(cache_steps, d.train_iterations - start)):
                        x, _y, slots = buffer.sample(batch, generator=gen, slots=True)
                        x, index = train_view(x.to(device), with_index=True)
                        draws.append((x, slots, index.cpu()))
                    # identical buffers on every rank: each new pair runs on one rank, and all keep it
                    cache.fill(kd_teacher, *(torch.cat(part) for part in zip(*draws)), batch_size=batch,
                               gather=None if world.size == 1 else lambda obj: gather_objects(obj, world),
                               rank=world.rank)
                    for x, slots, index in draws:
                        step = kd_step(model, None, x, opt, tau=d.kd_temperature,
                                       teacher_logits=cache.lookup(slots, index).to(device))
                        losses.append(step["kd_loss"])
            bad = next((v for v in losses if not math.isfinite(v)), None)
            if all_any(bad is not None, world, device):  # last.pt still holds the previous round, untouched
                raise RunStopped(f"the student's KD loss became {bad if bad is not None else 'non-finite'} in round "
                                 f"{rnd} (lr {lr:.3g}); the run stopped and {last_path} keeps round {prog.round}: "
                                 f"lower distillation.lr, then fastad distill --resume {out}")
            prog.timing.training += time.time() - t0
            round_seconds = time.time() - t_round

            # The budget counts synthesis + training only, so evaluation frequency does not change it.
            budget = all_any(d.max_seconds > 0 and prog.timing.synthesis + prog.timing.training >= d.max_seconds, world,
                             device)  # the ranks stop together
            rngs = gather_objects(rng_state(gen), world)
            prog.round, prog.stopped_by_budget = rnd, budget
            prog.round_seconds.append(round_seconds)
            if not world.main:
                continue
            record = {"round": rnd, "train/kd_loss": float(np.mean(losses)), "train/lr": lr,
                      "images_synthesized": prog.images, "buffer_size": len(buffer),
                      "synthesis/teacher_agreement": target_rate,
                      "synthesis/teacher_confidence": probs.max(1).values.mean().item(),
                      **{f"{stats_prefix}/{k}": v for k, v in synth.stats.summary().items()}}
            # 3. evaluation: the real test split (if any) and the held-out synthetic images
            if rnd % d.eval_every == 0 or rnd == d.epochs or budget:
                t0 = time.time()
                score = None
                if test is not None:
                    logits, labels = predict(student, test, mean=spec.mean, std=spec.std, batch_size=bs,
                                             device=device)
                    rep = accuracy_report(logits, labels, num_classes=spec.num_classes)
                    prog.last_top1, prog.last_per_class, score = rep["top1"], rep["per_class"], rep["top1"]
                    record.update({"eval/top1": rep["top1"], "eval/top5": rep.get("top5")})
                if holdout is not None:
                    agree = agreement(student, holdout_logits, holdout, view, batch_size=bs, device=device)
                    prog.last_agreement, prog.last_kl = agree["top1"], agree["kl"]
                    score = agree["top1"] if score is None else score
                    record.update({"eval/synthetic_agreement": agree["top1"], "eval/synthetic_kl": agree["kl"]})
                save_grid(out / "grids" / f"round_{rnd:05d}.png", to_uint8(newest), scale=2, captions=captions)
                prog.timing.evaluation += time.time() - t0
                if score is not None and score > prog.best_top1:
                    prog.best_top1 = score
                    atomic_torch_save({"student": student.state_dict(), "round": rnd, "score": score}, best_path)
            for note in _notes(prog, d):
                prog.warnings.append(note)
                tqdm.write(f"fastad distill: warning: {note}", file=sys.stderr)
            record.update({"time/round": round_seconds, "time/synthesis": prog.timing.synthesis,
                           "time/training": prog.timing.training,
                           "time/evaluation": prog.timing.evaluation})
            logger.log(rnd, record)
            atomic_torch_save({"student": student.state_dict(), "optimizer": opt.state_dict(),
                               "buffer": buffer.state_dict(),
                               **({"teacher_views": cache.state_dict()} if cache is not None else {}),
                               "synthesis": synth.state_dict() if hasattr(synth, "state_dict") else {},
                               "rng": rngs[0], "world_size": world.size,
                               **({"rng_ranks": rngs} if world.size > 1 else {}),
                               "progress": _progress_dict(prog)}, last_path)
            _advance(bar, d, prog, loss=record["train/kd_loss"])
    except KeyboardInterrupt:
        saved = f"{last_path} keeps round {prog.round}; continue with: fastad distill --resume {out}" if prog.round \
            else "no round had finished, so nothing was saved"
        raise RunStopped(f"interrupted in round {prog.round + 1}; {saved}", exit_code=130) from None
    finally:
        bar.close()
        if logger is not None:
            logger.close()

    # Every rank ends with the same student (DDP): the summary records each rank's parameter checksum.
    checksums = gather_objects(float(sum(p.detach().double().sum().item() for p in student.parameters())), world)
    if not world.main:
        return {"rank": world.rank, "student_checksum": checksums[world.rank]}
    diffusion = d.synthesizer == "diffusion"
    guidance, prior_path = (cfg.fast_ad.guidance, d.diffusion_checkpoint) if diffusion else (None, None)
    meta = {"kind": "classifier", "arch": parts.student_name, "num_classes": spec.num_classes,
            "in_channels": spec.channels, "input_size": list(spec.image_size),
            "dataset": test.info.name if test is not None else None, "class_names": spec.class_names,
            "mean": spec.mean, "std": spec.std, "test_top1": prog.last_top1,
            "synthetic_agreement": prog.last_agreement, "distilled_from": parts.teacher_name,
            "synthesizer": d.synthesizer, "prior": prior_path, "guidance": guidance, "images_synthesized": prog.images}
    save_classifier(out / "student.safetensors", student, meta)
    summary = {"teacher_top1": prog.teacher_top1, "student_top1": prog.last_top1,
               "student_per_class": prog.last_per_class, "best_student_score": prog.best_top1,
               "evaluated_on": f"{test.info.name} test split{_range(cfg.data.eval_range)} ({len(test)} images)"
               if test is not None else
               "no labelled data (data.dataset is null): student_top1 is not measured",
               "synthetic_agreement_top1": prog.last_agreement, "synthetic_kl": prog.last_kl,
               "synthetic_holdout": f"{d.holdout_images} held-out synthetic images (seed run.seed + "
                                    f"{HOLDOUT_SEED_OFFSET}, never trained on): the student's top-1 agreement with "
                                    "the teacher (%) and KL(teacher || student) (nats)" if holdout is not None else None,
               "teacher": parts.teacher_name, "spec_sources": spec.sources,
               "images_synthesized": prog.images, "rounds": prog.round,
               "wall_seconds": prog.timing.total(), "synthesis_seconds": prog.timing.synthesis,
               "training_seconds": prog.timing.training, "evaluation_seconds": prog.timing.evaluation,
               "session_seconds": time.time() - t_start, "synthesizer": d.synthesizer, "guidance": guidance,
               "stopped_by_budget": prog.stopped_by_budget, "warnings": prog.warnings, "processes": world.size,
               **({"student_checksums": checksums} if world.size > 1 else {}), "out": str(out),
               "student": str(out / "student.safetensors")}
    atomic_json(summary, out / "summary.json")
    return summary


#: A run whose recent rounds take this many times as long as its first ones says so (once).
SLOWDOWN = 2.0


def _notes(prog: Progress, d) -> list[str]:
    """Warnings due after the round just finished: a time guard that cut the run short, or rounds that became
    much slower than the run's own first ones (a busy machine). Each is given once."""
    notes = []
    if prog.stopped_by_budget and prog.round < d.epochs:
        notes.append(f"distillation.max_seconds={d.max_seconds:g} stopped the run after {prog.round} of {d.epochs} "
                     "rounds (synthesis + training time): the student saw fewer images than the config asks for")
    times, said = prog.round_seconds, any("as long as rounds 2-4" in w for w in prog.warnings)
    if not said and len(times) >= 7:
        first, recent = statistics.median(times[1:4]), statistics.median(times[-3:])  # round 1 warms up
        if recent > SLOWDOWN * first:
            notes.append(f"rounds {len(times) - 2}-{len(times)} took {recent / first:.1f}x as long as rounds 2-4 "
                         f"({recent:.1f} s against {first:.1f} s): the machine is busier than when the run began")
    return notes


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
    """Rounds; under a ``max_seconds`` budget the description names it (the run ends at whichever comes first)."""
    guard = f" (or {d.max_seconds:g} s of synthesis + training)" if d.max_seconds > 0 else ""
    return tqdm(total=d.epochs, initial=prog.round, desc=f"distill{guard}", disable=disable, unit="round")


def _advance(bar: tqdm, d, prog: Progress, *, loss: float) -> None:
    bar.update(1)
    spent = f"{prog.timing.synthesis + prog.timing.training:.0f}/{d.max_seconds:g}s" if d.max_seconds > 0 else None
    bar.set_postfix(images=prog.images, loss=f"{loss:.3f}", acc="-" if prog.last_top1 is None else
                    f"{prog.last_top1:.1f}", **({"budget": spent} if spent else {}))


def _progress_dict(p: Progress) -> dict:
    return {**{k: v for k, v in vars(p).items() if k != "timing"}, "timing": vars(p.timing).copy()}


def _export(cfg: Config, out: Path, rnd: int, images: Tensor, labels: Tensor, names: list[str]) -> None:
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

    for i, (img, y) in enumerate(zip(u8, labels.tolist())):
        d = folder / names[y].replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        arr = img.permute(1, 2, 0).numpy()
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(d / f"r{rnd:05d}_{i:03d}.png")


def _range(r: list[int] | None) -> str:
    """`` [start:stop]`` of ``data.eval_range``, or nothing when evaluation reads the whole split."""
    return f"[{r[0]}:{r[1]}]" if r else ""
