"""The Python entry point: distil any teacher into any student with a diffusion prior.

    from fastad.api import distill
    result = distill(my_teacher, prior="models/fmnist_prior_50k60k", student=my_student,
                     sets=["distillation.mean=[0.286]", "distillation.std=[0.353]"], out="runs/mine")
    result.student, result.summary

``fastad distill`` on the command line is a thin layer over :func:`distill`: the same run folder
(``config.yaml``, ``metrics.jsonl``, TensorBoard events, grids, ``last.pt``, ``best.pt``,
``student.safetensors``, ``summary.json``) and the same exact resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from torch import nn

from fastad.config import Config, load_config
from fastad.config.recipes import recipe_sets
from fastad.data import ImageDataset, dataset_info, load_eval_split
from fastad.diffusion.prior import Prior
from fastad.distill.build import build, describe
from fastad.distill.distributed import broadcast_object, finish, rank_seed, setup, teardown, world_from_env
from fastad.distill.loop import run_distillation
from fastad.errors import UserError
from fastad.utils.runtime import prepare_run, resolve_device, seed_everything
from fastad.utils.threads import set_threads

__all__ = ["DistillResult", "distill"]


@dataclass
class DistillResult:
    """What :func:`distill` returns: the trained student (the module itself when one was given), the summary
    (also in ``out/summary.json``) and the run folder."""

    student: nn.Module
    summary: dict
    out: Path


def distill(
    teacher: nn.Module | str | Path | None = None,
    prior: Prior | str | Path | None = None,
    *,
    student: nn.Module | str | None = None,
    config: Config | str | Path | None = None,
    recipe: str | None = None,
    sets: Sequence[str] = (),
    out: str | Path | None = None,
    resume: bool = False,
) -> DistillResult:
    """Distil ``teacher`` into ``student`` with images synthesised from ``prior``; see docs/method.md.

    Args:
        teacher: a trained classifier (``nn.Module`` mapping normalised images ``[B, C, H, W]`` to logits
            ``[B, K]``; it is frozen and put in eval mode), or a checkpoint path (a fastad checkpoint, or a
            public zoo file with ``distillation.teacher_arch``). None: ``distillation.teacher_checkpoint``.
        prior: a :class:`~fastad.diffusion.prior.Prior` or a diffusers-format folder. None:
            ``distillation.diffusion_checkpoint`` (not needed for ``distillation.synthesizer: deepinversion``).
        student: an ``nn.Module`` to train in place (it must take the teacher's input and give K logits), or
            a zoo name. None: ``distillation.student_arch``.
        config: a :class:`~fastad.config.Config`, a YAML path, or None for the defaults (the paper's).
        recipe: a synthesis recipe (:data:`fastad.config.recipes.RECIPES`, e.g. ``"none"``, ``"cadr"``) applied on
            top of ``config``, before ``sets``.
        sets: ``"section.key=value"`` overrides on top of ``config``.
        out: the run folder; None: ``run.out``, else ``runs/distill-<timestamp>``.
        resume: continue the run in ``out`` from its ``last.pt`` with the config it saved (``config`` and
            ``sets`` must then be empty; pass the same teacher, student and prior objects it ran with).

    What the teacher takes (classes, input shape, normalisation) comes from the config's explicit values,
    else the teacher checkpoint's metadata, the evaluation dataset (``data.dataset``), the prior and the
    teacher's output; a plain module without metadata needs ``distillation.mean`` / ``std``. With no
    ``data.dataset``, no real data is read and the summary reports the student's agreement with the
    teacher on held-out synthetic images only.

    Returns:
        :class:`DistillResult`. Bad input raises :class:`~fastad.errors.UserError` (one line) before the run
        folder is written.
    """
    if resume:
        if out is None or config is not None or sets or recipe:
            raise UserError("resume: give out=RUN_DIR and no config, recipe or sets (a resumed run keeps its "
                            "config.yaml)")
        run_dir = Path(out)
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"resume '{run_dir}': no config.yaml there (not a distill run folder)")
        cfg = load_config(run_dir / "config.yaml")
    else:
        cfg = load_config(config, [*(recipe_sets(recipe) if recipe else []), *sets])  # a copy: `config` stays as it is
        if out is not None:
            cfg.run.out = str(out)
    d = cfg.distillation
    if isinstance(teacher, (str, Path)):
        d.teacher_checkpoint, teacher = str(teacher), None
    if isinstance(prior, (str, Path)):
        d.diffusion_checkpoint, prior = str(prior), None
    if isinstance(student, str):
        d.student_arch, student = student, None

    world = world_from_env()  # torchrun's ranks, or one process
    set_threads(cfg.run.threads, share=world.local_size)
    device = setup(world, resolve_device(cfg.run.device))
    for key in ("synthesis_batch_size", "train_batch_size"):
        if getattr(d, key) % world.size:
            raise UserError(f"config key 'distillation.{key}': got {getattr(d, key)}; with {world.size} processes it "
                            f"must be a multiple of {world.size} (each rank takes an equal share)")
    gen = seed_everything(cfg.run.seed)  # the same global RNG on every rank: the same student initialisation
    gen.manual_seed(rank_seed(cfg.run.seed, world.rank))  # each rank's own stream (rank 0: the run's seed)
    # Only the test split is read, only when one is configured, and only its images on rank 0 (the data-free
    # rule: never the train split).
    test: ImageDataset | None = None
    info = None
    if cfg.data.dataset and world.main:
        test = load_eval_split(cfg.data)
        info = test.info
    elif cfg.data.dataset:  # the other ranks need only the description, to resolve the teacher the same way
        info = dataset_info(cfg.data.dataset, root=cfg.data.root)
    parts = build(cfg, info, device=device, generator=gen, teacher=teacher, student=student, prior=prior)
    if info is not None and tuple(info.image_size) != parts.spec.image_size:
        raise UserError(f"data.dataset '{info.name}' has {info.image_size[0]}x{info.image_size[1]} images but the "
                        f"teacher takes {parts.spec.image_size[0]}x{parts.spec.image_size[1]}")
    if not resume:
        run_dir = Path(str(broadcast_object(str(prepare_run(cfg, "distill")) if world.main else None, world)))
    if cfg.logging.progress and world.main:
        print(describe(parts, cfg), flush=True)
    try:
        summary = run_distillation(cfg, parts, run_dir, generator=gen, test=test, resume=resume, world=world)
        finish(world)
    finally:
        teardown(world)
    return DistillResult(parts.student, summary, run_dir)
