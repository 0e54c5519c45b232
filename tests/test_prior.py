"""Prior loading: diffusers layouts, schedule, eps conversion, refusals, save round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from fastad.diffusion import Prior, build_unet, ddim_step, load_prior, save_prior
from fastad.errors import UserError

# google/ddpm-cifar10-32's unet/config.json (architecture only; weights here are random).
CIFAR_UNET = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6,
)
# Its scheduler/scheduler_config.json: an old DDPMScheduler config without prediction_type.
CIFAR_SCHEDULER = {
    "_class_name": "DDPMScheduler", "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
    "clip_sample": True, "num_train_timesteps": 1000, "trained_betas": None, "variance_type": "fixed_small",
}


def _abar64(T: int = 1000) -> np.ndarray:
    """Independent float64 linear schedule (diffusers makes its betas in float32, hence rtol below)."""
    return np.cumprod(1 - np.linspace(1e-4, 0.02, T))


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> tuple[UNet2DModel, Path]:
    torch.manual_seed(0)
    unet = UNet2DModel(**CIFAR_UNET).eval()
    root = tmp_path_factory.mktemp("ddpm-cifar10-32")
    unet.save_pretrained(root / "unet", safe_serialization=True)
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(CIFAR_SCHEDULER))
    (root / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    return unet, root


def _tiny(**kw) -> UNet2DModel:
    torch.manual_seed(1)
    return build_unet(sample_size=8, in_channels=1, block_out_channels=(8, 16), **kw).eval()


def _x_t(shape=(2, 1, 8, 8)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(3))


def test_cifar_architecture_loads(cifar) -> None:
    unet, root = cifar
    n_params = sum(p.numel() for p in unet.parameters())
    assert 35.6e6 <= n_params <= 35.8e6
    prior = load_prior(root)
    assert isinstance(prior, Prior)
    assert prior.sample_shape == (3, 32, 32) and prior.num_train_timesteps == 1000
    assert prior.prediction_type == "epsilon" and prior.num_class_embeds is None and not prior.conditional
    assert not prior.unet.training and not any(p.requires_grad for p in prior.unet.parameters())
    abar = prior.alphas_cumprod
    assert abar.dtype == torch.float64 and abar.device.type == "cpu" and abar.shape == (1000,)
    ref = DDPMScheduler.from_config(CIFAR_SCHEDULER)
    torch.testing.assert_close(abar, torch.cumprod(1 - ref.betas.double(), 0), rtol=0, atol=0)
    torch.testing.assert_close(abar, ref.alphas_cumprod.double(), rtol=1e-4, atol=0)
    np.testing.assert_allclose(abar.numpy(), _abar64(), rtol=1e-5)

    x, t = _x_t((1, 3, 32, 32)), torch.tensor([500])
    with torch.no_grad():
        eps = prior.eps_fn(x, t)
        direct = unet(x, t).sample
    assert eps.shape == (1, 3, 32, 32) and eps.dtype == torch.float32
    # Two module instances with the same weights: oneDNN may pick other conv algorithms for each (seen with one
    # thread: 2e-6 apart), so equal up to float32 rounding of a 35.7M-parameter network.
    torch.testing.assert_close(eps, direct, rtol=1e-5, atol=1e-5)


def _save_tiny(tmp_path: Path, prediction_type: str, **kw) -> tuple[UNet2DModel, Prior]:
    unet = _tiny(**kw)
    path = save_prior(tmp_path / prediction_type, unet, prediction_type=prediction_type)
    return unet, load_prior(path)


def test_v_prediction_converted(tmp_path: Path) -> None:
    unet, prior = _save_tiny(tmp_path, "v_prediction")
    assert prior.prediction_type == "v_prediction"
    x, t = _x_t(), torch.tensor([10, 700])
    with torch.no_grad():
        eps, v = prior.eps_fn(x, t), unet(x, t).sample
    a = torch.from_numpy(_abar64()[t.numpy()]).float().view(-1, 1, 1, 1)
    torch.testing.assert_close(eps, a.sqrt() * v + (1 - a).sqrt() * x, rtol=1e-4, atol=1e-5)
    # Tweedie on the converted eps gives the x0 that v implies: x0 = sqrt(a) x_t - sqrt(1 - a) v.
    x0_tweedie = (x - (1 - a).sqrt() * eps) / a.sqrt()
    torch.testing.assert_close(x0_tweedie, a.sqrt() * x - (1 - a).sqrt() * v, rtol=1e-4, atol=1e-4)
    # And a DDIM step (700 -> 600) on our eps equals diffusers' step on the raw v output.
    sched = DDIMScheduler(prediction_type="v_prediction", clip_sample=False)
    sched.set_timesteps(10)
    ref = sched.step(v[1:], 700, x[1:])
    ours, x0 = ddim_step(x[1:], eps[1:], float(prior.alphas_cumprod[700]), float(prior.alphas_cumprod[600]))
    torch.testing.assert_close(ours, ref.prev_sample, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x0, ref.pred_original_sample, rtol=1e-4, atol=1e-5)


def test_sample_prediction_converted(tmp_path: Path) -> None:
    unet, prior = _save_tiny(tmp_path, "sample")
    x, t = _x_t(), torch.tensor([999, 3])
    with torch.no_grad():
        eps, x0 = prior.eps_fn(x, t), unet(x, t).sample
    a = torch.from_numpy(_abar64()[t.numpy()]).float().view(-1, 1, 1, 1)
    torch.testing.assert_close(eps, (x - a.sqrt() * x0) / (1 - a).sqrt(), rtol=1e-4, atol=1e-5)
    # Tweedie on the converted eps returns the network's x0 (exactly, up to float error).
    _, x0_hat = ddim_step(x, eps, prior.alphas_cumprod[t], prior.alphas_cumprod[t])
    torch.testing.assert_close(x0_hat, x0, rtol=1e-3, atol=1e-3)


def _edit_scheduler(path: Path, **changes) -> None:
    f = path / "scheduler" / "scheduler_config.json"
    cfg = json.loads(f.read_text())
    cfg.update(changes)
    f.write_text(json.dumps(cfg))


def test_refusals(tmp_path: Path) -> None:
    unet = _tiny()
    path = save_prior(tmp_path / "p", unet)
    _edit_scheduler(path, prediction_type="flow")
    with pytest.raises(UserError, match="prediction_type='flow'.*epsilon, v_prediction, sample"):
        load_prior(path)
    _edit_scheduler(path, prediction_type="epsilon", beta_schedule="exotic")
    with pytest.raises(UserError, match="beta_schedule='exotic'"):
        load_prior(path)
    shutil.rmtree(path / "scheduler")
    with pytest.raises(UserError, match="no scheduler config.*scheduler_config.json"):
        load_prior(path)
    with pytest.raises(UserError, match="not a folder"):
        load_prior(tmp_path / "nowhere")

    bare = tmp_path / "bare"  # a bare UNet2DModel folder with .bin weights only
    unet.save_pretrained(bare, safe_serialization=False)
    DDIMScheduler().save_config(bare)
    assert not list(bare.glob("*.safetensors"))
    with pytest.raises(UserError, match=r"only \.bin weights.*safetensors"):
        load_prior(bare)

    cond = tmp_path / "sd" / "unet"  # text-conditional UNet: a config is enough to be refused
    cond.mkdir(parents=True)
    (cond / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(UserError, match="UNet2DConditionModel.*not supported yet"):
        load_prior(tmp_path / "sd")


def test_bare_layout_loads(tmp_path: Path) -> None:
    unet = _tiny()
    unet.save_pretrained(tmp_path, safe_serialization=True)
    DDIMScheduler(beta_schedule="squaredcos_cap_v2").save_config(tmp_path)
    prior = load_prior(tmp_path)
    assert prior.sample_shape == (1, 8, 8)
    ref = DDIMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod.double()
    torch.testing.assert_close(prior.alphas_cumprod, ref, rtol=1e-4, atol=1e-7)


def test_class_conditional_requires_labels(tmp_path: Path) -> None:
    unet, prior = _save_tiny(tmp_path, "epsilon", num_class_embeds=3)
    assert prior.num_class_embeds == 3 and prior.conditional
    x, t, y = _x_t(), torch.tensor([5, 5]), torch.tensor([0, 2])
    with pytest.raises(UserError, match="class-conditional.*class_labels"):
        prior.eps_fn(x, t)
    with pytest.raises(UserError, match="class-conditional"):
        prior.bind()
    with pytest.raises(UserError, match=r"\[0, 3\)"):
        prior.bind(torch.tensor([3]))
    with pytest.raises(UserError, match="2 entries for a batch of 1"):
        prior.bind(y)(x[:1], t[:1])
    with torch.no_grad():
        eps = prior.bind(y)(x, t)
        torch.testing.assert_close(eps, unet(x, t, class_labels=y).sample)
        assert not torch.allclose(eps, prior.eps_fn(x, t, torch.tensor([1, 1])))
    _, uncond = _save_tiny(tmp_path, "sample")
    with pytest.raises(UserError, match="unconditional"):
        uncond.eps_fn(x, t, y)
    with pytest.raises(UserError, match="unconditional"):
        uncond.bind(y)


def test_save_prior_round_trip(tmp_path: Path) -> None:
    unet = _tiny()
    meta = {"dataset": "fashion_mnist", "split": "train[50000:60000]"}
    path = save_prior(tmp_path / "prior", unet, metadata=meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prior"]  # no temp folders left
    assert {p.name for p in path.iterdir()} == {"unet", "scheduler", "model_index.json", "fastad_prior.json"}
    assert (path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    prior = load_prior(path)
    assert prior.metadata == meta and prior.scheduler_config["_class_name"] == "DDIMScheduler"
    x, t = _x_t(), torch.tensor([1, 900])
    with torch.no_grad():
        torch.testing.assert_close(prior.eps_fn(x, t), unet(x, t).sample)
    with pytest.raises(UserError, match="already exists"):
        save_prior(path, unet)
    other = _tiny(num_class_embeds=2)
    save_prior(path, other, overwrite=True, beta_schedule="squaredcos_cap_v2")
    assert load_prior(path).num_class_embeds == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prior"]
    with pytest.raises(UserError, match="beta_schedule='sigmoid'"):
        save_prior(tmp_path / "q", unet, beta_schedule="sigmoid")


def test_crash_during_save_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    unet = _tiny()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("diffusers.DDIMScheduler.save_config", boom)  # after the weights are written
    with pytest.raises(RuntimeError, match="disk full"):
        save_prior(tmp_path / "prior", unet)
    assert list(tmp_path.iterdir()) == []


def test_build_unet_28x28() -> None:
    unet = build_unet(sample_size=28, in_channels=1)
    assert sum(p.numel() for p in unet.parameters()) == 1_062_497  # the prototype's 1.06M prior
    with torch.no_grad():
        assert unet(torch.zeros(2, 1, 28, 28), torch.tensor([0, 999])).sample.shape == (2, 1, 28, 28)
    attn = build_unet(sample_size=28, in_channels=1, attention=True)
    assert attn.config.down_block_types[-1] == "AttnDownBlock2D" and attn.config.up_block_types[0] == "AttnUpBlock2D"
    with pytest.raises(UserError, match="sample_size=28 must be divisible by 2\\*\\*\\(levels-1\\)=8"):
        build_unet(sample_size=28, in_channels=1, block_out_channels=(32, 64, 64, 64))
