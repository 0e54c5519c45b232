"""train-diffusion end to end on tiny IDX files: outputs, data restriction, no labels, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import fastad.diffusion.train as train_mod
from fastad.cli.main import main
from fastad.data import load_dataset
from fastad.diffusion import load_prior

# A tiny UNet and a few steps: each run takes a few seconds on one core. CPU even where a GPU is
# present: the bit-identical resume and the batch checks assume CPU tensors and kernels.
TINY = ["--device", "cpu", "--set", "diffusion.block_out_channels=[8,16,16]", "--set", "diffusion.batch_size=8",
        "--set", "diffusion.sample_steps=3", "--set", "diffusion.sample_images=4", "--set", "diffusion.save_every=100",
        "--set", "diffusion.warmup_steps=2", "--set", "logging.log_every=2", "--set", "logging.progress=false"]


def run_cli(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def train_args(root, out, steps, *extra):
    return ["train-diffusion", "--dataset", "fashion_mnist", "--out", out, "--steps", steps, "--set", f"data.root={root}",
            "--set", f"diffusion.sample_every={steps}", *TINY, *extra]


@pytest.fixture
def recorder(monkeypatch):
    """Records what the training loop receives: the TrainData and every (x0, class_labels) batch."""
    seen = {"data": [], "batches": [], "loads": []}
    real_data, real_loss, real_load = train_mod.training_data, train_mod.ddpm_loss, train_mod.load_dataset

    def data(cfg):
        d = real_data(cfg)
        seen["data"].append(d)
        return d

    def loss(unet, x0, t, noise, abar, class_labels=None):
        seen["batches"].append((x0.detach().clone(), None if class_labels is None else class_labels.clone()))
        return real_loss(unet, x0, t, noise, abar, class_labels)

    def load(*args, **kwargs):
        seen["loads"].append((args, kwargs))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(train_mod, "training_data", data)
    monkeypatch.setattr(train_mod, "ddpm_loss", loss)
    monkeypatch.setattr(train_mod, "load_dataset", load)
    return seen


def _as_uint8(x0: torch.Tensor) -> np.ndarray:
    return ((x0 + 1) * 127.5).round().to(torch.uint8).numpy()


def test_prior_on_classes_0_4_never_reads_5_9(tiny_fmnist, tmp_path, capsys, recorder):
    out = tmp_path / "run"
    rc, stdout, err = run_cli(train_args(tiny_fmnist, out, 4, "--set", "data.classes=[0,1,2,3,4]"), capsys)
    assert rc == 0, err
    assert "4 steps" in stdout and "no labels" in stdout and str(out / "prior") in stdout

    # Outputs.
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "summary.json", "samples/step_000004.png"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["classes"] == [0, 1, 2, 3, 4]
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r["train/loss"]) for r in rows)
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["step"] == 4 and {"model", "ema", "optimizer", "scheduler", "rng"} <= state.keys()

    prior = load_prior(out / "prior")
    assert prior.sample_shape == (1, 28, 28) and not prior.conditional and prior.prediction_type == "epsilon"
    meta = prior.metadata
    assert meta["source"]["classes"] == [0, 1, 2, 3, 4] and meta["classes"] == [0, 1, 2, 3, 4]
    assert meta["dataset"] == "fashion_mnist" and meta["split"] == "train" and meta["index_range"] == [0, 300]
    assert meta["num_images"] == 150 and meta["class_conditional"] is False and meta["steps"] == 4

    # The only data read: the train split, classes 0..4 (the test split is not touched either).
    assert [(a, k["classes"]) for a, k in recorder["loads"]] == [(("fashion_mnist", "train"), [0, 1, 2, 3, 4])]
    # The loop received no labels, and every image it can index is a train image of classes 0..4,
    # checked against an independent read of the whole split.
    (data,) = recorder["data"]
    assert data.labels is None
    full = load_dataset("fashion_mnist", "train", root=tiny_fmnist)
    rows_of = {img.tobytes(): int(lbl) for img, lbl in zip(full.images.numpy(), full.labels.numpy())}
    assert len(data.images) == 150
    assert all(rows_of[img.tobytes()] < 5 for img in data.images.numpy())
    # ... and so is every batch it trained on (each image as stored or mirrored by the flip).
    batches = recorder["batches"]
    assert len(batches) == 4 and all(labels is None for _, labels in batches)
    for x0, _ in batches:
        for img in _as_uint8(x0):
            key = img.tobytes() if img.tobytes() in rows_of else img[:, :, ::-1].copy().tobytes()
            assert rows_of[key] < 5


def test_resume_in_two_halves_is_bit_identical(tiny_fmnist, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    no_tb = ["--set", "logging.tensorboard=false"]
    assert run_cli(train_args(tiny_fmnist, a, 4, *no_tb), capsys)[0] == 0
    assert run_cli(train_args(tiny_fmnist, b, 2, *no_tb), capsys)[0] == 0
    rc, stdout, err = run_cli(["train-diffusion", "--resume", b, "--steps", 4], capsys)
    assert rc == 0, err
    assert yaml.safe_load((b / "config.yaml").read_text())["diffusion"]["steps"] == 4
    wa = load_file(a / "prior" / "unet" / "diffusion_pytorch_model.safetensors")
    wb = load_file(b / "prior" / "unet" / "diffusion_pytorch_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = torch.load(a / "last.pt", weights_only=True), torch.load(b / "last.pt", weights_only=True)
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    assert [json.loads(l)["step"] for l in (b / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    meta = load_prior(b / "prior").metadata
    assert meta["steps"] == 4 and len(meta["commands"]) == 2 and "--resume" in meta["commands"][1]


def test_init_from_starts_from_another_priors_weights(tiny_fmnist, tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    no_tb = ["--set", "logging.tensorboard=false"]
    assert run_cli(train_args(tiny_fmnist, a, 2, *no_tb), capsys)[0] == 0
    # One step at a negligible lr: the saved EMA is the starting weights, from a's prior or from a random init.
    tiny_lr = ["--set", "diffusion.lr=1e-12", "--set", "run.seed=1", *no_tb]
    rc, _, err = run_cli(train_args(tiny_fmnist, b, 1, *tiny_lr, "--set", f"diffusion.init_from={a / 'prior'}"), capsys)
    assert rc == 0, err
    assert run_cli(train_args(tiny_fmnist, c, 1, *tiny_lr), capsys)[0] == 0
    wa, wb, wc = (load_file(p / "prior" / "unet" / "diffusion_pytorch_model.safetensors") for p in (a, b, c))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert not all(torch.allclose(wa[k], wc[k], atol=1e-6) for k in wa)
    assert load_prior(b / "prior").metadata["diffusion"]["init_from"] == str(a / "prior")


def test_class_conditional_run_reads_labels(tiny_fmnist, tmp_path, capsys, recorder):
    out = tmp_path / "cond"
    args = train_args(tiny_fmnist, out, 2, "--class-conditional", "--set", "data.classes=[0,1,2,3,4]",
                      "--set", "logging.tensorboard=false")
    rc, stdout, err = run_cli(args, capsys)
    assert rc == 0, err
    prior = load_prior(out / "prior")
    assert prior.conditional and prior.num_class_embeds == 10
    assert prior.metadata["class_conditional"] is True and prior.metadata["classes"] == [0, 1, 2, 3, 4]
    (data,) = recorder["data"]
    assert data.labels is not None and int(data.labels.max()) < 5
    assert all(labels is not None and int(labels.max()) < 5 for _, labels in recorder["batches"])
    assert (out / "samples" / "step_000002.png").is_file()


@pytest.mark.parametrize("args, needle", [
    (["--set", "diffusion.ema_decay=1.5"], "config key 'diffusion.ema_decay': got 1.5"),
    (["--steps", "0"], "config key 'diffusion.steps': got 0"),
    (["--set", "diffusion.sample_steps=2000"], "diffusion.sample_steps"),
    (["--set", "diffusion.block_out_channels=[8,16,16,16]"], "sample_size=28"),
    (["--set", "data.classes=[12]"], "classes"),
    (["--set", "diffusion.init_from=no/such/prior"], "config key 'diffusion.init_from': prior path no/such/prior"),
])
def test_bad_config_is_one_line_exit_2(args, needle, tiny_fmnist, tmp_path, capsys):
    rc, out, err = run_cli(["train-diffusion", "--dataset", "fashion_mnist", "--out", tmp_path / "x", "--set",
                            f"data.root={tiny_fmnist}", *args],
                           capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "x" / "last.pt").exists()


def test_bad_resume_is_one_line_exit_2(tmp_path, capsys):
    rc, _, err = run_cli(["train-diffusion", "--resume", tmp_path / "nope"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--resume" in err
    rc, _, err = run_cli(["train-diffusion", "--resume", tmp_path, "--set", "diffusion.lr=1"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "only --steps" in err
