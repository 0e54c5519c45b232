"""``fastad sample``: PNG grid + npz, teacher captions (``fastad.train.evaluate.classify``), class-conditional
labels (``cyclic_labels``), one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastad.cli.main import main
from fastad.data.info import FASHION_MNIST_CLASSES
from fastad.diffusion import build_unet, load_prior, save_prior
from fastad.diffusion.sampling import cyclic_labels, sample_prior
from fastad.models import create_model, save_classifier
from fastad.train.evaluate import classify

MEAN, STD = [0.2860], [0.3530]


def run_cli(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A random tiny 28x28 prior (unconditional and class-conditional) and a random resnet8 teacher."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_prior(root / "prior", build_unet(sample_size=28, in_channels=1, block_out_channels=(8, 16, 16)))
    save_prior(root / "cond", build_unet(sample_size=28, in_channels=1, block_out_channels=(8, 16, 16),
                                         num_class_embeds=10))
    meta = {"arch": "resnet8", "num_classes": 10, "in_channels": 1, "input_size": [28, 28], "mean": MEAN, "std": STD,
            "class_names": list(FASHION_MNIST_CLASSES)}
    save_classifier(root / "teacher.safetensors", create_model("resnet8", num_classes=10, in_channels=1).eval(), meta)
    save_classifier(root / "rgb.safetensors", create_model("resnet8", num_classes=10, in_channels=3).eval(),
                    {**meta, "in_channels": 3, "mean": MEAN * 3, "std": STD * 3})
    return root


def _sample(models, tmp_path, capsys, *extra, name="s"):
    png, npz = tmp_path / f"{name}.png", tmp_path / f"{name}.npz"
    rc, out, err = run_cli(["sample", "--prior", models / "prior", "--n", 6, "--steps", 3, "--out", png, "--npz", npz,
                            "--no-progress", "--device", "cpu", *extra], capsys)
    assert rc == 0, err
    return png, dict(np.load(npz)), out


def test_grid_and_npz(models, tmp_path, capsys):
    png, arrays, out = _sample(models, tmp_path, capsys)
    assert "images/s" in out
    assert arrays["images"].shape == (6, 1, 28, 28) and arrays["images"].dtype == np.uint8
    assert "predictions" not in arrays
    # 6 cells -> 3 per row, 2 rows; 28x28 upscaled 3x (nearest) with 2-px gaps.
    assert Image.open(png).size == (2 + 3 * (84 + 2), 2 + 2 * (84 + 2))
    # Deterministic DDIM: the same seed gives the same images whatever the batch size.
    _, again, _ = _sample(models, tmp_path, capsys, "--batch-size", 4, name="again")
    assert np.array_equal(arrays["images"], again["images"])
    # --no-clip-x0 overrides the scheduler config's clip_sample (a random UNet's previews leave [-1, 1]).
    _, unclipped, out = _sample(models, tmp_path, capsys, "--no-clip-x0", name="unclipped")
    assert "unclipped" in out and not np.array_equal(arrays["images"], unclipped["images"])
    # DPM-Solver++(2M) from the same start noise: other images, equally batch-independent.
    _, dpm, _ = _sample(models, tmp_path, capsys, "--solver", "dpmpp-2m", name="dpm")
    _, dpm4, _ = _sample(models, tmp_path, capsys, "--solver", "dpmpp-2m", "--batch-size", 4, name="dpm4")
    assert not np.array_equal(arrays["images"], dpm["images"]) and np.array_equal(dpm["images"], dpm4["images"])


def test_teacher_captions_each_cell(models, tmp_path, capsys):
    png, arrays, out = _sample(models, tmp_path, capsys, "--teacher", models / "teacher.safetensors")
    assert "teacher's classes" in out
    pred, conf = arrays["predictions"], arrays["confidence"]
    assert pred.shape == (6,) and ((conf > 0) & (conf <= 1)).all()
    # Independent reading of the same samples: prior space [-1, 1] -> ((x + 1) / 2 - mean) / std.
    from fastad.models import load_classifier

    teacher, _ = load_classifier(models / "teacher.safetensors")
    # The saved scheduler config says clip_sample: true, which is the command's default.
    x = sample_prior(load_prior(models / "prior"), 6, steps=3, generator=torch.Generator().manual_seed(0), clip_x0=True)
    with torch.no_grad():
        probs = teacher(((x.clamp(-1, 1) + 1) / 2 - MEAN[0]) / STD[0]).softmax(1)
    assert np.array_equal(pred, probs.argmax(1).numpy())
    np.testing.assert_allclose(conf, probs.max(1).values.numpy(), rtol=1e-5)
    # The command's reader is fastad.train.evaluate.classify: the same reading, in any batch size.
    p2, c2 = classify(teacher, x, mean=MEAN, std=STD, batch_size=4)
    assert np.array_equal(pred, p2.numpy()) and p2.dtype == torch.long and c2.dtype == torch.float32
    np.testing.assert_allclose(conf, c2.numpy(), rtol=1e-5)
    # Captions sit in a strip under each image: the grid is taller and the strip has dark text pixels.
    img = np.asarray(Image.open(png).convert("L"))
    assert img.shape[0] > 2 + 2 * (84 + 2) and img.shape[1] == 2 + 3 * (84 + 2)
    assert (img[2 + 84: 2 + 84 + 10, 2: 2 + 84] < 128).any()


def test_class_conditional_labels(models, tmp_path, capsys):
    base = ["sample", "--prior", models / "cond", "--n", 4, "--steps", 2, "--no-progress", "--device", "cpu"]
    rc, _, err = run_cli([*base, "--out", tmp_path / "a.png", "--npz", tmp_path / "a.npz", "--class-labels", 3], capsys)
    assert rc == 0, err
    assert np.load(tmp_path / "a.npz")["class_labels"].tolist() == [3, 3, 3, 3]
    rc, _, err = run_cli([*base, "--out", tmp_path / "b.png", "--npz", tmp_path / "b.npz"], capsys)
    assert rc == 0, err
    assert np.load(tmp_path / "b.npz")["class_labels"].tolist() == [0, 1, 2, 3]  # balanced by default
    rc, _, err = run_cli([*base, "--out", tmp_path / "c.png", "--npz", tmp_path / "c.npz", "--class-labels", 7, 2],
                         capsys)
    assert rc == 0, err
    assert np.load(tmp_path / "c.npz")["class_labels"].tolist() == [7, 2, 7, 2]  # a shorter list is repeated


def test_cyclic_labels():
    assert cyclic_labels(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert cyclic_labels(2, 5).tolist() == [0, 1] and cyclic_labels(2, 5).dtype == torch.long


def test_classify_reads_clamped_images(models):
    """classify clamps to [-1, 1] (what a grid shows) before the teacher's view."""
    from fastad.models import load_classifier

    teacher, _ = load_classifier(models / "teacher.safetensors")
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 4
    pred, conf = classify(teacher, x, mean=MEAN, std=STD)
    p2, c2 = classify(teacher, x.clamp(-1, 1), mean=MEAN, std=STD)
    assert torch.equal(pred, p2) and torch.allclose(conf, c2)
    with torch.no_grad():
        want = teacher(((x.clamp(-1, 1) + 1) / 2 - MEAN[0]) / STD[0]).softmax(1).max(1)
    assert torch.equal(pred, want.indices) and torch.allclose(conf, want.values, atol=1e-6)


@pytest.mark.parametrize("args, needle", [
    (["--prior", "MODELS/missing"], "missing"),
    (["--prior", "MODELS/prior", "--teacher", "MODELS/rgb.safetensors"], "3 channels"),
    (["--prior", "MODELS/prior", "--teacher", "MODELS/none.safetensors"], "none.safetensors"),
    (["--prior", "MODELS/prior", "--class-labels", "1"], "unconditional"),
    (["--prior", "MODELS/cond", "--class-labels", "10"], "--class-labels"),
    (["--prior", "MODELS/prior", "--n", "0"], "--n=0"),
    (["--prior", "MODELS/prior", "--out", "grid.jpg"], ".png"),
    (["--prior", "MODELS/prior", "--solver", "dpmpp-2m", "--eta", "1"], "--eta=1.0"),
])
def test_bad_input_is_one_line_exit_2(args, needle, models, tmp_path, capsys):
    args = [a.replace("MODELS", str(models)) for a in args]
    rc, out, err = run_cli(["sample", "--steps", 2, "--n", 2, "--no-progress", "--device", "cpu",
                            "--out", tmp_path / "x.png", *args], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
