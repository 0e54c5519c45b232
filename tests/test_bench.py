"""``fastad bench --quick`` end to end on tiny models: every method and reference, both comparisons,
bench.md/bench.json contents, and a second invocation that reuses the finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fastad.config.recipes import RECIPES
from fastad.cli.main import main
from fastad.diffusion import build_unet, save_prior
from fastad.models import create_model, save_classifier


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """As ``test_distill.assets`` (tiny teacher and prior, random weights), but the train split stays:
    the real-kd reference reads it."""
    from conftest import make_fmnist_like

    root = tmp_path_factory.mktemp("bench_assets")
    data = make_fmnist_like(root / "fmnist", n_train=40, n_test=40)
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=10, in_channels=1)
    save_classifier(root / "teacher.safetensors", teacher, {
        "arch": "resnet8", "num_classes": 10, "in_channels": 1, "input_size": [28, 28], "dataset": "fashion_mnist",
        "mean": [0.2860], "std": [0.3530]})
    unet = build_unet(sample_size=28, in_channels=1, block_out_channels=(8, 16, 16))
    save_prior(root / "prior", unet, num_train_timesteps=100)
    # The out-of-domain setting's prior names the classes it was trained on: 0-4 of 10.
    save_prior(root / "prior_c0-4", unet, num_train_timesteps=100, metadata={"classes": [0, 1, 2, 3, 4]})
    return {"data": data, "teacher": root / "teacher.safetensors", "prior": root / "prior",
            "ood_prior": root / "prior_c0-4"}


def bench_args(assets, out):
    sets = [f"data.root={assets['data']}", f"distillation.teacher_checkpoint={assets['teacher']}",
            f"distillation.diffusion_checkpoint={assets['prior']}", "distillation.teacher_arch=resnet8",
            "distillation.student_arch=resnet8", "distillation.num_classes=10", "distillation.image_size=[28, 28]",
            "distillation.synthesis_batch_size=8", "distillation.train_batch_size=8", "distillation.buffer_size=16",
            "distillation.train_iterations=2", "distillation.holdout_images=8", "fast_ad.T=100",
            "data.train_range=null", "distillation.compile_kd_teacher=false"]
    config = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist.yaml"
    return ["bench", "--quick", "--config", config, "--out", out, "--budget-seconds", "0.05",
            *[a for s in sets for a in ("--set", s)]]


def test_bench_quick(assets, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main([str(a) for a in bench_args(assets, out)] + ["--ood-prior", str(assets["ood_prior"])]) == 0, \
        capsys.readouterr().err
    stdout = capsys.readouterr().out
    result = json.loads((out / "bench.json").read_text())
    rows = {(r["setting"], r["method"], r["comparison"]): r for r in result["rows"]}
    methods = list(RECIPES) + ["real-kd"]
    expected = {("teacher", "-")} | {(m, c) for m in methods for c in ("images", "time")}
    assert set(rows) == {(s, *k) for s in ("in-domain", "out-of-domain") for k in expected}
    assert result["settings"]["in-domain"]["unseen_classes"] == []
    assert result["settings"]["out-of-domain"]["unseen_classes"] == [5, 6, 7, 8, 9]
    assert result["settings"]["in-domain"]["images_per_method"] == 16 and result["deepinversion_iterations"] == 2
    for m in RECIPES:
        r = rows["in-domain", m, "images"]
        assert r["images_synthesized"] == 16  # equal images: 2 rounds x 8
        assert r["stopped_by_budget"] == [False] and 0 <= r["top1_mean"] <= 100
        assert rows["in-domain", m, "time"]["stopped_by_budget"] == [True]  # the 0.05 s budget ends the run
        assert rows["in-domain", m, "time"]["synthesis_images_per_second"] > 0
        assert r["synthesis_flops_per_image"] > 0 and 0 < rows["in-domain", m, "time"]["matmul_efficiency"] < 10
        assert "unseen_top1_mean" not in r
        # Out of domain: the mean over classes 5-9 of the run's own per-class accuracies.
        o = rows["out-of-domain", m, "images"]
        per_class = json.loads((out / "out-of-domain" / m / "images" / "seed0" / "summary.json").read_text())[
            "student_per_class"]
        assert o["unseen_top1"] == [pytest.approx(sum(per_class[5:]) / 5)]
        assert o["seen_top1"] == [pytest.approx(sum(per_class[:5]) / 5)]
    assert result["matmul_flops_per_second"] > 0
    flops = {m: rows["in-domain", m, "images"]["synthesis_flops_per_image"] for m in RECIPES}
    assert flops["cadr-full"] > flops["cadr"] > flops["none"] == flops["none-noclip"]
    assert flops["cadr"] == flops["fixed"] and flops["deepinversion"] > 0
    # Counted on a fresh synthesizer: nothing is uncovered yet, so x0-routed-smooth costs unguided DDIM plus the
    # teacher's reading of the plain samples (the coverage count).
    assert flops["cadr"] > flops["x0-routed-smooth"] > flops["none"]
    assert not rows["in-domain", "real-kd", "images"]["data_free"]
    assert rows["in-domain", "real-kd", "images"]["images_synthesized"] == 0
    summary = json.loads((out / "in-domain" / "real-kd" / "images" / "seed0" / "summary.json").read_text())
    assert summary["steps"] == 2 * 2  # the distill runs' step count: 2 rounds x 2 KD steps
    md = (out / "bench.md").read_text()
    assert "| deepinversion (2 iterations) | images |" in md and "real-kd (not data-free)" in md
    assert "never saw classes [5, 6, 7, 8, 9]" in md
    n_rows = len(expected)
    assert "teacher (reference)" in md and sum(l.startswith("| ") for l in md.splitlines()) == 2 * (1 + n_rows)
    assert "| method | comparison |" in stdout
    assert (out / "bench.png").stat().st_size > 10_000  # the accuracy-vs-time plot

    # Every student is scored again on the two halves of the test split (40 images): the same figures as
    # `fastad evaluate --range` gives; the best data-free method on the validation half is the chosen one.
    assert result["settings"]["in-domain"]["ranges"] == {"validation": [0, 20], "report": [20, 40]}
    for method, half, (a, b) in (("cadr", "validation", (0, 20)), ("real-kd", "report", (20, 40))):
        report = tmp_path / f"{method}.json"
        assert main(["evaluate", "--checkpoint", str(out / "in-domain" / method / "images" / "seed0" /
                                                    "student.safetensors"), "--root", str(assets["data"]),
                     "--range", str(a), str(b), "--json", str(report)]) == 0
        assert rows["in-domain", method, "images"][f"{half}_top1"] == [
            pytest.approx(json.loads(report.read_text())["top1"])]
    o = rows["out-of-domain", "cadr", "images"]
    assert len(o["report_unseen_top1"]) == 1 and 0 <= o["report_unseen_top1_mean"] <= 100
    for setting in ("in-domain", "out-of-domain"):
        for comparison, method in result["settings"][setting]["chosen"].items():
            best = max(r["validation_top1_mean"] for (st, m, c), r in rows.items()
                       if st == setting and c == comparison and r["data_free"])
            assert rows[setting, method, comparison]["validation_top1_mean"] == best
    chosen = result["settings"]["in-domain"]["chosen"]["images"]
    assert f"Chosen at equal images on validation [0:20]: `{chosen}`" in md and f"**{chosen}** (chosen)" in md

    # A second invocation reuses every finished run and resumes an interrupted one (last.pt, no summary).
    interrupted = out / "in-domain" / "cadr" / "images" / "seed0" / "summary.json"
    interrupted.unlink()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    assert main([str(a) for a in bench_args(assets, out)] + ["--ood-prior", str(assets["ood_prior"])]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("summary.json") if p != interrupted} == mtimes
    assert json.loads(interrupted.read_text())["images_synthesized"] == 16
    timed = ("synthesis_flops_per_second", "matmul_efficiency")  # against a matmul rate measured anew
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timed} for r in rows]  # noqa: E731
    assert strip(json.loads((out / "bench.json").read_text())["rows"]) == strip(result["rows"])

    # Other settings in the same --out are refused rather than silently mixed with the old runs.
    assert main([str(a) for a in bench_args(assets, out)] + ["--set", "distillation.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "other settings" in err


def test_bench_bad_budget_one_line(assets, tmp_path, capsys):
    rc = main([str(a) for a in bench_args(assets, tmp_path / "b")] + ["--budget-seconds", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--budget-seconds" in err


def test_bench_overlapping_ranges_one_line(assets, tmp_path, capsys):
    rc = main([str(a) for a in bench_args(assets, tmp_path / "b")] + ["--validation-range", "0", "30",
                                                                       "--report-range", "20", "40"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "overlap" in err and "0 30" in err
    assert not (tmp_path / "b").exists()
    rc = main([str(a) for a in bench_args(assets, tmp_path / "b")] + ["--report-range", "20", "41"])
    err = capsys.readouterr().err
    assert rc == 2 and "--report-range: got 20 41" in err and "40 images" in err


def test_bench_user_sets_win_over_the_recipe():
    """A recipe sets the whole sampler section; the user's --set still reaches every run (as with
    ``fastad distill --recipe``), so a bench of another solver or step count runs what it says."""
    from fastad.bench.runner import BenchSpec, _config

    config = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist.yaml"
    spec = BenchSpec(config=str(config), sets=["sampler.spacing=trailing", "fast_ad.ddim_steps=7"])
    for method in ("none", "cadr"):
        cfg = _config(spec, ["run.seed=1"], method)
        assert (cfg.sampler.spacing, cfg.fast_ad.ddim_steps, cfg.run.seed) == ("trailing", 7, 1)
    none, cadr = _config(spec, [], "none").sampler, _config(spec, [], "cadr").sampler  # the rest is the recipe's
    assert (none.solver, none.clip_x0, cadr.solver, cadr.clip_x0) == ("dpmpp-2m", True, "ddim", False)
    spec.sets = ["sampler.solver=dpmpp-2m"]
    assert _config(spec, [], "cadr").sampler.solver == "dpmpp-2m"
