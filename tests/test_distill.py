"""``fastad distill`` end to end with tiny models: outputs, guidance modes, exports, exact resume after
SIGKILL, the data-free rule, conditioning, and one-line errors."""

from __future__ import annotations

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
from safetensors.torch import load_file

from fastad.cli.main import main
from fastad.config import load_config
from fastad.errors import UserError
from fastad.train.evaluate import normalizer
from fastad.diffusion import build_unet, save_prior
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


def distill_args(assets, out, *extra, rounds=3):
    return ["distill", "--teacher", assets["teacher"], "--prior", assets["prior"], "--out", out, "--epochs", rounds,
            "--set", f"data.root={assets['data']}", "--set", "distillation.teacher_arch=resnet8",
            "--set", "distillation.student_arch=resnet8", "--set", "distillation.num_classes=10",
            "--set", "distillation.image_size=[28, 28]", "--set", "distillation.synthesis_batch_size=8",
            "--set", "distillation.train_batch_size=8", "--set", "distillation.train_iterations=2",
            "--set", "distillation.buffer_size=16", "--set", "distillation.eval_every=2",
            "--set", "fast_ad.ddim_steps=2", "--set", "fast_ad.T=100", "--set", "logging.progress=false",
            "--set", "logging.tensorboard=false", *extra]


def run_cli(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


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
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert rows[-1]["buffer_size"] == 16  # FIFO capacity bound
    assert "eval/top1" in rows[1] and "eval/top1" not in rows[0]
    if guidance == "none":
        assert not any(k.startswith("guidance/") and v for r in rows for k, v in r.items() if "steps" in k)
    else:
        assert any(k.startswith("guidance/") for k in rows[0])
    assert "student top-1" in stdout and "images synthesised" in stdout


def test_view_augment_and_extended_cosine_resume_exactly(assets, tmp_path, capsys):
    """The guidance view's random crop/flip draws from the run's generator, and a run extended with
    --epochs continues on the longer cosine curve: 1 round + extension to 2 equals 2 rounds."""
    extra = ["--set", "fast_ad.view_augment=true", "--set", "distillation.schedule=cosine"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli(distill_args(assets, a, *extra, rounds=2), capsys)[0] == 0
    assert run_cli(distill_args(assets, b, *extra, rounds=1), capsys)[0] == 0
    assert run_cli(["distill", "--resume", b, "--epochs", 2], capsys)[0] == 0
    wa, wb = load_file(a / "student.safetensors"), load_file(b / "student.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


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
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
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
    rows = [json.loads(l)["round"] for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, rounds + 1))


def test_reads_only_the_test_split(assets, tmp_path, capsys, monkeypatch):
    """The data-free rule: the train split's files are absent (see ``assets``) and never requested."""
    import fastad.distill.loop as loop

    requested = []
    real = loop.load_dataset

    def spy(name, split, **kw):
        requested.append(split)
        return real(name, split, **kw)

    monkeypatch.setattr(loop, "load_dataset", spy)
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
    (["--set", "distillation.image_size=[32, 32]"], "makes 1x28x28 images"),
    (["--set", "fast_ad.T=1000"], "fast_ad.T"),
    (["--set", "distillation.num_classes=100"], "distillation.num_classes"),
    (["--teacher", "nope.safetensors"], "nope.safetensors"),
    (["--guidance", "none", "--set", "fast_ad.inversion_fraction=0.5"], "fast_ad.inversion_fraction"),
    (["--guidance", "none", "--set", "fast_ad.refine_steps=3"], "fast_ad.refine_steps"),
])
def test_bad_input_one_line(assets, tmp_path, capsys, change, needle):
    rc, _, err = run_cli(distill_args(assets, tmp_path / "x", *change, rounds=1), capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_balanced_labels():
    from fastad.distill import balanced_labels

    g = torch.Generator().manual_seed(0)
    y = balanced_labels(64, 10, generator=g)
    counts = torch.bincount(y, minlength=10)
    assert counts.sum() == 64 and counts.max() - counts.min() <= 1


def test_kd_loss_matches_definition():
    from fastad.distill import kd_loss

    s, t = torch.randn(5, 7), torch.randn(5, 7)
    p_t = torch.softmax(t / 4, 1)
    want = 16 * (p_t * (torch.log(p_t) - torch.log_softmax(s / 4, 1))).sum(1).mean()
    assert torch.allclose(kd_loss(s, t, 4.0), want, atol=1e-6)
    assert kd_loss(t, t, 4.0).abs() < 1e-6


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
    bench method's overrides, under the user's --set."""
    from fastad.cli.common import REPO

    monkeypatch.chdir(tmp_path)
    prior = REPO / "models" / "fmnist_prior_50k60k_classes0-4"
    out = tmp_path / "run"
    rc, stdout, err = run_cli(["distill", "--prior", prior, "--recipe", "x0-routed-smooth", "--epochs", "1", "--out", out,
                               "--set", "fast_ad.smooth_sigma=0.5",
                               "--set", "distillation.synthesis_batch_size=4", "--set", "distillation.train_iterations=1",
                               "--set", "fast_ad.ddim_steps=1", "--set", "distillation.evaluate_teacher=false",
                               "--set", "logging.progress=false", "--set", "logging.tensorboard=false"], capsys)
    assert rc == 0, err
    assert "your prior and the shipped teacher" in stdout
    saved = (out / "config.yaml").read_text()
    assert f"diffusion_checkpoint: {prior}" in saved and "fmnist_teacher_resnet20" in saved
    f = load_config(out / "config.yaml").fast_ad
    assert (f.rule, f.guide_classes, f.smooth_samples, f.smooth_sigma, f.inner_steps) == ("x0", "uncovered", 4, 0.5, 1)
    rc, _, err = run_cli(["distill", "--resume", out, "--recipe", "cadr"], capsys)
    assert rc != 0 and "--recipe cadr with --resume" in err and "Traceback" not in err


def test_deepinversion_synthesizer_end_to_end(assets, tmp_path, capsys):
    """``distillation.synthesizer=deepinversion`` needs no prior: pixels optimised from noise."""
    out = tmp_path / "di"
    rc, _, err = run_cli(distill_args(assets, out, "--set", "distillation.diffusion_checkpoint=null", "--prior", "",
                                      "--set", "distillation.synthesizer=deepinversion",
                                      "--set", "distillation.deepinversion_iterations=2", rounds=2), capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["synthesizer"] == "deepinversion" and summary["guidance"] is None
    assert summary["images_synthesized"] == 16 and not summary["stopped_by_budget"]
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["deepinversion/iterations"] == 2 and rows[0]["deepinversion/batches"] == 1


def test_deepinversion_image_priors_reach_the_inverter():
    """distillation.deepinversion_tv_l2 / _l2 are the inverter's TV and L2 weights (defaults off)."""
    from fastad.data.info import dataset_info
    from fastad.distill.loop import _synthesizer

    teacher = create_model("resnet8", num_classes=10, in_channels=1).eval()
    student = create_model("resnet8", num_classes=10, in_channels=1)
    for sets, expected in (([], (0.0, 0.0)), (["distillation.deepinversion_tv_l2=2.5",
                                               "distillation.deepinversion_l2=0.01"], (2.5, 0.01))):
        cfg = load_config(None, sets=["distillation.synthesizer=deepinversion",
                                      "distillation.image_size=[28, 28]", *sets])
        inverter = _synthesizer(cfg, dataset_info("fashion_mnist"), None, teacher, student, FMNIST_MEAN,
                                FMNIST_STD, torch.Generator(), torch.device("cpu"))
        assert (inverter.tv_l2, inverter.l2) == expected


def test_max_seconds_budget_stops_early(assets, tmp_path, capsys):
    """A tiny budget ends the run after its first round, which is then evaluated and summarised."""
    out = tmp_path / "budget"
    rc, _, err = run_cli(distill_args(assets, out, "--set", "distillation.max_seconds=1e-6", rounds=5), capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_budget"] and summary["rounds"] == 1 and summary["images_synthesized"] == 8
    assert summary["student_top1"] is not None  # round 1 is not an eval_every round, but is evaluated
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1] and "eval/top1" in rows[0]
    assert run_cli(["distill", "--resume", out], capsys)[0] == 0  # a resumed finished run stays stopped
    assert json.loads((out / "summary.json").read_text())["rounds"] == 1


def test_guidance_variants_end_to_end(assets, tmp_path, capsys):
    """The beyond-the-paper options run through fastad distill, DeepInversion drawing half of the guided
    targets (the hybrid source) and refining the other half; the summary has per-class accuracy."""
    out = tmp_path / "variants"
    extra = ["--guidance", "fixed", "--set", "fast_ad.rule=x0", "--set", "fast_ad.inner_steps=2",
             "--set", "fast_ad.recurrence=1", "--set", "fast_ad.t_window=[0.2, 1.0]",
             "--set", "fast_ad.guided_fraction=0.5", "--set", "fast_ad.strength_ref_steps=1",
             "--set", "fast_ad.bn_weight=3", "--set", "fast_ad.grad_pool=4",
             "--set", "fast_ad.inversion_fraction=0.5", "--set", "distillation.deepinversion_iterations=2",
             "--set", "fast_ad.refine_steps=2", "--set", "distillation.deepinversion_tv_l2=1.0"]
    rc, _, err = run_cli(distill_args(assets, out, *extra, rounds=2), capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["student_per_class"]) == 10 and summary["images_synthesized"] == 16
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["guidance/steps"] > 0


def test_guided_fraction_leaves_the_rest_plain_ddim(assets):
    """guided_fraction 0.5: the batch's second half is exactly what unguided DDIM makes from the same noise."""
    from fastad.diffusion import load_prior
    from fastad.distill.synthesis import Synthesizer, unconditional
    from fastad.guidance import CADRConfig, make_view

    prior = load_prior(assets["prior"])
    teacher = create_model("resnet8", num_classes=10, in_channels=1).eval().requires_grad_(False)
    labels = torch.arange(8)

    def make(guidance, fraction):
        return Synthesizer(prior, teacher, guidance=guidance, cadr=CADRConfig(gate="fixed", lambda_max=3.0),
                           view=make_view(FMNIST_MEAN, FMNIST_STD), num_steps=3, spacing="leading", ddim_eta=0.0,
                           clip_x0=True, provider=unconditional, device=torch.device("cpu"), guided_fraction=fraction)

    mixed = make("fixed", 0.5)(labels, generator=torch.Generator().manual_seed(0))
    plain = make("none", 1.0)(labels, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mixed[4:], plain[4:], atol=1e-5, rtol=0)
    assert not torch.allclose(mixed[:4], plain[:4], atol=1e-3)

    # clip_x0_guided: the guided half follows it, the plain half follows clip_x0.
    def make_clip(clip_x0, clip_x0_guided=None):
        return Synthesizer(prior, teacher, guidance="fixed", cadr=CADRConfig(gate="fixed", lambda_max=3.0),
                           view=make_view(FMNIST_MEAN, FMNIST_STD), num_steps=3, spacing="leading", ddim_eta=0.0,
                           clip_x0=clip_x0, clip_x0_guided=clip_x0_guided, provider=unconditional,
                           device=torch.device("cpu"), guided_fraction=0.5)(labels, generator=torch.Generator().manual_seed(0))
    split, clipped, unclipped = make_clip(False, True), make_clip(True), make_clip(False)
    torch.testing.assert_close(split[:4], clipped[:4], atol=1e-5, rtol=0)
    torch.testing.assert_close(split[4:], unclipped[4:], atol=1e-5, rtol=0)
    assert not torch.allclose(clipped, unclipped, atol=1e-3)


def test_inversion_fraction_draws_the_last_guided_targets_by_deepinversion(assets):
    """inversion_fraction 0.5 of 4 guided targets: the last two come from the inverter, with their labels and
    the call's generator; the first two are guided DDIM samples, and the plain half is untouched."""
    from fastad.diffusion import load_prior
    from fastad.distill.synthesis import Synthesizer, unconditional
    from fastad.guidance import CADRConfig, make_view

    prior = load_prior(assets["prior"])
    teacher = create_model("resnet8", num_classes=10, in_channels=1).eval().requires_grad_(False)
    calls = []

    def inverter(labels, *, generator):
        calls.append((labels.tolist(), generator))
        return torch.full((len(labels), *prior.sample_shape), 0.25)

    def make(fraction, inv=None):
        return Synthesizer(prior, teacher, guidance="fixed", cadr=CADRConfig(gate="fixed", lambda_max=3.0),
                           view=make_view(FMNIST_MEAN, FMNIST_STD), num_steps=2, spacing="leading", ddim_eta=0.0,
                           clip_x0=True, provider=unconditional, device=torch.device("cpu"), guided_fraction=0.5,
                           inverter=inv, inversion_fraction=fraction)

    labels = torch.arange(8)
    gen = torch.Generator().manual_seed(0)
    hybrid = make(0.5, inverter)(labels, generator=gen)
    guided = make(0.0)(labels, generator=torch.Generator().manual_seed(0))
    assert calls == [([2, 3], gen)]
    assert torch.equal(hybrid[2:4], torch.full_like(hybrid[2:4], 0.25))
    assert not torch.allclose(hybrid[:2], torch.full_like(hybrid[:2], 0.25))
    torch.testing.assert_close(hybrid[4:], guided[4:], atol=1e-5, rtol=0)  # plain DDIM, same noise
    make(1.0, inverter)(labels, generator=torch.Generator().manual_seed(0))
    assert calls[-1][0] == [0, 1, 2, 3]
    for fraction, inv, needle in [(1.5, inverter, "inversion_fraction=1.5"), (0.5, None, "needs an inverter")]:
        with pytest.raises(UserError, match=needle):
            make(fraction, inv)


def test_refiner_continues_from_the_guided_samples(assets):
    """refiner: called on the guided prior samples (with their labels, the call's generator and the samples as
    init); its output replaces them, and the plain half is untouched."""
    from fastad.diffusion import load_prior
    from fastad.distill.synthesis import Synthesizer, unconditional
    from fastad.guidance import CADRConfig, make_view

    prior = load_prior(assets["prior"])
    teacher = create_model("resnet8", num_classes=10, in_channels=1).eval().requires_grad_(False)
    calls = []

    def refiner(labels, *, generator, init):
        calls.append((labels.tolist(), generator, init.clone()))
        return init * 0.5

    def make(ref=None):
        return Synthesizer(prior, teacher, guidance="fixed", cadr=CADRConfig(gate="fixed", lambda_max=3.0),
                           view=make_view(FMNIST_MEAN, FMNIST_STD), num_steps=2, spacing="leading", ddim_eta=0.0,
                           clip_x0=True, provider=unconditional, device=torch.device("cpu"), guided_fraction=0.5,
                           refiner=ref)

    labels, gen = torch.arange(8), torch.Generator().manual_seed(0)
    refined = make(refiner)(labels, generator=gen)
    plain = make()(labels, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1 and calls[0][0] == [0, 1, 2, 3] and calls[0][1] is gen
    torch.testing.assert_close(calls[0][2], plain[:4], atol=1e-5, rtol=0)
    torch.testing.assert_close(refined[:4], plain[:4] * 0.5, atol=1e-5, rtol=0)
    torch.testing.assert_close(refined[4:], plain[4:], atol=1e-5, rtol=0)


def test_candidates_keep_the_sample_the_teacher_likes_best(assets):
    """candidates 3: three guided samples per target from the batch's noise and two more draws; each
    target keeps the one with the highest teacher probability of the target."""
    from fastad.diffusion import load_prior
    from fastad.distill.synthesis import Synthesizer, unconditional
    from fastad.guidance import CADRConfig, make_view

    prior = load_prior(assets["prior"])
    teacher = create_model("resnet8", num_classes=10, in_channels=1).eval().requires_grad_(False)
    norm = normalizer(FMNIST_MEAN, FMNIST_STD)
    classify = lambda x: teacher(norm((x + 1) / 2))  # noqa: E731
    labels = torch.tensor([1, 3, 5, 7])

    def make(n):
        return Synthesizer(prior, teacher, guidance="fixed", cadr=CADRConfig(gate="fixed", lambda_max=3.0),
                           view=make_view(FMNIST_MEAN, FMNIST_STD), num_steps=2, spacing="leading", ddim_eta=0.0,
                           clip_x0=True, provider=unconditional, device=torch.device("cpu"), classify=classify,
                           candidates=n)

    best = make(3)(labels, generator=torch.Generator().manual_seed(0))
    # The same three candidates: the batch of 12 the synthesizer guides at once (L_BN is a batch statistic).
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn((4, *prior.sample_shape), generator=gen)
    x_T = torch.cat([x_T, torch.randn((8, *prior.sample_shape), generator=gen)])
    all12 = make(1)._guided(x_T, labels.repeat(3), torch.Generator().manual_seed(1)).clamp(-1, 1)
    with torch.no_grad():
        p = classify(all12).softmax(1).gather(1, labels.repeat(3).view(-1, 1)).view(3, 4)
    expected = all12.view(3, 4, *all12.shape[1:])[p.argmax(0), torch.arange(4)]
    torch.testing.assert_close(best, expected, atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="candidates"):
        Synthesizer(prior, teacher, guidance="fixed", cadr=CADRConfig(), view=make_view(FMNIST_MEAN, FMNIST_STD),
                    num_steps=2, spacing="leading", ddim_eta=0.0, clip_x0=True, provider=unconditional,
                    device=torch.device("cpu"), candidates=2)


def test_lr_schedule_ends_with_the_budget():
    """Under max_seconds the schedule's position is the budget share spent (if ahead of the rounds)."""
    from types import SimpleNamespace

    from fastad.distill.loop import Progress, Timing, _schedule_position

    d = SimpleNamespace(max_seconds=100.0, epochs=1000)
    assert _schedule_position(Progress(round=3, timing=Timing(synthesis=20.0, training=30.0)), d) == 500.0
    assert _schedule_position(Progress(round=3, timing=Timing(synthesis=200.0)), d) == 1000.0
    assert _schedule_position(Progress(round=700, timing=Timing(training=1.0)), d) == 700.0
    assert _schedule_position(Progress(round=3, timing=Timing(training=90.0)), SimpleNamespace(max_seconds=0, epochs=9)) == 3


def test_coverage_routing_guides_only_classes_the_prior_does_not_make(assets):
    """guide_classes 'uncovered': round 1 is all plain DDIM and counts the teacher's classes on it;
    afterwards exactly the targets of rarely predicted classes are guided."""
    from fastad.diffusion import load_prior
    from fastad.distill.synthesis import Coverage, Synthesizer, unconditional
    from fastad.guidance import CADRConfig, make_view

    cov = Coverage(4, threshold=0.5)
    assert not cov.uncovered().any()  # no counts yet: nothing is guided
    cov.update(torch.tensor([0, 0, 1, 1, 1, 2, 0, 1]))  # shares 3/8, 4/8, 1/8, 0 against 0.5 / 4 = 1/8
    assert cov.uncovered().tolist() == [False, False, False, True]

    prior = load_prior(assets["prior"])
    teacher = create_model("resnet8", num_classes=10, in_channels=1).eval().requires_grad_(False)
    always_zero = lambda x: torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()  # noqa: E731
    synth = Synthesizer(prior, teacher, guidance="fixed", cadr=CADRConfig(gate="fixed", lambda_max=3.0),
                        view=make_view(FMNIST_MEAN, FMNIST_STD), num_steps=2, spacing="leading", ddim_eta=0.0,
                        clip_x0=True, provider=unconditional, device=torch.device("cpu"), guide_classes="uncovered",
                        num_classes=10, classify=always_zero)
    labels = torch.arange(10)
    gen = torch.Generator().manual_seed(0)
    synth(labels, generator=gen)
    assert synth.stats.steps == [] and synth.coverage.counts.tolist() == [10] + [0] * 9
    assert synth._guided_mask(labels).tolist() == [False] + [True] * 9
    synth.guided_fraction = 0.5  # half of each batch is aimed at the uncovered classes, the rest keeps its targets
    planned = synth.plan_targets(labels, generator=gen)
    assert (planned[:5] != 0).all() and torch.equal(planned[5:], labels[5:])
    synth.guided_fraction = 1.0
    synth(labels, generator=gen)
    assert len(synth.stats.steps) == 2 and synth.coverage.counts[0] == 11  # one more unguided sample counted
    restored = Synthesizer(prior, teacher, guidance="fixed", cadr=CADRConfig(), view=make_view(FMNIST_MEAN, FMNIST_STD),
                           num_steps=2, spacing="leading", ddim_eta=0.0, clip_x0=True, provider=unconditional,
                           device=torch.device("cpu"), guide_classes="uncovered", num_classes=10, classify=always_zero)
    restored.load_state_dict(synth.state_dict())
    assert torch.equal(restored.coverage.counts, synth.coverage.counts)
