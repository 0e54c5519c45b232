"""Your own models: the Python entry point with plain modules and no dataset, the teacher's metadata filling
in what the config leaves open (and conflicts refused), explicit resizes, and the README's example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from fastad.api import distill
from fastad.cli.main import main
from fastad.config import load_config
from fastad.diffusion import build_unet, load_prior, save_prior
from fastad.errors import UserError
from fastad.models import create_model, save_classifier

from conftest import FMNIST_DIR, REPO

TINY = ["distillation.epochs=2", "distillation.synthesis_batch_size=8", "distillation.train_batch_size=8",
        "distillation.train_iterations=2", "distillation.eval_every=1", "distillation.holdout_images=12",
        "fast_ad.ddim_steps=2", "fast_ad.T=100", "logging.tensorboard=false", "logging.progress=false",
        "distillation.compile_kd_teacher=false"]


class Teacher(nn.Module):
    """A classifier of the user's own design: no zoo name, no metadata."""

    def __init__(self, channels: int = 1, classes: int = 7) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture(scope="module")
def priors(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("priors")
    torch.manual_seed(0)
    for name, size in (("p16", 16), ("p8", 8)):
        save_prior(root / name, build_unet(sample_size=size, in_channels=1, block_out_channels=(8, 16, 16)),
                   num_train_timesteps=100)
    return {"p16": root / "p16", "p8": root / "p8"}


def test_plain_modules_with_no_dataset(priors, tmp_path, monkeypatch):
    """A teacher and a student defined here, no dataset files at all: the run reports the student's agreement
    with the teacher on held-out synthetic images, and says that this is what it reports."""
    def no_data(*a, **k):
        raise AssertionError("a run without data.dataset must not read any dataset")

    monkeypatch.setattr("fastad.data.dataset.load_dataset", no_data)
    torch.manual_seed(0)
    teacher, student = Teacher(), nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                                nn.Flatten(), nn.Linear(4, 7))
    prior = load_prior(priors["p16"])
    res = distill(teacher, prior, student=student, sets=[*TINY, "distillation.mean=[0.5]", "distillation.std=[0.25]"],
                  out=tmp_path / "run")
    s = res.summary
    assert res.student is student and res.out == tmp_path / "run"
    assert s["student_top1"] is None and s["teacher_top1"] is None and "no labelled data" in s["evaluated_on"]
    assert 0 <= s["synthetic_agreement_top1"] <= 100 and s["synthetic_kl"] >= 0
    assert "12 held-out synthetic images" in s["synthetic_holdout"] and "never trained on" in s["synthetic_holdout"]
    assert s["spec_sources"]["num_classes"] == "teacher output" and s["spec_sources"]["image_size"] == "prior"
    saved = load_config(tmp_path / "run" / "config.yaml")  # the record of what was used
    assert (saved.distillation.num_classes, saved.distillation.image_size) == (7, [16, 16])
    assert saved.distillation.teacher_checkpoint is None and saved.distillation.mean == [0.5]
    assert (tmp_path / "run" / "student.safetensors").is_file() and (tmp_path / "run" / "last.pt").is_file()
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "eval/synthetic_agreement" in rows[-1] and "eval/top1" not in rows[-1]
    # The same run resumed and extended from its folder continues where it stopped.
    cfg = load_config(tmp_path / "run" / "config.yaml", ["distillation.epochs=3"])
    (tmp_path / "run" / "config.yaml").write_text((tmp_path / "run" / "config.yaml").read_text().replace(
        "epochs: 2", "epochs: 3"))
    assert cfg.distillation.epochs == 3
    again = distill(teacher, prior, student=student, out=tmp_path / "run", resume=True).summary
    assert again["rounds"] == 3 and again["images_synthesized"] == 24


def test_module_teacher_needs_its_normalisation(priors, tmp_path):
    with pytest.raises(UserError, match="set distillation.mean and distillation.std"):
        distill(Teacher(), priors["p16"], student="resnet8", sets=TINY, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused before the run folder is made
    with pytest.raises(UserError, match=r"config key 'distillation.mean': got \[0.5, 0.5\] for a 1-channel teacher"):
        distill(Teacher(), priors["p16"], sets=[*TINY, "distillation.mean=[0.5,0.5]", "distillation.std=[1,1]"],
                out=tmp_path / "r")


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory) -> Path:
    """A fastad checkpoint of a teacher for sklearn's 8x8 digits, as train-teacher writes it."""
    path = tmp_path_factory.mktemp("digits") / "teacher.safetensors"
    torch.manual_seed(0)
    save_classifier(path, create_model("resnet8", num_classes=10, in_channels=1), {
        "arch": "resnet8", "num_classes": 10, "in_channels": 1, "input_size": [8, 8], "dataset": "digits",
        "class_names": [str(k) for k in range(10)], "mean": [0.3], "std": [0.4]})
    return path


def test_cli_takes_everything_from_the_teachers_metadata(digits_teacher, priors, tmp_path, capsys):
    """`fastad distill --teacher T --prior P` for an 8x8 digits teacher: no image size, class or normalisation
    flags; it evaluates on the dataset the teacher names, and the saved config records what was used."""
    out = tmp_path / "run"
    args = ["distill", "--teacher", str(digits_teacher), "--prior", str(priors["p8"]), "--out", str(out),
            "--set", "distillation.max_seconds=0", *[a for s in TINY for a in ("--set", s)]]
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "agreement with teacher" in printed and "student top-1" in printed
    saved = load_config(out / "config.yaml")
    d = saved.distillation
    assert (d.teacher_arch, d.num_classes, d.image_size, d.mean, d.std) == ("resnet8", 10, [8, 8], [0.3], [0.4])
    assert saved.data.dataset == "digits"
    s = json.loads((out / "summary.json").read_text())
    assert s["student_top1"] is not None and "digits test split" in s["evaluated_on"]
    assert s["synthetic_agreement_top1"] is not None


def test_explicit_values_that_contradict_the_metadata_are_refused(digits_teacher, priors, tmp_path, capsys):
    base = ["distill", "--teacher", str(digits_teacher), "--prior", str(priors["p8"]), "--out", str(tmp_path / "r"),
            *[a for s in TINY for a in ("--set", s)]]
    for extra, needle in ((["distillation.image_size=[28,28]"], "config key 'distillation.image_size': got [28, 28] "
                                                                "but the teacher metadata says [8, 8]"),
                          (["distillation.num_classes=100"], "config key 'distillation.num_classes': got 100 but "
                                                             "teacher"),
                          (["distillation.std=[0.5]"], "config key 'distillation.std': got [0.5] but the teacher "
                                                       "metadata says [0.4]"),
                          (["distillation.teacher_arch=resnet20"], "config key 'distillation.teacher_arch': got "
                                                                   "'resnet20' but teacher")):
        assert main([*base, *[a for s in extra for a in ("--set", s)]]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_a_prior_of_another_size_needs_an_explicit_resize(digits_teacher, priors, tmp_path, capsys):
    base = ["distill", "--teacher", str(digits_teacher), "--prior", str(priors["p16"]), "--out", str(tmp_path / "r"),
            "--set", "logging.progress=true", *[a for s in TINY if "progress" not in s for a in ("--set", s)]]
    assert main(base) == 2
    assert "makes 1x16x16 images but the teacher takes 1x8x8" in capsys.readouterr().err
    assert main([*base, "--set", "distillation.resize=area"]) == 0
    printed = capsys.readouterr().out
    assert "prior images resized 16x16 -> 8x8 (area, distillation.resize)" in printed
    assert load_config(tmp_path / "r" / "config.yaml").distillation.resize == "area"


def test_teacher_and_dataset_that_disagree(digits_teacher, priors, tmp_path, capsys):
    """A digits teacher evaluated on Fashion-MNIST-shaped data: one line naming both."""
    args = ["distill", "--config", str(REPO / "configs" / "fashion_mnist.yaml"), "--teacher", str(digits_teacher),
            "--prior", str(priors["p8"]), "--out", str(tmp_path / "r"), "--set", "data.dataset=digits",
            "--set", "distillation.image_size=[28,28]", *[a for s in TINY for a in ("--set", s)]]
    assert main(args) == 2
    assert "distillation.image_size" in capsys.readouterr().err


def test_shipped_configs_train_the_teacher_they_distil_from():
    for name in ("fashion_mnist.yaml", "cifar100_resnet34_resnet18.yaml"):
        cfg = load_config(REPO / "configs" / name)
        teacher = cfg.distillation.teacher_arch
        if teacher is None:  # named by the shipped checkpoint's metadata
            from fastad.models import read_classifier_meta
            teacher = read_classifier_meta(REPO / cfg.distillation.teacher_checkpoint)["arch"]
        assert cfg.teacher_training.arch == teacher, name


@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="Fashion-MNIST not installed (make data)")
def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    """The README's "Your own models in Python" example, exactly as printed there, from the repo folder."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- example: own-models -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README lost its own-models example"
    monkeypatch.chdir(REPO)
    monkeypatch.setattr("sys.argv", ["example"])
    code = block.group(1).replace('out="runs/own-models"', f'out="{tmp_path / "own-models"}"')
    scope: dict = {}
    exec(compile(code, "README.md example", "exec"), scope)
    s = scope["result"].summary
    assert s["synthetic_agreement_top1"] is not None and s["student_top1"] is None
    assert (tmp_path / "own-models" / "student.safetensors").is_file()
