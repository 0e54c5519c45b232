"""The device paths: distillation end to end in float32 and bf16 autocast on the CPU and on a CUDA device, and
sampling loops that never wait for the device. The CUDA cases are marked ``cuda``; they skip on a machine without
a GPU, and scripts/gpu_check.sh runs them where there is one."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from fastad.cli.main import main
from fastad.config import load_config
from fastad.data import make_view
from fastad.diffusion import build_unet, ddim_sample, ddim_timesteps, load_prior, save_prior
from fastad.distill import build
from fastad.distill.build import AutocastTeacher, native_bf16_cpu
from fastad.guidance import FastADConfig, GuidanceConfig, make_cadr_eps_fn, preview_guided_sample
from fastad.models import create_model, load_classifier, save_classifier

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, needs_cuda])]

MEAN, STD = [0.2860], [0.3530]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("devices")
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=10, in_channels=1)
    save_classifier(root / "teacher.safetensors", teacher, {
        "arch": "resnet8", "num_classes": 10, "in_channels": 1, "input_size": [28, 28], "mean": MEAN, "std": STD})
    save_prior(root / "prior", build_unet(sample_size=28, in_channels=1, block_out_channels=(8, 16, 16)),
               num_train_timesteps=100)
    return {"teacher": root / "teacher.safetensors", "prior": root / "prior"}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", ["cadr", "x0-routed-smooth"])
@pytest.mark.parametrize("autocast", ["float32", "bf16"])
def test_distill_end_to_end(assets, tmp_path, capsys, device, recipe, autocast):
    out = tmp_path / "run"
    rc = main([str(a) for a in [
        "distill", "--teacher", assets["teacher"], "--prior", assets["prior"], "--out", out, "--device", device,
        "--recipe", recipe, "--epochs", 3, "--set", "distillation.student_arch=resnet8",
        "--set", "distillation.synthesis_batch_size=8", "--set", "distillation.train_batch_size=8",
        "--set", "distillation.train_iterations=2", "--set", "distillation.holdout_images=16",
        "--set", "fast_ad.ddim_steps=3", "--set", "fast_ad.T=100", "--set", f"distillation.autocast={autocast}",
        "--set", "data.dataset=null", "--set", "logging.progress=false", "--set", "logging.tensorboard=false"]])
    err = capsys.readouterr().err
    assert rc == 0, err
    emulated = device == "cpu" and autocast == "bf16" and not native_bf16_cpu()
    assert ("without native bfloat16" in err) == emulated, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_synthesized"] == 24
    assert 0 <= summary["synthetic_agreement_top1"] <= 100
    student, _ = load_classifier(out / "student.safetensors")
    assert all(torch.isfinite(p).all() for p in student.state_dict().values())


def _strict(eps_fn):
    """``eps_fn`` that turns on torch's sync debug mode ("error") at its first call, i.e. from inside the sampling
    loop on: what a sampler does before its loop (checking labels, say) may wait for the device once."""
    def strict(x, t):
        torch.cuda.set_sync_debug_mode("error")
        return eps_fn(x, t)
    return strict


def test_bf16_on_a_cpu_without_it_is_warned_of(assets, tmp_path, capsys, monkeypatch):
    """Where the CPU would emulate bfloat16 the run goes on, and says once that it is likely slower."""
    monkeypatch.setattr(sys.modules["fastad.distill.build"], "native_bf16_cpu", lambda: False)
    cfg = load_config(None, [f"distillation.teacher_checkpoint={assets['teacher']}",
                             f"distillation.diffusion_checkpoint={assets['prior']}", "fast_ad.T=100",
                             "distillation.autocast=bf16", "data.dataset=null"])
    parts = build(cfg, None, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    assert parts.prior.autocast == torch.bfloat16
    assert capsys.readouterr().err.count("without native bfloat16") == 1


@pytest.mark.cuda
@needs_cuda
def test_sampling_loops_never_wait_for_the_device(assets):
    """torch's sync debug mode raises on any host-device synchronisation: inside their loops, the plain sampler,
    CADR's rule and the x0 rule (with smoothing noise from the run's CPU generator) run without one when no
    statistics are read."""
    dev = torch.device("cuda")
    prior = load_prior(assets["prior"], device=dev)
    teacher = create_model("resnet8", num_classes=10, in_channels=1).to(dev).eval().requires_grad_(False)
    view = make_view(MEAN, STD)
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn(4, 1, 28, 28, generator=gen).to(dev)
    labels = torch.tensor([0, 1, 2, 3], device=dev)
    abar, ts = prior.alphas_cumprod, ddim_timesteps(100, 3)
    eps_fn = prior.bind(None)
    smooth = GuidanceConfig(rule="x0", smooth_samples=2, smooth_sigma=0.5)
    try:
        ddim_sample(_strict(eps_fn), x_T, abar, ts, clip_x0=True)
        torch.cuda.set_sync_debug_mode("default")
        with make_cadr_eps_fn(_strict(eps_fn), teacher, labels, abar, FastADConfig(), view=view) as cadr:
            ddim_sample(cadr, x_T, abar, ts)
        torch.cuda.set_sync_debug_mode("default")
        preview_guided_sample(_strict(eps_fn), teacher, labels, x_T, abar, ts, FastADConfig(guidance="fixed"),
                              smooth, view=view, generator=gen, clip_x0=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_guidance_direction_agrees_with_float32(assets, device):
    """The teacher under bf16 autocast moves the preview the same way as in float32 (cosine of the corrections)."""
    from fastad.guidance.preview import preview_step
    from fastad.guidance.loss import GuidanceLoss

    dev = torch.device(device)
    teacher = create_model("resnet8", num_classes=10, in_channels=1).to(dev).eval().requires_grad_(False)
    gen = torch.Generator(device=dev).manual_seed(0)
    x0 = torch.randn(16, 1, 28, 28, generator=gen, device=dev).clamp(-1, 1)
    labels, t = torch.arange(16, device=dev) % 10, torch.full((16,), 50, device=dev)
    moves = []
    for model in (teacher, AutocastTeacher(teacher).eval()):
        with GuidanceLoss(model, labels, FastADConfig(guidance="fixed"), GuidanceConfig(rule="x0"),
                          view=make_view(MEAN, STD)) as loss:
            moves.append((preview_step(loss, x0, t, x0) - x0).flatten(1))
    cos = torch.nn.functional.cosine_similarity(*moves, dim=1)
    assert bool((cos > 0.95).all()), cos


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_prior_noise_agrees_with_float32(assets, device):
    """The prior's predicted noise under bf16 autocast stays within 3% (relative L2; 1.4% for this random-weight
    prior on the CPU) of float32's, and comes back in float32 for the DDIM arithmetic."""
    prior = load_prior(assets["prior"], device=device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, *prior.sample_shape, generator=gen).to(device)
    t = torch.tensor([0, 10, 30, 50, 70, 90, 99, 60], device=device)
    with torch.no_grad():
        ref = prior.eps_fn(x, t)
        low = dataclasses.replace(prior, autocast=torch.bfloat16).eps_fn(x, t)
    assert low.dtype == torch.float32
    assert not torch.equal(low, ref)  # it did run in bf16
    err = float((low - ref).norm() / ref.norm())
    assert err < 0.03, err
