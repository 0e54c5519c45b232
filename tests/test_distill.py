"""``fastad distill`` end to end with tiny models: outputs, synthesis recipes, exports, exact resume after
SIGKILL, the data-free rule, conditioning and one-line errors; and the pieces it runs on: the builder,
the synthesizer (plain DDIM, guided share, routing by coverage), the KD step, captions and progress."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from safetensors.torch import load_file

from fastad.cli.main import main
from fastad.config import load_config
from fastad.config.recipes import RECIPES, recipe_sets
from fastad.data import make_view
from fastad.diffusion import SamplerConfig, build_unet, ddim_sample, ddim_timesteps, load_prior, save_prior
from fastad.distill import Synthesizer
from fastad.distill.synthesis import unconditional
from fastad.errors import UserError
from fastad.guidance import FastADConfig, GuidanceConfig
from fastad.guidance.routing import COVERAGE_THRESHOLD, Coverage, RoutingConfig
from fastad.models import create_model, save_classifier

FMNIST_MEAN, FMNIST_STD = [0.2860], [0.3530]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """A test-only Fashion-MNIST-format folder, a tiny teacher and two tiny priors (random weights)."""
    from conftest import make_fmnist_like

    root = tmp_path_factory.mktemp("assets")
    data = make_fmnist_like(root / "fmnist", n_train=20, n_test=60)
    for f in data.glob("train-*"):
        f.unlink()  # the data-free rule: distillation must never need the train split
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=10, in_channels=1)
    save_classifier(root / "teacher.safetensors", teacher, {
        "arch": "resnet8", "num_classes": 10, "in_channels": 1, "input_size": [28, 28], "dataset": "fashion_mnist",
        "mean": FMNIST_MEAN, "std": FMNIST_STD})
    for name, classes in (("prior", None), ("prior_cond", 10)):
        unet = build_unet(sample_size=28, in_channels=1, block_out_channels=(8, 16, 16), num_class_embeds=classes)
        save_prior(root / name, unet, num_train_timesteps=100)
    return {"data": data, "teacher": root / "teacher.safetensors", "prior": root / "prior",
            "prior_cond": root / "prior_cond"}


@pytest.fixture(scope="module")
def parts(assets):
    """The unconditional tiny prior, loaded, and a random frozen resnet8 teacher."""
    torch.manual_seed(1)
    teacher = create_model("resnet8", num_classes=10, in_channels=1).eval().requires_grad_(False)
    return load_prior(assets["prior"]), teacher


def distill_args(assets, out, *extra, rounds=3):
    return ["distill", "--teacher", assets["teacher"], "--prior", assets["prior"], "--out", out, "--epochs", rounds,
            "--set", f"data.root={assets['data']}", "--set", "distillation.teacher_arch=resnet8",
            "--set", "distillation.student_arch=resnet8", "--set", "distillation.num_classes=10",
            "--set", "distillation.image_size=[28, 28]", "--set", "distillation.synthesis_batch_size=8",
            "--set", "distillation.train_batch_size=8", "--set", "distillation.train_iterations=2",
            "--set", "distillation.buffer_size=16", "--set", "distillation.eval_every=2",
            "--set", "fast_ad.ddim_steps=2", "--set", "fast_ad.T=100", "--set", "logging.progress=false",
            "--set", "logging.tensorboard=false", "--set", "distillation.holdout_images=8",
            "--set", "distillation.compile_kd_teacher=false", *extra]


def run_cli(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def metrics(out: Path) -> list[dict]:
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


def make_synth(prior, teacher, *, fast_ad=None, guidance=None, routing=None, sampler=None, **kw) -> Synthesizer:
    """A Synthesizer over the tiny unconditional prior; by default fixed-strength guidance, 2 DDIM steps, clamped."""
    return Synthesizer(prior, teacher, fast_ad=fast_ad or FastADConfig(guidance="fixed", lambda_max=3.0, ddim_steps=2),
                       guidance=guidance or GuidanceConfig(), routing=routing or RoutingConfig(),
                       sampler=sampler or SamplerConfig(clip_x0=True), view=make_view(FMNIST_MEAN, FMNIST_STD),
                       provider=unconditional, device=torch.device("cpu"), **kw)


# --- fastad distill end to end --------------------------------------------------------------------------------


@pytest.mark.parametrize("guidance", ["cadr", "fixed", "none"])
def test_distill_end_to_end(assets, tmp_path, capsys, guidance):
    out = tmp_path / "run"
    rc, stdout, err = run_cli(distill_args(assets, out, "--guidance", guidance), capsys)
    assert rc == 0, err
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "student.safetensors", "summary.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["round_00002.png", "round_00003.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_synthesized"] == 24 and summary["rounds"] == 3 and summary["guidance"] == guidance
    assert 0 <= summary["student_top1"] <= 100 and 0 <= summary["teacher_top1"] <= 100
    rows = metrics(out)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert rows[-1]["buffer_size"] == 16  # FIFO capacity bound
    assert "eval/top1" in rows[1] and "eval/top1" not in rows[0]
    if guidance == "none":
        assert all(r["guidance/steps"] == 0 for r in rows)
    else:
        assert all(r["guidance/steps"] == 2 for r in rows)  # one guided batch, one record per DDIM step
    assert "student top-1" in stdout and "images synthesised" in stdout


@pytest.mark.parametrize("recipe", ["x0-routed-smooth", "cadr", "fixed"])
def test_recipes_end_to_end(assets, tmp_path, capsys, recipe):
    """--recipe sets every synthesis key; the guided recipes run through fastad distill and their keys reach
    the guidance: the gate (fixed = lambda_max), the routing (x0-routed-smooth: round 1 is plain DDIM and
    measures coverage; 8 samples cannot cover 10 classes, so round 2 guides) and the rule."""
    out = tmp_path / recipe
    # tau_ent is the config's, not the recipe's: near the random teacher's entropy (at most ln 10 = 2.303 nats)
    # the entropy gate stays below lambda_max / 2, so it differs from a fixed gate.
    rc, _, err = run_cli(distill_args(assets, out, "--recipe", recipe, "--set", "fast_ad.tau_ent=2.3", rounds=2),
                         capsys)
    assert rc == 0, err
    cfg = load_config(out / "config.yaml")
    for item in recipe_sets(recipe):
        key, _, _ = item.partition("=")
        section, name = key.split(".")
        want = RECIPES[recipe].get(key, getattr(getattr(type(cfg)(), section), name))
        assert getattr(getattr(cfg, section), name) == want, key
    summary = json.loads((out / "summary.json").read_text())
    assert summary["guidance"] == cfg.fast_ad.guidance and summary["synthesizer"] == "diffusion"
    assert len(summary["student_per_class"]) == 10 and summary["images_synthesized"] == 16
    rows = metrics(out)
    if recipe == "x0-routed-smooth":
        assert rows[0]["guidance/steps"] == 0 and rows[1]["guidance/steps"] == 2
        assert rows[1]["guidance/gate_mean"] == pytest.approx(1.0)  # fixed gate, lambda_max 1.0
        assert rows[1]["guidance/l_bn"] == 0  # bn_weight 0
    else:
        assert [r["guidance/steps"] for r in rows] == [2, 2]
        gate = rows[0]["guidance/gate_mean"]
        assert gate == pytest.approx(1.5) if recipe == "fixed" else 0 < gate < 0.75 + 1e-3
        assert rows[0]["guidance/l_bn"] > 0  # the paper's L_BN term


def test_extended_cosine_resume_with_smoothing_is_exact(assets, tmp_path, capsys):
    """The guidance's smoothing noise draws from the run's generator, and a run extended with --epochs
    continues on the longer cosine curve: 1 round + extension to 2 equals 2 rounds."""
    extra = ["--guidance", "cadr", "--set", "guidance.smooth_samples=2", "--set", "guidance.smooth_sigma=0.3",
             "--set", "distillation.schedule=cosine"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli(distill_args(assets, a, *extra, rounds=2), capsys)[0] == 0
    assert run_cli(distill_args(assets, b, *extra, rounds=1), capsys)[0] == 0
    assert run_cli(["distill", "--resume", b, "--epochs", 2], capsys)[0] == 0
    wa, wb = load_file(a / "student.safetensors"), load_file(b / "student.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["guidance/steps"] for r in metrics(b)] == [2, 2]


def test_eval_range_scores_only_those_test_images(assets, tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = run_cli(distill_args(assets, out, "--set", "data.dataset=fashion_mnist", "--set",
                                      "data.eval_range=[20, 50]", rounds=1), capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluated_on"] == "fashion_mnist test split[20:50] (30 images)"
    assert summary["student_top1"] is not None


def test_save_images(assets, tmp_path, capsys):
    out = tmp_path / "png"
    assert run_cli(distill_args(assets, out, "--save-images", "png", rounds=1), capsys)[0] == 0
    pngs = list((out / "synthetic").rglob("*.png"))
    assert len(pngs) == 8 and len({p.parent.name for p in pngs}) == 8  # balanced: 8 different classes
    out = tmp_path / "npz"
    assert run_cli(distill_args(assets, out, "--save-images", "npz", rounds=2), capsys)[0] == 0
    z = np.load(out / "synthetic" / "round_00002.npz")
    assert z["images"].shape == (8, 1, 28, 28) and z["images"].dtype == np.uint8 and z["labels"].shape == (8,)


def test_resume_after_sigkill_is_bit_identical(assets, tmp_path, capsys):
    """A run killed with SIGKILL after round k and resumed ends with the same student as an uninterrupted run."""
    rounds = 6
    extra = ["--set", "distillation.train_iterations=15", "--set", "fast_ad.ddim_steps=3"]
    straight = tmp_path / "straight"
    assert run_cli(distill_args(assets, straight, *extra, rounds=rounds), capsys)[0] == 0

    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "fastad", *[str(a) for a in distill_args(assets, killed, *extra, rounds=rounds)]]
    proc = subprocess.Popen(args, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if rows.is_file() and len(rows.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "summary.json").exists()
    done = torch.load(killed / "last.pt", weights_only=True)["progress"]["round"]
    assert 1 <= done < rounds

    assert run_cli(["distill", "--resume", killed], capsys)[0] == 0
    a, b = load_file(straight / "student.safetensors"), load_file(killed / "student.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["round"] for r in metrics(killed)] == list(range(1, rounds + 1))


def test_reads_only_the_test_split(assets, tmp_path, capsys, monkeypatch):
    """The data-free rule: the train split's files are absent (see ``assets``) and never requested."""
    import fastad.data.dataset as dataset

    requested = []
    real = dataset.load_dataset

    def spy(name, split, **kw):
        requested.append(split)
        return real(name, split, **kw)

    monkeypatch.setattr(dataset, "load_dataset", spy)  # every reader of a split goes through it
    assert not list(assets["data"].glob("train-*"))
    assert run_cli(distill_args(assets, tmp_path / "r", rounds=1), capsys)[0] == 0
    assert requested == ["test"]


def test_class_conditional_prior(assets, tmp_path, capsys):
    rc, _, err = run_cli(distill_args(assets, tmp_path / "c", "--prior", assets["prior_cond"], rounds=1), capsys)
    assert rc == 0, err
    rc, _, err = run_cli(distill_args(assets, tmp_path / "d", "--prior", assets["prior_cond"],
                                      "--set", "distillation.conditioning=none", rounds=1), capsys)
    assert rc == 2 and "class-conditional" in err


@pytest.mark.parametrize("change, needle", [
    (["--set", "distillation.diffusion_checkpoint=null", "--prior", ""], "diffusion_checkpoint"),
    (["--set", "distillation.image_size=[32, 32]"], "config key 'distillation.image_size': got [32, 32] but the "
                                                    "teacher metadata says [28, 28]"),
    (["--set", "fast_ad.T=1000"], "fast_ad.T"),
    (["--set", "distillation.num_classes=100"], "distillation.num_classes"),
    (["--teacher", "nope.safetensors"], "nope.safetensors"),
    (["--recipe", "nope"], "--recipe"),
    (["--set", "guidance.rule=x0", "--set", "fast_ad.grad_mode=full"], "fast_ad.grad_mode"),
    # Keys that moved to their own sections, or were removed, are unknown.
    (["--set", "fast_ad.ddim_eta=0.5"], "fast_ad.ddim_eta"),
    (["--set", "fast_ad.rule=x0"], "fast_ad.rule"),
    (["--set", "fast_ad.inversion_fraction=0.5"], "fast_ad.inversion_fraction"),
    (["--set", "distillation.deepinversion_iterations=2"], "distillation.deepinversion_iterations"),
])
def test_bad_input_one_line(assets, tmp_path, capsys, change, needle):
    rc, _, err = run_cli(distill_args(assets, tmp_path / "x", *change, rounds=1), capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Fashion-MNIST not installed")
def test_embedded_default_with_shipped_models(tmp_path, capsys, monkeypatch):
    """No --config: the shipped teacher and prior on the real Fashion-MNIST test split, from any folder."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    rc, stdout, err = run_cli(["distill", "--epochs", "1", "--out", out, "--set", "distillation.synthesis_batch_size=10",
                               "--set", "distillation.train_iterations=2", "--set", "fast_ad.ddim_steps=2",
                               "--set", "logging.progress=false", "--set", "logging.tensorboard=false"], capsys)
    assert rc == 0, err
    assert "embedded default" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher_top1"] == pytest.approx(93.33, abs=0.01)  # the shipped teacher's recorded accuracy
    assert summary["images_synthesized"] == 10 and 0 <= summary["student_top1"] <= 100
    assert summary["wall_seconds"] > 0


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Fashion-MNIST not installed")
def test_prior_without_config_swaps_it_into_the_embedded_default(tmp_path, capsys, monkeypatch):
    """--prior with no --config: the embedded default with that prior and the shipped teacher; --recipe applies a
    complete synthesis recipe, under the user's --set."""
    from fastad.cli.common import REPO

    monkeypatch.chdir(tmp_path)
    prior = REPO / "models" / "fmnist_prior_50k60k_classes0-4"
    out = tmp_path / "run"
    rc, stdout, err = run_cli(["distill", "--prior", prior, "--recipe", "x0-routed-smooth", "--epochs", "1", "--out", out,
                               "--set", "guidance.smooth_sigma=0.5",
                               "--set", "distillation.synthesis_batch_size=4", "--set", "distillation.train_iterations=1",
                               "--set", "fast_ad.ddim_steps=1", "--set", "distillation.evaluate_teacher=false",
                               "--set", "logging.progress=false", "--set", "logging.tensorboard=false"], capsys)
    assert rc == 0, err
    assert "your prior and the shipped teacher" in stdout
    saved = (out / "config.yaml").read_text()
    assert f"diffusion_checkpoint: {prior}" in saved and "fmnist_teacher_resnet20" in saved
    cfg = load_config(out / "config.yaml")
    assert (cfg.fast_ad.guidance, cfg.guidance.rule, cfg.routing.guide_classes, cfg.guidance.smooth_samples,
            cfg.guidance.smooth_sigma, cfg.fast_ad.ddim_steps) == ("fixed", "x0", "uncovered", 4, 0.5, 1)
    rc, _, err = run_cli(["distill", "--resume", out, "--recipe", "cadr"], capsys)
    assert rc != 0 and "--recipe cadr with --resume" in err and "Traceback" not in err


def test_embedded_default_names_a_prior_given_by_set(capsys):
    """A prior given as --set distillation.diffusion_checkpoint=... is the user's, and the first line says so."""
    import argparse

    from fastad.cli.common import use_embedded_default

    args = argparse.Namespace(set=["distillation.diffusion_checkpoint=/some/prior"], config=None)
    use_embedded_default(args, "distill", own={"teacher": None, "prior": None})
    assert "with your prior and the shipped teacher" in capsys.readouterr().out
    assert args.set[-1] == "distillation.diffusion_checkpoint=/some/prior"  # the user's --set still wins


def test_deepinversion_synthesizer_end_to_end(assets, tmp_path, capsys):
    """``distillation.synthesizer=deepinversion`` needs no prior: pixels optimised from noise."""
    out = tmp_path / "di"
    rc, _, err = run_cli(distill_args(assets, out, "--set", "distillation.diffusion_checkpoint=null", "--prior", "",
                                      "--recipe", "deepinversion", "--set", "deepinversion.iterations=2",
                                      rounds=2), capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["synthesizer"] == "deepinversion" and summary["guidance"] is None
    assert summary["images_synthesized"] == 16 and not summary["stopped_by_budget"]
    rows = metrics(out)
    assert rows[0]["deepinversion/iterations"] == 2 and rows[0]["deepinversion/batches"] == 1
    assert not any(k.startswith("guidance/") for k in rows[0])


def test_max_seconds_budget_stops_early(assets, tmp_path, capsys):
    """A tiny budget ends the run after its first round, which is then evaluated and summarised."""
    out = tmp_path / "budget"
    rc, _, err = run_cli(distill_args(assets, out, "--set", "distillation.max_seconds=1e-6", rounds=5), capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_budget"] and summary["rounds"] == 1 and summary["images_synthesized"] == 8
    assert summary["student_top1"] is not None  # round 1 is not an eval_every round, but is evaluated
    rows = metrics(out)
    assert [r["round"] for r in rows] == [1] and "eval/top1" in rows[0]
    assert run_cli(["distill", "--resume", out], capsys)[0] == 0  # a resumed finished run stays stopped
    assert json.loads((out / "summary.json").read_text())["rounds"] == 1


def test_grid_captions_name_the_target_only_of_guided_images(assets, tmp_path, capsys, monkeypatch):
    """The captions follow the round's own routing (asked before synthesis updates the coverage counts):
    nothing is guided in round 1 (no counts yet), so no caption names a target; in round 2 exactly the
    targets of uncovered classes are guided and named."""
    import fastad.distill.loop as loop

    aimed = []
    real = loop._captions

    def spy(names, targets, probs, mask):
        aimed.append(mask.clone())
        return real(names, targets, probs, mask)

    monkeypatch.setattr(loop, "_captions", spy)
    out = tmp_path / "cap"
    assert run_cli(distill_args(assets, out, "--recipe", "x0-routed-smooth", rounds=2), capsys)[0] == 0
    rows = metrics(out)
    assert rows[0]["guidance/steps"] == 0 and rows[1]["guidance/steps"] == 2  # round 1 was all plain DDIM
    assert len(aimed) == 2 and not aimed[0].any() and aimed[1].any()


# --- the builder -----------------------------------------------------------------------------------------------


def _build_config(assets, *sets):
    return load_config(None, sets=[
        f"distillation.teacher_checkpoint={assets['teacher']}", f"distillation.diffusion_checkpoint={assets['prior']}",
        "distillation.teacher_arch=resnet8", "distillation.student_arch=resnet8", "distillation.num_classes=10",
        "distillation.image_size=[28, 28]", "fast_ad.T=100", "fast_ad.ddim_steps=2", *sets])


@pytest.mark.parametrize("recipe", ["deepinversion", "none", "cadr", "x0-routed-smooth"])
def test_build_makes_the_configured_synthesizer(assets, recipe):
    """``build``: a DeepInversionSynthesizer (no prior, the deepinversion section's settings and the dataset's
    jitter) for synthesizer deepinversion, else a Synthesizer over the prior with the config's own sections."""
    from fastad.baselines import DeepInversionSynthesizer
    from fastad.data import dataset_info
    from fastad.distill import build

    cfg = _build_config(assets, *recipe_sets(recipe), "deepinversion.iterations=3", "deepinversion.tv_l2=2.5",
                        "deepinversion.l2=0.01")
    info = dataset_info("fashion_mnist")
    torch.manual_seed(0)
    built = build(cfg, info, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    synth = built.synthesizer
    assert not built.teacher.training and not any(p.requires_grad for p in built.teacher.parameters())
    assert (built.spec.mean, built.spec.std) == (FMNIST_MEAN, FMNIST_STD)  # from the teacher's metadata
    x = torch.linspace(-1, 1, 28 * 28).view(1, 1, 28, 28)
    torch.testing.assert_close(built.view(x), ((x + 1) / 2 - FMNIST_MEAN[0]) / FMNIST_STD[0])
    if recipe == "deepinversion":
        assert type(synth) is DeepInversionSynthesizer and built.prior is None
        assert (synth.iterations, synth.lr, synth.tv_l2, synth.l2) == (3, 0.05, 2.5, 0.01)
        assert (synth.crop_padding, synth.flip, synth.image_shape) == (info.crop_padding, info.flip, (1, 28, 28))
        assert synth.teacher is built.teacher
    else:
        assert type(synth) is Synthesizer and built.prior is not None and synth.prior is built.prior
        assert (synth.fast_ad, synth.guidance, synth.routing, synth.sampler) == (
            cfg.fast_ad, cfg.guidance, cfg.routing, cfg.sampler)
        assert synth.guided == (recipe != "none") and synth.student is None  # beta_adv 0: no student needed
        assert torch.equal(synth.timesteps, ddim_timesteps(100, 2, spacing=cfg.sampler.spacing))
        assert (synth.coverage is not None) == (recipe == "x0-routed-smooth")
    # The student's initialisation does not depend on the synthesis recipe.
    torch.manual_seed(0)
    again = build(_build_config(assets), info, device=torch.device("cpu"), generator=torch.Generator()).student
    s1, s2 = built.student.state_dict(), again.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_build_hands_the_student_to_the_adversarial_term(assets):
    from fastad.data import dataset_info
    from fastad.distill import build

    cfg = _build_config(assets, "fast_ad.beta_adv=0.5")
    built = build(cfg, dataset_info("fashion_mnist"), device=torch.device("cpu"), generator=torch.Generator())
    assert built.synthesizer.student is built.student


def test_build_compiles_a_copy_of_the_prior_and_lays_out_classifiers_channels_last(assets, monkeypatch):
    """``distillation.compile`` hands the prior's UNet to torch.compile with frozen weights, in a copy of the
    caller's Prior, and the guidance's teacher with dynamic shapes (the labelling and KD teacher stays eager);
    teacher and student convolutions are channels_last (measured faster on CPU)."""
    from fastad.distill import build

    calls = []

    def fake_compile(model, **kwargs):
        calls.append(kwargs)
        return nn.Identity()

    monkeypatch.setattr(torch, "compile", fake_compile)
    prior = load_prior(assets["prior"])
    unet = prior.unet
    built = build(_build_config(assets, "distillation.compile=true"), None, device=torch.device("cpu"),
                  generator=torch.Generator(), prior=prior)
    assert calls == [{"options": {"freezing": True}}, {"dynamic": True}]  # the prior, then the guidance's teacher
    assert isinstance(built.prior.unet, nn.Identity) and prior.unet is unet  # the caller's prior is untouched
    assert built.synthesizer.prior is built.prior
    assert isinstance(built.synthesizer.teacher, nn.Identity) and not isinstance(built.teacher, nn.Identity)
    for model in (built.teacher, built.student):
        convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    calls.clear()
    build(_build_config(assets), None, device=torch.device("cpu"), generator=torch.Generator())
    assert calls == []  # off by default


def test_compiled_kd_teacher_matches_the_eager_one_and_is_only_built_when_asked(assets):
    """``distillation.compile_kd_teacher``: the KD steps run the teacher compiled with frozen weights (a real
    inductor compile here), giving the eager teacher's logits; the guidance's teacher stays the eager one."""
    from fastad.distill import build
    from fastad.train.kd import CompiledTeacher

    built = build(_build_config(assets, "distillation.compile_kd_teacher=true"), None, device=torch.device("cpu"),
                  generator=torch.Generator())
    assert isinstance(built.kd_teacher, CompiledTeacher) and built.kd_teacher.teacher is built.teacher
    assert not built.kd_teacher.training  # frozen, as the teacher it wraps
    assert built.synthesizer.teacher is built.teacher
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager, compiled = built.teacher(x), built.kd_teacher(x)
    assert built.kd_teacher._compiled is not None, "the compile fell back to eager on this machine"
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    assert not torch.equal(compiled, torch.zeros_like(compiled))
    plain = build(_build_config(assets), None, device=torch.device("cpu"), generator=torch.Generator())
    assert plain.kd_teacher is plain.teacher  # off by default


def test_compiled_kd_teacher_falls_back_to_eager_once_with_a_warning(monkeypatch, capsys):
    """A compile that fails on its first call (no C++ compiler, say) leaves the eager teacher, said once; a
    forward under autograd never goes through the compiled one."""
    from fastad.train.kd import CompiledTeacher

    calls = []

    def broken(x):
        calls.append(len(x))
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: broken)
    teacher = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.LazyLinear(3)).eval()
    x = torch.randn(2, 1, 6, 6)
    want = teacher(x).detach()
    wrapped = CompiledTeacher(teacher)
    assert torch.equal(wrapped(x).detach(), want) and calls == []  # grad enabled: eager
    with torch.no_grad():
        first, second = wrapped(x), wrapped(x)
    assert torch.equal(first, want) and torch.equal(second, want) and calls == [2]
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "InvalidCxxCompiler: No working C++ compiler found" in err
    assert "more detail" not in err and len(err.strip().splitlines()) == 1


# --- the synthesizer -------------------------------------------------------------------------------------------


def test_unguided_synthesizer_is_plain_ddim(parts):
    """guidance 'none': exactly the images ddim_sample makes from the same generator (start noise first, then
    the ancestral noise), whatever the routing says, and the generator is left where ddim_sample leaves it."""
    prior, teacher = parts
    sampler = SamplerConfig(ddim_eta=0.5, spacing="trailing", clip_x0=True, final_abar="first")
    synth = make_synth(prior, teacher, fast_ad=FastADConfig(guidance="none", ddim_steps=3), sampler=sampler,
                       routing=RoutingConfig(guided_fraction=1.0))
    labels = torch.tensor([3, 1, 4, 1, 5, 9])
    gen = torch.Generator().manual_seed(0)
    got = synth(labels, generator=gen)

    ref = torch.Generator().manual_seed(0)
    x_T = torch.randn((6, *prior.sample_shape), generator=ref)
    want = ddim_sample(prior.bind(None), x_T, prior.alphas_cumprod, ddim_timesteps(100, 3, spacing="trailing"),
                       ddim_eta=0.5, generator=ref, final_abar="first", clip_x0=True).clamp(-1, 1)
    assert torch.equal(got, want)
    assert torch.equal(gen.get_state(), ref.get_state())
    assert not synth.guided and not synth.guided_mask(labels).any() and synth.stats.steps == []
    assert torch.equal(synth.plan_targets(labels, generator=gen), labels)


@pytest.mark.parametrize("guidance", ["none", "cadr"])
def test_dpm_solver_synthesizer(parts, guidance):
    """sampler.solver 'dpmpp-2m': unguided, exactly dpmpp_2m_sample's images from the same start noise; guided
    by CADR (an eps rule, so any solver), a guidance record per step and finite images."""
    from fastad.diffusion import dpmpp_2m_sample

    
    prior, teacher = parts
    sampler = SamplerConfig(clip_x0=True, solver="dpmpp-2m")
    synth = make_synth(prior, teacher, fast_ad=FastADConfig(guidance=guidance, ddim_steps=3), sampler=sampler)
    labels = torch.tensor([3, 1, 4, 1])
    got = synth(labels, generator=torch.Generator().manual_seed(0))
    x_T = torch.randn((4, *prior.sample_shape), generator=torch.Generator().manual_seed(0))
    want = dpmpp_2m_sample(prior.bind(None), x_T, prior.alphas_cumprod, ddim_timesteps(100, 3), clip_x0=True)
    if guidance == "none":
        assert torch.equal(got, want.clamp(-1, 1))
    else:
        assert len(synth.stats.steps) == 3 and torch.isfinite(got).all() and not torch.equal(got, want.clamp(-1, 1))


@pytest.mark.parametrize("rule", ["eps", "x0"])
def test_guided_fraction_leaves_the_rest_plain_ddim(parts, rule):
    """guided_fraction 0.5: the batch's first half is guided (by either rule), the second half is exactly what
    unguided DDIM makes from the same noise."""
    prior, teacher = parts
    labels = torch.arange(8)
    mixed_synth = make_synth(prior, teacher, guidance=GuidanceConfig(rule=rule, x0_step=0.3),
                             routing=RoutingConfig(guided_fraction=0.5))
    assert mixed_synth.guided_mask(labels).tolist() == [True] * 4 + [False] * 4
    mixed = mixed_synth(labels, generator=torch.Generator().manual_seed(0))
    plain = make_synth(prior, teacher, fast_ad=FastADConfig(guidance="none", ddim_steps=2))(
        labels, generator=torch.Generator().manual_seed(0))
    assert mixed.shape == (8, 1, 28, 28) and mixed.min() >= -1 and mixed.max() <= 1
    torch.testing.assert_close(mixed[4:], plain[4:], atol=1e-5, rtol=0)
    assert not torch.allclose(mixed[:4], plain[:4], atol=1e-3)
    assert len(mixed_synth.stats.steps) == 2  # one record per DDIM step of the guided half
    assert mixed_synth.stats.steps[0]["gate_mean"] == pytest.approx(3.0)  # fast_ad.guidance fixed: lambda_max


def test_coverage_routing_guides_only_classes_the_prior_does_not_make(parts):
    """guide_classes 'uncovered': round 1 is all plain DDIM and counts the teacher's classes on it;
    afterwards exactly the targets of rarely predicted classes are guided."""
    assert COVERAGE_THRESHOLD == 0.5
    cov = Coverage(4)
    assert not cov.uncovered().any()  # no counts yet: nothing is guided
    cov.update(torch.tensor([0, 0, 1, 1, 1, 2, 0, 1]))  # shares 3/8, 4/8, 1/8, 0 against 0.5 / 4 = 1/8
    assert cov.uncovered().tolist() == [False, False, False, True]

    prior, teacher = parts
    always_zero = lambda x: torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()  # noqa: E731
    routing = RoutingConfig(guide_classes="uncovered", guided_fraction=0.5)
    synth = make_synth(prior, teacher, routing=routing, num_classes=10, classify=always_zero)
    labels = torch.arange(10)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(synth.plan_targets(labels, generator=gen), labels)  # nothing uncovered yet
    synth(labels, generator=gen)
    assert synth.stats.steps == [] and synth.coverage.counts.tolist() == [10] + [0] * 9
    assert synth.guided_mask(labels).tolist() == [False] + [True] * 9
    # Half of each batch is aimed at the uncovered classes, the rest keeps its targets.
    planned = synth.plan_targets(labels, generator=gen)
    assert (planned[:5] != 0).all() and torch.equal(planned[5:], labels[5:])
    synth(labels, generator=gen)
    assert len(synth.stats.steps) == 2 and synth.coverage.counts[0] == 11  # one more unguided sample counted
    restored = make_synth(prior, teacher, routing=routing, num_classes=10, classify=always_zero)
    restored.load_state_dict(synth.state_dict())
    assert torch.equal(restored.coverage.counts, synth.coverage.counts)
    assert make_synth(prior, teacher).state_dict() == {}  # nothing to resume without coverage
    with pytest.raises(UserError, match="uncovered"):
        make_synth(prior, teacher, routing=routing)  # no classify, no num_classes


def test_balanced_labels():
    from fastad.guidance.routing import balanced_labels

    g = torch.Generator().manual_seed(0)
    y = balanced_labels(64, 10, generator=g)
    counts = torch.bincount(y, minlength=10)
    assert counts.sum() == 64 and counts.max() - counts.min() <= 1
    assert not torch.equal(y, balanced_labels(64, 10, generator=g))  # random order, from the generator


# --- KD, schedule, captions, progress --------------------------------------------------------------------------


def test_kd_loss_matches_definition():
    from fastad.train.kd import kd_loss

    s, t = torch.randn(5, 7), torch.randn(5, 7)
    p_t = torch.softmax(t / 4, 1)
    want = 16 * (p_t * (torch.log(p_t) - torch.log_softmax(s / 4, 1))).sum(1).mean()
    assert torch.allclose(kd_loss(s, t, 4.0), want, atol=1e-6)
    assert kd_loss(t, t, 4.0).abs() < 1e-6


def test_kd_step_moves_only_the_student():
    from fastad.train.kd import kd_loss, kd_step

    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=10, in_channels=1).eval()
    student = create_model("resnet8", num_classes=10, in_channels=1)
    x = torch.randn(4, 1, 28, 28)
    before = copy.deepcopy(student)
    teacher_before = copy.deepcopy(teacher.state_dict())
    with torch.no_grad():
        want = kd_loss(copy.deepcopy(student)(x), teacher(x), 2.0).item()
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    res = kd_step(student, teacher, x, opt, tau=2.0)
    assert list(res) == ["kd_loss"] and isinstance(res["kd_loss"], float)
    assert res["kd_loss"] == pytest.approx(want, rel=1e-5)
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), student.parameters()))


def test_teacher_view_cache_runs_the_teacher_once_per_pair_in_full_batches():
    from fastad.train.kd import TeacherViewCache

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.shapes = []

        def forward(self, x):
            self.shapes.append(len(x))
            return x.flatten(1)[:, :3] * 2  # a sample's logits from its own pixels only

    teacher, cache = Counting(), TeacherViewCache(capacity=4, views=3, num_classes=3)
    slots, index = torch.tensor([0, 1, 0, 2, 0]), torch.tensor([2, 0, 2, 1, 0])  # (0, 2) drawn twice
    x = (slots * 3 + index).float().view(5, 1, 1, 1).expand(5, 1, 2, 2).clone()  # the same view, the same image
    cache.fill(teacher, x, slots, index, batch_size=3)
    assert teacher.shapes == [3, 3]  # 4 distinct pairs, in batches of exactly 3 (the last padded)
    assert torch.equal(cache.lookup(slots, index), x.flatten(1)[:, :3] * 2)
    cache.fill(teacher, x, slots, index, batch_size=3)
    assert teacher.shapes == [3, 3]  # all known: the teacher does not run
    cache.forget(torch.tensor([0]))
    cache.fill(teacher, x[:1], slots[:1], index[:1], batch_size=3)
    assert teacher.shapes == [3, 3, 3] and int(cache.known.sum()) == 3  # slot 0's other view was forgotten
    restored = TeacherViewCache(capacity=4, views=3, num_classes=3)
    restored.load_state_dict(cache.state_dict())
    assert torch.equal(restored.known, cache.known) and torch.equal(restored.logits, cache.logits)
    with pytest.raises(ValueError, match="does not fit"):
        TeacherViewCache(capacity=5, views=3, num_classes=3).load_state_dict(cache.state_dict())


def test_lr_schedule_ends_with_the_budget():
    """Under max_seconds the schedule's position is the budget share spent (if ahead of the rounds)."""
    from types import SimpleNamespace

    from fastad.distill.loop import Progress, Timing, _schedule_position

    d = SimpleNamespace(max_seconds=100.0, epochs=1000)
    assert _schedule_position(Progress(round=3, timing=Timing(synthesis=20.0, training=30.0)), d) == 500.0
    assert _schedule_position(Progress(round=3, timing=Timing(synthesis=200.0)), d) == 1000.0
    assert _schedule_position(Progress(round=700, timing=Timing(training=1.0)), d) == 700.0
    assert _schedule_position(Progress(round=3, timing=Timing(training=90.0)), SimpleNamespace(max_seconds=0, epochs=9)) == 3


def test_captions_name_the_target_only_where_aimed():
    from fastad.data.info import FASHION_MNIST_CLASSES
    from fastad.distill.loop import _captions

    names = list(FASHION_MNIST_CLASSES)
    probs = torch.tensor([[0.1, 0.9] + [0.0] * 8, [0.0] * 9 + [1.0]])
    caps = _captions(names, torch.tensor([7, 3]), probs, torch.tensor([True, False]))
    aimed, plain = caps[0].split("\n"), caps[1].split("\n")
    assert len(aimed) == 2 and aimed[0] and names[7].startswith(aimed[0])  # the target (names may be shortened)
    assert aimed[1].endswith(" (90%)") and names[1].startswith(aimed[1].removesuffix(" (90%)"))
    assert len(plain) == 1 and plain[0].endswith(" (100%)") and names[9].startswith(plain[0].removesuffix(" (100%)"))


def test_progress_bar_counts_rounds_and_shows_the_time_guard(capsys):
    """The bar counts rounds (the work budget); under max_seconds it names the guard and shows the time spent."""
    from types import SimpleNamespace

    from fastad.distill.loop import Progress, Timing, _advance, _progress_bar

    d = SimpleNamespace(max_seconds=3600.0, epochs=60)
    prog = Progress(round=2, timing=Timing(synthesis=2.2, training=1.0, evaluation=50.0))
    bar = _progress_bar(d, prog, disable=False)
    assert (bar.total, bar.n, bar.unit) == (60, 2, "round")
    prog.round, prog.timing.training = 3, 5.0
    _advance(bar, d, prog, loss=0.5)
    assert bar.n == 3
    bar.close()
    err = capsys.readouterr().err
    assert "distill (or 3600 s of synthesis + training)" in err and "budget=7/3600s" in err

    d = SimpleNamespace(max_seconds=0, epochs=5)
    bar = _progress_bar(d, Progress(round=2), disable=False)
    assert (bar.total, bar.n, bar.unit) == (5, 2, "round")
    _advance(bar, d, Progress(round=3), loss=0.5)
    assert bar.n == 3
    bar.close()


# --- runs that stop early ---------------------------------------------------------------------------------------


def _failing_kd_step(monkeypatch, *, at_call: int, error: BaseException | None = None):
    """Patch the loop's KD step: from call ``at_call`` on it raises ``error``, or reports a NaN loss."""
    import fastad.distill.loop as loop

    real, calls = loop.kd_step, []

    def step(*a, **k):
        calls.append(1)
        if len(calls) >= at_call:
            if error is not None:
                raise error
            real(*a, **k)
            return {"kd_loss": float("nan")}
        return real(*a, **k)

    monkeypatch.setattr(loop, "kd_step", step)


def test_non_finite_loss_stops_and_keeps_the_last_good_round(assets, tmp_path, capsys, monkeypatch):
    out = tmp_path / "nan"
    _failing_kd_step(monkeypatch, at_call=4)  # round 2's second step (2 steps per round)
    rc, _, err = run_cli(distill_args(assets, out, rounds=3), capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "became nan in round 2" in err and "--resume" in err
    assert torch.load(out / "last.pt", weights_only=True)["progress"]["round"] == 1
    monkeypatch.undo()
    assert run_cli(["distill", "--resume", out], capsys)[0] == 0
    assert json.loads((out / "summary.json").read_text())["rounds"] == 3


def test_ctrl_c_says_what_was_kept_and_how_to_resume(assets, tmp_path, capsys, monkeypatch):
    out = tmp_path / "int"
    _failing_kd_step(monkeypatch, at_call=3, error=KeyboardInterrupt())  # in round 2
    rc, _, err = run_cli(distill_args(assets, out, rounds=3), capsys)
    assert rc == 130 and len(err.strip().splitlines()) == 1, err
    assert f"interrupted in round 2; {out / 'last.pt'} keeps round 1; continue with: fastad distill --resume {out}" in err
    monkeypatch.undo()
    assert run_cli(["distill", "--resume", out], capsys)[0] == 0


def test_notes_on_a_guard_stop_and_on_rounds_that_slow_down():
    from types import SimpleNamespace

    from fastad.distill.loop import SLOWDOWN, Progress, _notes

    d = SimpleNamespace(epochs=60, max_seconds=100.0)
    prog = Progress(round=7, round_seconds=[9.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    assert _notes(prog, d) == []  # a slow first round (warm-up) is not a slowdown
    prog.round_seconds += [2.0 * SLOWDOWN + 1] * 3
    prog.round = 10
    (note,) = _notes(prog, d)
    assert "rounds 8-10 took 2.5x as long as rounds 2-4" in note
    prog.warnings.append(note)
    prog.round_seconds.append(20.0)
    assert _notes(prog, d) == []  # said once
    prog.stopped_by_budget = True
    assert "max_seconds=100 stopped the run after 10 of 60 rounds" in _notes(prog, d)[0]


def test_teacher_view_cache_gives_the_live_teachers_student(assets, tmp_path, capsys, monkeypatch):
    """The KD steps' teacher logits looked up from the per-view cache: the same batches, views and logits as the
    teacher run live, so the same student, whether a round's steps are drawn ahead at once or one at a time;
    last.pt carries the cache."""
    from fastad.train.kd import TeacherViewCache

    extra = ["--set", "distillation.train_iterations=6"]
    students, losses = [], []
    for on, draw_bytes in ((False, None), (True, 1), (True, TeacherViewCache.DRAW_BYTES)):
        monkeypatch.setattr(TeacherViewCache, "DRAW_BYTES", draw_bytes or TeacherViewCache.DRAW_BYTES)
        out = tmp_path / f"{on}-{draw_bytes}"
        assert run_cli(distill_args(assets, out, *extra, "--set", f"distillation.teacher_view_cache={str(on).lower()}"),
                       capsys)[0] == 0
        students.append(load_file(out / "student.safetensors"))
        losses.append([r["train/kd_loss"] for r in metrics(out)])
        state = torch.load(out / "last.pt", weights_only=True)
        assert ("teacher_views" in state) == on
    known, logits = state["teacher_views"]["known"], state["teacher_views"]["logits"]
    assert known.shape == (16, 50) and logits.shape == (16, 50, 10)  # 5 x 5 shifts x 2 flips of 16 images
    assert 0 < known.sum() < known.numel() and logits[known].abs().sum(1).gt(0).all()  # only pairs drawn, computed
    # On the CPU, at the KD batch's fixed shape, a sample's logits do not depend on its batch-mates: bit for bit.
    a = students[0]
    assert all(loss == losses[0] and all(torch.equal(a[k], b[k]) for k in a) for loss, b in zip(losses, students))
