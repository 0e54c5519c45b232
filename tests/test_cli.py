"""The command line end to end: help, train-teacher + evaluate on IDX files, resume, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fastad.cli.main import main


def run_cli(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "fastad", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("train-teacher", "evaluate", "config"):
        assert cmd in out.stdout
    out = subprocess.run([sys.executable, "-m", "fastad", "train-teacher", "--help"], capture_output=True, text=True)
    for flag in ("--config", "--set", "--device", "--seed", "--epochs", "--out", "--arch", "--resume"):
        assert flag in out.stdout


def teacher_args(root, out, *extra):
    return ["train-teacher", "--dataset", "fashion_mnist", "--arch", "resnet8", "--epochs", "2", "--out", out,
            "--set", f"data.root={root}", "--set", "teacher_training.batch_size=64",
            "--set", "logging.progress=false", "--set", "data.eval_batch_size=50", *extra]


def test_train_teacher_then_evaluate(tiny_fmnist, tmp_path, capsys):
    out = tmp_path / "teacher"
    rc, stdout, err = run_cli(teacher_args(tiny_fmnist, out), capsys)
    assert rc == 0, err
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "teacher.safetensors", "summary.json"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["teacher_training"]["arch"] == "resnet8" and cfg["teacher_training"]["epochs"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arch"] == "resnet8" and summary["num_classes"] == 10 and summary["in_channels"] == 1
    epochs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if "epoch/test_top1" in l]
    assert len(epochs) == 2

    report = tmp_path / "eval.json"
    rc, stdout, err = run_cli(["evaluate", "--checkpoint", out / "teacher.safetensors", "--root", tiny_fmnist,
                               "--json", report, "--teacher", out / "teacher.safetensors",
                               "--confusion", tmp_path / "confusion.png"], capsys)
    assert rc == 0, err
    r = json.loads(report.read_text())
    # Rows of the confusion matrix are the true classes: their sums are the class counts, the diagonal
    # over the row is the per-class accuracy.
    cm = r["confusion"]
    assert sum(map(sum, cm)) == r["num_images"]
    for c, row in enumerate(cm):
        if sum(row):
            assert 100 * row[c] / sum(row) == pytest.approx(r["per_class"][c])
    assert (tmp_path / "confusion.png").stat().st_size > 5_000 and "most often mistaken for" in stdout
    assert r["top1"] == pytest.approx(summary["test_top1"], abs=1e-6)  # evaluate reproduces training's number
    assert r["agreement"] == 100.0 and len(r["per_class"]) == 10 and "top5" in r
    assert "top-1" in stdout and "Ankle boot" in stdout
    # A range of the split: only those images, and the two halves' counts add up to the whole.
    halves = []
    for lo, hi in ((0, 40), (40, r["num_images"])):
        rc, stdout, err = run_cli(["evaluate", "--checkpoint", out / "teacher.safetensors", "--root", tiny_fmnist,
                                   "--range", lo, hi, "--json", tmp_path / "half.json"], capsys)
        assert rc == 0, err
        half = json.loads((tmp_path / "half.json").read_text())
        assert half["num_images"] == hi - lo and half["split"] == f"test[{lo}:{hi}]"
        halves.append(half)
    correct = sum(h["top1"] * h["num_images"] for h in halves) / 100
    assert correct == pytest.approx(r["top1"] * r["num_images"] / 100)


def test_existing_run_folder_is_not_overwritten(tiny_fmnist, tmp_path, capsys):
    out = tmp_path / "t"
    assert run_cli(teacher_args(tiny_fmnist, out, "--epochs", "1"), capsys)[0] == 0
    before = (out / "teacher.safetensors").read_bytes()
    rc, _, err = run_cli(teacher_args(tiny_fmnist, out, "--epochs", "1"), capsys)
    assert rc == 2 and "already holds a train-teacher run" in err and f"--resume {out}" in err
    assert (out / "teacher.safetensors").read_bytes() == before


def test_resume_is_exact(tiny_fmnist, tmp_path, capsys):
    """1 epoch + --resume to 2 epochs gives the same weights as 2 epochs straight (constant lr)."""
    flat = ["--set", "teacher_training.schedule=step", "--set", "teacher_training.milestones=[10]"]
    assert run_cli(teacher_args(tiny_fmnist, tmp_path / "a", *flat), capsys)[0] == 0
    b = tmp_path / "b"
    assert run_cli(teacher_args(tiny_fmnist, b, *flat, "--epochs", "1"), capsys)[0] == 0
    assert run_cli(["train-teacher", "--resume", b, "--epochs", "2"], capsys)[0] == 0
    assert yaml.safe_load((b / "config.yaml").read_text())["teacher_training"]["epochs"] == 2
    wa, wb = load_file(tmp_path / "a" / "teacher.safetensors"), load_file(b / "teacher.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train-teacher", "--config", "nope.yaml"], "config file 'nope.yaml' not found"),
        (["train-teacher", "--set", "teacher_training.bogus=1"], "unknown config key 'teacher_training.bogus'"),
        (["train-teacher", "--set", "teacher_training.lr=fast"], "config key 'teacher_training.lr': got 'fast'"),
        (["train-teacher", "--dataset", "fashion_mnist", "--arch", "resnet9000", "--set", "data.root=ROOT"], "unknown model 'resnet9000'"),
        (["train-teacher", "--dataset", "fashion_mnist", "--set", "data.root=/nonexistent/fmnist"], "/nonexistent/fmnist"),
        (["evaluate", "--checkpoint", "missing.safetensors"], "missing.safetensors"),
        (["train-teacher", "--resume", "/nonexistent/run"], "--resume"),
        (["train-teacher", "--resume", "/nonexistent/run", "--seed", "3"], "only --epochs may be given"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, needle, tiny_fmnist, capsys):
    args = [a.replace("ROOT", str(tiny_fmnist)) for a in args]
    rc, out, err = run_cli(args, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_checkpoint_for_another_architecture(tiny_fmnist, tmp_path, capsys):
    from fastad.models import create_model

    ckpt = tmp_path / "wrn.pth"
    torch.save({"state_dict": create_model("wrn16_1", num_classes=10, in_channels=1).state_dict()}, ckpt)
    rc, out, err = run_cli(["evaluate", "--checkpoint", ckpt, "--arch", "resnet8", "--dataset", "fashion_mnist",
                            "--root", tiny_fmnist], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "resnet8" in err and "Traceback" not in err


def test_console_script_exit_code_without_traceback(tmp_path):
    """The installed entry point: a user mistake exits 2 with one line on stderr, no Python traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "fastad", "train-teacher", "--set", "teacher_training.epochs=zero",
                        "--out", str(tmp_path / "x")], capture_output=True, text=True, env=env)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "teacher_training.epochs" in p.stderr
    assert not (tmp_path / "x").exists()  # failed before any work started
