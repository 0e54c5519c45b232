"""Distillation across processes on CPU (gloo): two torchrun ranks end with the same student, rank 0 writes a
complete run folder, a resumed run continues exactly, a killed one resumes, and another rank count is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fastad.diffusion import build_unet, save_prior
from fastad.models import create_model, save_classifier

from conftest import REPO


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(0)
    save_classifier(root / "teacher.safetensors", create_model("resnet8", num_classes=10, in_channels=1), {
        "arch": "resnet8", "num_classes": 10, "in_channels": 1, "input_size": [16, 16], "mean": [0.5], "std": [0.25]})
    save_prior(root / "prior", build_unet(sample_size=16, in_channels=1, block_out_channels=(8, 16, 16)),
               num_train_timesteps=100)
    return {"teacher": root / "teacher.safetensors", "prior": root / "prior"}


def command(assets, out: Path, rounds: int, nproc: int, *extra: str) -> list[str]:
    sets = ["distillation.student_arch=resnet8", "distillation.synthesis_batch_size=8",
            "distillation.train_batch_size=8", "distillation.train_iterations=3", "distillation.buffer_size=32",
            "distillation.eval_every=2", "distillation.holdout_images=8", "distillation.schedule=step",
            "distillation.milestones=[1000]", "distillation.max_seconds=0", "fast_ad.ddim_steps=2", "fast_ad.T=100",
            "fast_ad.guidance=none", "logging.progress=false", "logging.tensorboard=false", "run.threads=1",
            "distillation.compile_kd_teacher=false"]
    args = ["distill", "--config", str(REPO / "configs" / "fashion_mnist.yaml"), "--teacher", str(assets["teacher"]),
            "--prior", str(assets["prior"]), "--out", str(out), "--epochs", str(rounds),
            "--set", "data.dataset=null", *[a for s in sets for a in ("--set", s)], *extra]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "--module", "fastad", *args]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, **kw)


def test_two_ranks_one_student_and_a_complete_folder(assets, tmp_path):
    """Through the shortcut: `fastad distill --nproc 2` launches the torchrun job itself."""
    out = tmp_path / "two"
    cmd = command(assets, out, 3, 2)
    res = run([sys.executable, "-m", "fastad", *cmd[cmd.index("distill"):], "--nproc", "2"])
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["processes"] == 2 and len(set(s["student_checksums"])) == 1  # both ranks hold the same weights
    assert s["images_synthesized"] == 3 * 8 and s["rounds"] == 3  # each round: 4 images per rank, gathered
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "student.safetensors"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["round_00002.png", "round_00003.png"]
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2 and len(state["buffer"]["labels"]) == 24
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3  # rank 0 alone logs


def test_resume_continues_exactly_and_needs_the_same_ranks(assets, tmp_path):
    """Also: the ranks' shared teacher view cache gives the student the teacher run live gives, bit for bit."""
    straight, split, live = tmp_path / "straight", tmp_path / "split", tmp_path / "live"
    assert run(command(assets, straight, 4, 2)).returncode == 0
    assert run(command(assets, live, 4, 2, "--set", "distillation.teacher_view_cache=false")).returncode == 0
    assert run(command(assets, split, 2, 2)).returncode == 0
    one = run([sys.executable, "-m", "fastad", "distill", "--resume", str(split), "--epochs", "4"])
    assert one.returncode == 2 and "resume it with --nproc 2, not 1" in one.stderr
    assert len(one.stderr.strip().splitlines()) == 1
    again = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--module",
                 "fastad", "distill", "--resume", str(split), "--epochs", "4"])
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = load_file(straight / "student.safetensors"), load_file(split / "student.safetensors")
    c = load_file(live / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    known = torch.load(straight / "last.pt", weights_only=True)["teacher_views"]["known"]
    assert int(known.sum()) > 4 * 3 * 4  # more pairs than rank 0's own 48 draws: the ranks share what they ran


def test_a_killed_two_rank_run_resumes(assets, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(command(assets, out, 12, 2), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if (out / "last.pt").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the run wrote no checkpoint in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = torch.load(out / "last.pt", weights_only=True)["progress"]["round"]
    assert 1 <= done < 12, "kill the run before its end"
    res = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--module",
               "fastad", "distill", "--resume", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["rounds"] == 12 and len(set(s["student_checksums"])) == 1


def test_more_ranks_than_gpus_is_refused_before_joining(monkeypatch):
    """nccl cannot put two ranks on one GPU: a rank whose local index has no GPU stops with one line."""
    from fastad.distill.distributed import World, setup
    from fastad.errors import UserError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="2 processes on this machine need one GPU each.*it has 1"):
        setup(World(rank=1, size=2, local_rank=1, local_size=2), torch.device("cuda"))
