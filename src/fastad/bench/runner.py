"""``fastad bench``: fastad against the data-free baselines on the same teacher, prior and student.

Per setting (e.g. ``in-domain`` and ``out-of-domain``: another prior, lacking some of the teacher's
classes, whose accuracy on them is reported), two comparisons, each one ``fastad distill`` run per
(method, seed) in its own folder; a method is a recipe (:mod:`fastad.config.recipes`):

- ``images``: every method synthesises the same number of images (a fixed round count);
- ``time``: every method gets the same synthesis + training budget (``distillation.max_seconds``)
  and a round count too large to reach.

Every run's classifier is also scored on two disjoint ranges of the test split, ``validation`` and
``report`` (by default its two halves): a choice made by looking at accuracy is made on the first, and the
figure reported is the chosen method's on the second; ``bench.md`` names the method validation chose.

References: the teacher itself, and ``real-kd``, the same student trained by KD on the teacher's
**real** training images (not data-free; the upper bound), for the same step count or budget.
A run folder with a ``summary.json`` is reused and one with only ``last.pt`` is resumed, so an
interrupted bench continues method by method. Runs go one after another, in this process (a
setting per process, ``--settings``, is the way to use several cores), then one invocation over
all settings reuses every run and writes the combined table.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastad.bench.flops import matmul_flops_per_second, synthesis_flops_per_image
from fastad.bench.plot import plot_bench
from fastad.config import Config, load_config, save_config
from fastad.config.recipes import RECIPES, recipe_sets
from fastad.errors import UserError
from fastad.utils.runtime import resolve_device
from fastad.utils.threads import set_threads

REFERENCES = ("teacher", "real-kd")
METHODS = (*RECIPES, *REFERENCES)
COMPARISONS = ("images", "time")
# Time comparison: rounds (or real-KD steps) the budget ends long before; the lr schedule follows the budget.
UNREACHABLE_ROUNDS = 100_000
# --quick: tiny everything, for the tests (applied before the user's --set, which still wins).
QUICK_SETS = ["distillation.epochs=2", "distillation.synthesis_batch_size=16", "distillation.train_batch_size=32",
              "distillation.train_iterations=5", "deepinversion.iterations=2",
              "fast_ad.ddim_steps=2", "distillation.evaluate_teacher=false", "logging.tensorboard=false"]
QUICK_BUDGET, QUICK_TIME_ROUNDS = 1.0, 50
# The full bench's run size (before the user's --set): 6 rounds x 64 images, 40 KD steps of batch 64 per
# round; both settings take about two hours on 2 cores (one process per setting, one thread each).
BENCH_SETS = ["distillation.epochs=6", "distillation.train_iterations=40", "distillation.train_batch_size=64",
              "deepinversion.iterations=100",
              "distillation.eval_every=1000", "distillation.evaluate_teacher=false", "logging.tensorboard=false"]
BENCH_BUDGET = 60.0


@dataclass
class BenchSpec:
    config: str | None
    sets: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget_seconds: float = BENCH_BUDGET
    images: int | None = None  # None: the config's epochs x synthesis_batch_size
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    out: str = "runs/bench"
    quick: bool = False
    config_size: bool = False  # True: the config's own run size (e.g. the embedded default), not BENCH_SETS
    comparisons: list[str] = field(default_factory=lambda: list(COMPARISONS))
    # Setting name -> config overrides; each setting is a full bench (e.g. an out-of-domain prior).
    settings: dict[str, list[str]] = field(default_factory=lambda: {"in-domain": []})
    # [start, stop) of the test split: where choices are made, and where the chosen method is reported.
    # None: the first and the second half of the test split.
    validation_range: list[int] | None = None
    report_range: list[int] | None = None


def _config(spec: BenchSpec, extra: list[str], method: str | None = None) -> Config:
    """The config of one run: the method's recipe first (as ``fastad distill --recipe``), then the bench's
    size, the user's ``--set`` and ``extra``, so a key the user sets (e.g. ``sampler.solver``) wins."""
    recipe = recipe_sets(method) if method in RECIPES else []
    size = QUICK_SETS if spec.quick else [] if spec.config_size else BENCH_SETS
    return load_config(spec.config, [*recipe, *size, *spec.sets, "logging.progress=false", *extra])


def unseen_classes(cfg: Config) -> list[int]:
    """The teacher's classes the prior never saw in training (from the prior's ``fastad_prior.json``)."""
    from fastad.diffusion.prior import read_prior_metadata
    from fastad.models import read_classifier_meta

    d = cfg.distillation
    if not d.diffusion_checkpoint:
        return []
    seen = read_prior_metadata(d.diffusion_checkpoint).get("classes")
    k = d.num_classes or (read_classifier_meta(d.teacher_checkpoint).get("num_classes") if d.teacher_checkpoint
                          else None)
    return [] if seen is None or k is None else [c for c in range(k) if c not in seen]


def _same_settings(cfg: Config, out: Path) -> None:
    """A run folder is only reused (or resumed) for the settings it was made with (as given: a run's saved
    config also records what it resolved from the teacher, which the bench's config leaves open)."""
    cfg.run.out = str(out)
    saved = out / "bench_config.yaml"
    if saved.is_file() and asdict(load_config(saved)) != asdict(cfg):
        raise UserError(f"run folder '{out}' was made with other settings than this bench's; "
                        "choose another --out or delete that folder")


def _distill_run(cfg: Config, out: Path) -> dict:
    """Reuse a finished run, resume an interrupted one, else start it."""
    from fastad.api import distill

    _same_settings(cfg, out)
    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    if (out / "last.pt").is_file():
        return distill(out=out, resume=True).summary
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "bench_config.yaml")
    return distill(config=cfg).summary


def _teacher_and_test(cfg: Config):
    """The teacher, its resolved description and the test split (for the references)."""
    from fastad.data import load_eval_split
    from fastad.distill import load_teacher, resolve_spec

    device = resolve_device(cfg.run.device)
    test = load_eval_split(cfg.data)
    teacher, meta = load_teacher(cfg, device)
    spec = resolve_spec(cfg, teacher, meta, test.info, None, device, name=f"'{cfg.distillation.teacher_checkpoint}'")
    return teacher, spec, test, device


def _teacher_run(cfg: Config, out: Path) -> dict:
    """The teacher's own test top-1 (a reference row)."""
    from fastad.train.evaluate import accuracy_report, predict
    from fastad.utils.io import atomic_json

    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    set_threads(cfg.run.threads)
    teacher, spec, test, device = _teacher_and_test(cfg)
    logits, labels = predict(teacher, test, mean=spec.mean, std=spec.std, batch_size=cfg.data.eval_batch_size,
                             device=device)
    top1 = accuracy_report(logits, labels, num_classes=spec.num_classes)["top1"]
    summary = {"teacher_top1": top1, "student_top1": top1}
    out.mkdir(parents=True, exist_ok=True)
    atomic_json(summary, out / "summary.json")
    return summary


def _real_kd_run(cfg: Config, out: Path, *, steps: int, max_seconds: float | None) -> dict:
    """The same student, KD loss and optimiser on the teacher's real training images (``data.train_range``).

    Not data-free by design: this reference reads the train split. Not resumable mid-run (it is one call).
    """
    from fastad.baselines import train_student_on_real
    from fastad.data import load_dataset
    from fastad.distill import kd_teacher
    from fastad.models import CLASSIFIER_LAYOUT, create_model, save_classifier
    from fastad.utils.io import atomic_json
    from fastad.utils.runtime import seed_everything

    _same_settings(cfg, out)
    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "bench_config.yaml")
    set_threads(cfg.run.threads)
    gen = seed_everything(cfg.run.seed)
    d, data = cfg.distillation, cfg.data
    teacher, spec, test, device = _teacher_and_test(cfg)
    train = load_dataset(data.dataset, "train", root=data.root,
                         index_range=tuple(data.train_range) if data.train_range else None, classes=data.classes,
                         range_key="config key 'data.train_range'")
    student = create_model(d.student_arch, num_classes=spec.num_classes, in_channels=spec.channels)
    student.to(device, memory_format=CLASSIFIER_LAYOUT)  # as distill lays out its student
    # The same KD teacher as the data-free runs (distillation.compile_kd_teacher), so equal time stays equal.
    res = train_student_on_real(kd_teacher(cfg, teacher), student, train, test, mean=spec.mean, std=spec.std,
                                steps=steps, batch_size=min(d.train_batch_size, len(train)), lr=d.lr,
                                momentum=d.momentum, weight_decay=d.weight_decay, kd_temperature=d.kd_temperature,
                                schedule=d.schedule, milestones=[m * d.train_iterations for m in d.milestones],
                                lr_decay=d.lr_decay, device=device,
                                generator=gen, max_seconds=max_seconds, eval_batch_size=data.eval_batch_size)
    summary = {"student_top1": res["student_top1"], "images_synthesized": 0, "real_images_seen": res["images_seen"],
               "steps": res["steps_done"], "stopped_by_budget": res["stopped_early"],
               "wall_seconds": res["train_seconds"] + res["eval_seconds"], "synthesis_seconds": 0.0,
               "training_seconds": res["train_seconds"], "data_free": False}
    save_classifier(out / "student.safetensors", student, {
        "kind": "classifier", "arch": d.student_arch, "num_classes": spec.num_classes, "in_channels": spec.channels,
        "input_size": list(spec.image_size), "dataset": test.info.name, "class_names": spec.class_names,
        "mean": spec.mean, "std": spec.std, "test_top1": res["student_top1"], "distilled_from": "real training images"})
    save_config(cfg, out / "config.yaml")  # as resolved
    atomic_json(summary, out / "summary.json")
    return summary


def _full_test_split(cfg: Config):
    """The whole test split of ``cfg``'s dataset (whatever ``data.eval_range`` says), or None without one."""
    from fastad.data import load_dataset

    return load_dataset(cfg.data.dataset, "test", root=cfg.data.root) if cfg.data.dataset else None


def split_ranges(spec: BenchSpec, test) -> dict[str, list[int]]:
    """``{"validation": [a, b], "report": [c, d]}``: ranges of the test split ``test``, checked (each a range of
    the split, the two disjoint); ``{}`` without a labelled dataset (``test`` None)."""
    if test is None:
        return {}
    n = len(test.labels)
    ranges = {"validation": spec.validation_range or [0, n // 2], "report": spec.report_range or [n // 2, n]}
    for name, (a, b) in ranges.items():
        if not 0 <= a < b <= n:
            raise UserError(f"--{name}-range: got {a} {b}; the test split of {test.info.name} has {n} images, "
                            f"need 0 <= START < STOP <= {n}")
    (a, b), (c, d) = ranges.values()
    if a < d and c < b:
        raise UserError(f"--validation-range {a} {b} and --report-range {c} {d} overlap; a figure reported on "
                        "images that the choice saw is not held out")
    return ranges


def _split_scores(cfg: Config, folder: Path, test, ranges: dict[str, list[int]], *, teacher: bool) -> dict | None:
    """Top-1 and per-class top-1 of a run's student (or of the teacher) on each of ``ranges`` of the test split
    ``test``, kept in ``folder/split_scores.json``; None when the run left no student (a real-kd run of an older
    bench)."""
    from fastad.models import load_classifier
    from fastad.train.evaluate import accuracy_report, predict
    from fastad.utils.io import atomic_json

    cache = folder / "split_scores.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved["ranges"] == ranges:
            return saved["scores"]
    device = resolve_device(cfg.run.device)
    if teacher:
        model, spec, _, _ = _teacher_and_test(cfg)
        mean, std = spec.mean, spec.std
    elif (folder / "student.safetensors").is_file():
        model, meta = load_classifier(folder / "student.safetensors")  # a student records its mean and std
        model, mean, std = model.to(device), meta["mean"], meta["std"]
    else:
        return None
    logits, labels = predict(model, test, mean=mean, std=std, batch_size=cfg.data.eval_batch_size, device=device)
    scores = {}
    for name, (a, b) in ranges.items():
        report = accuracy_report(logits[a:b], labels[a:b], num_classes=logits.shape[1])
        scores[name] = {"top1": report["top1"], "per_class": report["per_class"]}
    atomic_json({"ranges": ranges, "scores": scores}, cache)
    return scores


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _check_spec(spec: BenchSpec) -> None:
    """Every check a bench can make before its first run: the options, every run's config, every setting's
    prior and teacher, and the output folder. A mistake in the last setting must not surface hours later."""
    from fastad.diffusion.prior import load_prior
    from fastad.models import read_classifier_meta
    from fastad.options import shown
    from fastad.utils.runtime import RUN_OUTPUTS, run_kind

    bad = [m for m in spec.methods if m not in METHODS]
    if bad:
        raise UserError(f"--methods: unknown {', '.join(shown(b) for b in bad)}; choose from {', '.join(METHODS)}")
    if not spec.methods:
        raise UserError("--methods: give at least one method")
    if spec.budget_seconds <= 0 or not math.isfinite(spec.budget_seconds):
        raise UserError(f"--budget-seconds: got {spec.budget_seconds}; expected a finite number > 0")
    if not spec.seeds:
        raise UserError("--seeds: give at least one seed")
    if any(s < 0 for s in spec.seeds) or len(set(spec.seeds)) != len(spec.seeds):
        raise UserError(f"--seeds: got {spec.seeds}; expected distinct integers >= 0")
    if not spec.comparisons or any(c not in COMPARISONS for c in spec.comparisons):
        raise UserError(f"--comparisons: got {spec.comparisons}; choose from {', '.join(COMPARISONS)}")
    if spec.images is not None and spec.images < 1:
        raise UserError(f"--images: got {spec.images}; expected an integer >= 1")
    out = Path(spec.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {shown(str(out))} exists and is not a folder; expected a bench folder")
    if out.is_dir() and ((out / "config.yaml").is_file() or any((out / n).exists() for n in RUN_OUTPUTS)):
        kind = run_kind(out)
        raise UserError(f"--out {shown(str(out))} holds a {kind + ' ' if kind else ''}run, not a bench; choose "
                        "another --out")
    for setting, setting_sets in spec.settings.items():
        base = _config(spec, setting_sets)
        resolve_device(base.run.device)
        split_ranges(spec, _full_test_split(base))
        d = base.distillation
        for method in spec.methods:  # every run's config resolves (a recipe, a seed)
            for seed in spec.seeds:
                _config(spec, [*setting_sets, f"run.seed={seed}"], method)
        if "teacher" in spec.methods or "real-kd" in spec.methods or d.synthesizer == "diffusion":
            if not d.teacher_checkpoint:
                raise UserError(f"config key 'distillation.teacher_checkpoint' is not set (setting '{setting}')")
            read_classifier_meta(d.teacher_checkpoint)
        if d.synthesizer == "diffusion" and any(m in RECIPES for m in spec.methods):
            if not d.diffusion_checkpoint:
                raise UserError(f"config key 'distillation.diffusion_checkpoint' is not set (setting '{setting}')")
            try:
                load_prior(d.diffusion_checkpoint)
            except UserError as e:
                raise UserError(f"setting '{setting}': {e}") from None
        if ("teacher" in spec.methods or "real-kd" in spec.methods) and not base.data.dataset:
            raise UserError(f"config key 'data.dataset' is not set (setting '{setting}'); the teacher and real-kd "
                            "references need a labelled dataset")


def run_bench(spec: BenchSpec) -> dict:
    """Run (or resume) every (setting, method, comparison, seed); write ``bench.md``, ``bench.json`` and
    ``bench.png`` under ``spec.out``."""
    _check_spec(spec)
    out = Path(spec.out)
    rows: list[dict] = []
    meta: dict = {}
    for setting, setting_sets in spec.settings.items():
        base = _config(spec, setting_sets)
        d = base.distillation
        images = spec.images if spec.images is not None else d.epochs * d.synthesis_batch_size
        if images < 1:
            raise UserError(f"--images: got {images}; it must be >= 1")
        rounds = math.ceil(images / d.synthesis_batch_size)
        time_rounds = QUICK_TIME_ROUNDS if spec.quick else UNREACHABLE_ROUNDS
        # Step milestones keep their place in the run when the time comparison stretches the rounds.
        stretched = [max(1, round(m * time_rounds / d.epochs)) for m in d.milestones]
        # Per comparison: the distill overrides, and real-KD's (steps, budget): KD steps match the distill runs'.
        plans = {"images": ([f"distillation.epochs={rounds}", "distillation.max_seconds=0"],
                            rounds * d.train_iterations, None),
                 "time": ([f"distillation.epochs={time_rounds}", f"distillation.max_seconds={spec.budget_seconds}",
                           f"distillation.milestones={stretched}"],
                          time_rounds * d.train_iterations, spec.budget_seconds)}
        unseen = unseen_classes(base)
        meta[setting] = {"images_per_method": rounds * d.synthesis_batch_size, "unseen_classes": unseen,
                         "prior": d.diffusion_checkpoint, "overrides": setting_sets}
        test = _full_test_split(base)
        ranges = split_ranges(spec, test)
        meta[setting]["ranges"] = ranges
        prefix = out / setting
        for method in spec.methods:
            comparisons = ("-",) if method == "teacher" else [c for c in COMPARISONS if c in spec.comparisons]
            for comparison in comparisons:
                runs = []
                seeds = spec.seeds[:1] if method == "teacher" else spec.seeds
                for seed in seeds:
                    folder = prefix / method / comparison / f"seed{seed}"
                    print(f"fastad bench: {setting} / {method} / {comparison} / seed {seed} -> {folder}", flush=True)
                    if method == "teacher":
                        cfg, run = base, _teacher_run(base, folder)
                    else:
                        sets, steps, budget = plans[comparison]
                        cfg = _config(spec, [*setting_sets, *sets, f"run.seed={seed}"], method)
                        run = (_real_kd_run(cfg, folder, steps=steps, max_seconds=budget) if method == "real-kd"
                               else _distill_run(cfg, folder))
                    scores = _split_scores(cfg, folder, test, ranges, teacher=method == "teacher") if ranges else None
                    runs.append({**run, "seed": seed, "split_scores": scores})
                rows.append(_row(setting, method, comparison, spec, runs, unseen))
        meta[setting]["chosen"] = _choose(rows, setting)
    # Efficiency: counted synthesis FLOPs per image x measured images/s, over this
    # machine's float32 matmul rate, measured now with the runs' thread setting.
    base = _config(spec, [])
    set_threads(base.run.threads)
    peak = matmul_flops_per_second(n=256 if spec.quick else 1024, device=resolve_device(base.run.device))
    flops: dict[tuple[str, str], float] = {}
    for r in rows:
        key = (r["setting"], r["method"])
        if r["method"] in RECIPES and key not in flops:
            flops[key] = synthesis_flops_per_image(_config(spec, spec.settings[r["setting"]], r["method"]))
        if key in flops and r["synthesis_images_per_second"] is not None:
            achieved = flops[key] * r["synthesis_images_per_second"]
            r.update({"synthesis_flops_per_image": flops[key], "synthesis_flops_per_second": achieved,
                      "matmul_efficiency": achieved / peak})
    result = {"spec": asdict(spec), "settings": meta, "budget_seconds": spec.budget_seconds,
              "deepinversion_iterations": base.deepinversion.iterations,
              "matmul_flops_per_second": peak, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "bench.md").write_text(format_table(result))
    plot_bench(result, out / "bench.png")
    return result


def _choose(rows: list[dict], setting: str) -> dict[str, str]:
    """Per comparison, the data-free method with the best mean top-1 on the validation range."""
    best: dict[str, dict] = {}
    for r in rows:
        if r["setting"] == setting and r["data_free"] and "validation_top1_mean" in r:
            if r["comparison"] not in best or r["validation_top1_mean"] > best[r["comparison"]]["validation_top1_mean"]:
                best[r["comparison"]] = r
    return {comparison: r["method"] for comparison, r in best.items()}


def _row(setting: str, method: str, comparison: str, spec: BenchSpec, runs: list[dict], unseen: list[int]) -> dict:
    top1 = [r["student_top1"] for r in runs]
    mean, std = _mean_std(top1)
    row = {"setting": setting, "method": method, "comparison": comparison, "seeds": [r["seed"] for r in runs],
           "top1": top1, "top1_mean": mean, "top1_std": std, "data_free": method not in REFERENCES}
    if all(r.get("split_scores") for r in runs):
        for name in runs[0]["split_scores"]:
            scores = [r["split_scores"][name] for r in runs]
            row[f"{name}_top1"] = [s["top1"] for s in scores]
            row[f"{name}_top1_mean"], row[f"{name}_top1_std"] = _mean_std(row[f"{name}_top1"])
            if unseen:
                row[f"{name}_unseen_top1"] = [statistics.mean(s["per_class"][c] for c in unseen) for s in scores]
                row[f"{name}_unseen_top1_mean"], row[f"{name}_unseen_top1_std"] = _mean_std(
                    row[f"{name}_unseen_top1"])
    if unseen and all(r.get("student_per_class") for r in runs):
        # Accuracy on the classes the prior never saw, and on the rest, per run (then mean and spread).
        seen = [c for c in range(len(runs[0]["student_per_class"])) if c not in unseen]
        for name, classes in (("unseen", unseen), ("seen", seen)):
            vals = [statistics.mean(r["student_per_class"][c] for c in classes) for r in runs]
            row[f"{name}_top1"] = vals
            row[f"{name}_top1_mean"], row[f"{name}_top1_std"] = _mean_std(vals)
    if method == "teacher":
        return row
    synth_s = sum(r["synthesis_seconds"] for r in runs)
    n_images = [r["images_synthesized"] for r in runs]
    row.update({"images_synthesized": statistics.mean(n_images),
                "synthesis_images_per_second": sum(n_images) / synth_s if synth_s > 0 else None,
                "wall_seconds": statistics.mean(r["wall_seconds"] for r in runs),
                "stopped_by_budget": [bool(r.get("stopped_by_budget")) for r in runs]})
    if method == "real-kd":
        row["real_images_seen"] = statistics.mean(r["real_images_seen"] for r in runs)
    return row


def _pm(row: dict, key: str) -> str:
    if f"{key}_mean" not in row:
        return "-"
    return f"{row[f'{key}_mean']:.2f}" + (f" ± {row[f'{key}_std']:.2f}" if len(row[key]) > 1 else "")


def _shown(path: str | None) -> str | None:
    """A path as the table shows it: relative to the working folder where it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except (TypeError, ValueError):
        return path


def format_table(result: dict) -> str:
    """The Markdown tables of ``bench.md``: one per setting."""
    di = result["deepinversion_iterations"]
    out: list[str] = []
    for setting, meta in result["settings"].items():
        unseen, ranges = meta["unseen_classes"], meta.get("ranges") or {}
        halves = [f"{name} [{a}:{b}]" for name, (a, b) in ranges.items()]
        out += [f"### {setting}: prior `{_shown(meta['prior'])}`" + (f", never saw classes {unseen}" if unseen else ""), "",
                "| method | comparison | student top-1 (%) | " + "".join(f"{h} (%) | " for h in halves)
                + "unseen classes (%) | " + "".join(f"unseen, {h} (%) | " for h in halves if unseen)
                + "images synthesised | synthesis images/s | synthesis GFLOP/s (% of fp32 matmul) | wall s |",
                "|---" * (8 + len(halves) * (2 if unseen else 1)) + "|"]
        for r in (r for r in result["rows"] if r["setting"] == setting):
            name = {"deepinversion": f"deepinversion ({di} iterations)", "real-kd": "real-kd (not data-free)",
                    "teacher": "teacher (reference)"}.get(r["method"], r["method"])
            if r["method"] == meta.get("chosen", {}).get(r["comparison"]):
                name = f"**{name}** (chosen)"
            split = "".join(f"{_pm(r, f'{n}_top1')} | " for n in ranges)
            split_unseen = "".join(f"{_pm(r, f'{n}_unseen_top1')} | " for n in ranges) if unseen else ""
            if r["method"] == "teacher":
                out.append(f"| {name} | - | {_pm(r, 'top1')} | {split}{_pm(r, 'unseen_top1')} | {split_unseen}"
                           "- | - | - | - |")
                continue
            images = f"0 ({r['real_images_seen']:.0f} real seen)" if r["method"] == "real-kd" \
                else f"{r['images_synthesized']:.0f}"
            ips = "-" if r["synthesis_images_per_second"] is None else f"{r['synthesis_images_per_second']:.2f}"
            eff = "-" if "matmul_efficiency" not in r else \
                f"{r['synthesis_flops_per_second'] / 1e9:.2f} ({100 * r['matmul_efficiency']:.1f}%)"
            out.append(f"| {name} | {r['comparison']} | {_pm(r, 'top1')} | {split}{_pm(r, 'unseen_top1')} | "
                       f"{split_unseen}{images} | {ips} | {eff} | {r['wall_seconds']:.1f} |")
        for comparison, method in meta.get("chosen", {}).items():
            r = next(r for r in result["rows"] if r["setting"] == setting and r["method"] == method
                     and r["comparison"] == comparison)
            (va, vb), (ra, rb) = ranges["validation"], ranges["report"]
            out += ["", f"Chosen at equal {comparison} on validation [{va}:{vb}]: `{method}` "
                        f"({_pm(r, 'validation_top1')}); on report [{ra}:{rb}], which no choice saw: "
                        f"{_pm(r, 'report_top1')}" + (f", unseen classes {_pm(r, 'report_unseen_top1')}" if unseen
                                                        else "") + "."]
        if "images" in result["spec"]["comparisons"]:
            out += ["", f"`images`: every method synthesises {meta['images_per_method']} images."]
        out.append("")
    seeds = result["spec"]["seeds"]
    out.append(f"`time` = every method gets {result['budget_seconds']:g} s of synthesis + training "
               "(`distillation.max_seconds`; real-kd: training), with the lr schedule ending with the budget. "
               f"Student top-1 is the mean ± std over seeds {seeds}; unseen classes = mean per-class top-1 on the "
               "teacher's classes the prior never saw; validation and report are ranges [start:stop] of the test "
               "split, on which every run's classifier is scored again. wall s = synthesis + training + "
               "evaluation, mean per run. "
               "Synthesis FLOP/s = FLOPs per image (FlopCounterMode's formulas: prior forwards, teacher "
               "forward/backward) x images/s, against this machine's float32 matmul rate measured in this "
               f"invocation: {result['matmul_flops_per_second'] / 1e9:.1f} GFLOP/s. real-kd trains the same student "
               "by KD on the teacher's real training images: a reference, not a data-free method.")
    return "\n".join(out) + "\n"
