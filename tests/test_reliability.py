"""Reliability: checkpoints are never unpickled beyond tensors, crashes and full disks lose nothing, and an
image-folder distillation never opens its train split.

- Safe loading: a crafted pickle (its unpickling would create a marker file) given to any command that
  takes a checkpoint is refused in one line (exit 2) and the marker never appears.
- Crash safety: ``fastad distill`` and ``fastad train-diffusion`` killed with SIGKILL at random points
  (and at fixed points inside a checkpoint write) leave a ``last.pt`` that loads, and ``--resume``
  finishes with the same weights as an uninterrupted run.
- Full disk: a failed checkpoint write (ENOSPC, or a real RLIMIT_FSIZE limit) is one line naming the
  file, exit 2, and the previous checkpoint stays intact and resumable.
- Data-free image folders: ``distill`` with ``data.dataset: imagefolder`` opens nothing under train/.

Everything runs on tiny models (8x8 images, a (8, 16, 16) UNet, resnet8) so each test takes seconds.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import fastad.utils.io as fio
from fastad.cli.main import main
from fastad.config import load_config, save_config
from fastad.diffusion import build_unet, save_prior
from fastad.errors import UserError
from fastad.models import create_model, save_classifier
from fastad.utils.io import atomic_json, atomic_torch_save, load_resume_state, load_torch_file

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

TINY_DISTILL = """
distillation:
  student_arch: resnet8
  synthesis_batch_size: 4
  train_batch_size: 4
  train_iterations: 1
  buffer_size: 16
  holdout_images: 0
  eval_every: 100000
  evaluate_teacher: false
fast_ad:
  ddim_steps: 1
  T: 100
  guidance: none
run:
  device: cpu
  threads: 1
logging:
  tensorboard: false
  progress: false
"""

# train-diffusion on 28x28 IDX files with a tiny UNet, a checkpoint every step.
TINY_DIFFUSION = ["--device", "cpu", *[a for s in (
    "diffusion.block_out_channels=[8,16,16]", "diffusion.batch_size=4", "diffusion.sample_every=0",
    "diffusion.save_every=1", "diffusion.warmup_steps=2", "diffusion.num_train_timesteps=100", "logging.log_every=1",
    "logging.progress=false", "logging.tensorboard=false", "run.threads=1") for a in ("--set", s)]]


class Evil:
    """Unpickling this calls ``open(marker, "w")``: a file appears if (and only if) the pickle is executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def craft(path: Path, marker: Path, **plain) -> Path:
    """A torch checkpoint whose ``model`` entry runs code on an unrestricted ``torch.load``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Evil(marker), "state_dict": {"w": torch.zeros(1)}, **plain}, path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """An 8x8 teacher with metadata (and a 28x28 one for the IDX data), an 8x8 prior (random weights), a distill
    config and tiny IDX data."""
    from conftest import make_fmnist_like

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    save_classifier(root / "teacher.safetensors", create_model("resnet8", num_classes=10, in_channels=1),
                    {"arch": "resnet8", "num_classes": 10, "in_channels": 1, "input_size": [8, 8],
                     "mean": [0.5], "std": [0.5]})
    save_classifier(root / "teacher28.safetensors", create_model("resnet8", num_classes=10, in_channels=1),
                    {"arch": "resnet8", "num_classes": 10, "in_channels": 1, "input_size": [28, 28],
                     "dataset": "fashion_mnist", "mean": [0.286], "std": [0.353]})
    save_prior(root / "prior", build_unet(sample_size=8, in_channels=1, block_out_channels=(8, 16, 16)),
               num_train_timesteps=100)
    (root / "tiny.yaml").write_text(TINY_DISTILL)
    return {"teacher": root / "teacher.safetensors", "teacher28": root / "teacher28.safetensors",
            "prior": root / "prior", "config": root / "tiny.yaml",
            "fmnist": make_fmnist_like(root / "fmnist", n_train=40, n_test=20)}


def distill_args(tiny, out, rounds, *extra):
    return ["distill", "--config", tiny["config"], "--teacher", tiny["teacher"], "--prior", tiny["prior"],
            "--out", out, "--epochs", rounds, *extra]


def diffusion_args(tiny, out, steps, *extra):
    return ["train-diffusion", "--dataset", "fashion_mnist", "--set", f"data.root={tiny['fmnist']}", "--out", out,
            "--steps", steps, *TINY_DIFFUSION, *extra]


def run_cli(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- safe loading -----------------------------------------------------------------------------------------------


def test_crafted_pickle_really_runs_code_when_unpickled(tmp_path):
    """The control: the crafted file is dangerous (an unrestricted load makes the marker); the loader refuses it."""
    marker = tmp_path / "marker"
    path = craft(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UserError, match=r"holds Python objects other than tensors .*refusing to unpickle"):
        load_torch_file(path)
    assert not marker.exists()


def _resume_dir(tmp_path: Path, command: str, tiny) -> Path:
    """A run folder with a valid config.yaml and a crafted last.pt."""
    run = tmp_path / "run"
    run.mkdir()
    root = f"data.root={tiny['fmnist']}"
    sets = {"train-teacher": ["data.dataset=fashion_mnist", root, "teacher_training.arch=resnet8",
                              "logging.tensorboard=false", "logging.progress=false"],
            "train-diffusion": ["data.dataset=fashion_mnist", root, "diffusion.block_out_channels=[8,16,16]",
                                "logging.tensorboard=false", "logging.progress=false"],
            "distill": [f"distillation.teacher_checkpoint={tiny['teacher']}",
                        f"distillation.diffusion_checkpoint={tiny['prior']}"]}[command]
    save_config(load_config(tiny["config"] if command == "distill" else None, sets), run / "config.yaml")
    craft(run / "last.pt", tmp_path / "marker", step=1, epoch=1)
    return run


@pytest.mark.parametrize("case", ["distill --teacher", "distill student_checkpoint", "evaluate --checkpoint",
                                  "evaluate --teacher", "sample --teacher", "train-teacher --resume",
                                  "train-diffusion --resume", "distill --resume"])
def test_crafted_pickle_is_refused_by_every_command(case, tiny, tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = craft(tmp_path / "evil.pt", marker, arch="resnet8", num_classes=10, in_channels=1)
    out = tmp_path / "out"
    args = {
        "distill --teacher": distill_args({**tiny, "teacher": evil}, out, 1),
        "distill student_checkpoint": distill_args(tiny, out, 1, "--set", f"distillation.student_checkpoint={evil}"),
        "evaluate --checkpoint": ["evaluate", "--checkpoint", evil, "--dataset", "fashion_mnist",
                                  "--root", tiny["fmnist"]],
        "evaluate --teacher": ["evaluate", "--checkpoint", tiny["teacher28"], "--teacher", evil,
                               "--dataset", "fashion_mnist", "--root", tiny["fmnist"]],
        "sample --teacher": ["sample", "--prior", tiny["prior"], "--teacher", evil, "--n", 2, "--steps", 1,
                             "--out", tmp_path / "s.png", "--no-progress", "--device", "cpu"],
    }.get(case)
    if args is None:  # --resume with a crafted last.pt
        command = case.split()[0]
        args = [command, "--resume", _resume_dir(tmp_path, command, tiny)]
        evil = tmp_path / "run" / "last.pt"
    rc, _, err = run_cli(args, capsys)
    line = one_line(err)
    assert rc == 2, err
    assert str(evil) in line and "refusing to unpickle" in line, line
    assert not marker.exists(), "the crafted pickle was executed"


def test_prior_weights_are_never_unpickled(tiny, tmp_path, capsys):
    """A prior with only a pickled .bin, or a shard index naming one, is refused; nothing is executed."""
    marker = tmp_path / "marker"
    for layout in ("bin", "index"):
        prior = tmp_path / layout
        (prior / "unet").mkdir(parents=True)
        for f in ("unet/config.json", "scheduler/scheduler_config.json"):
            (prior / f).parent.mkdir(parents=True, exist_ok=True)
            (prior / f).write_text((tiny["prior"] / f).read_text())
        craft(prior / "unet" / "diffusion_pytorch_model.bin", marker)
        if layout == "index":
            (prior / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(
                '{"metadata": {}, "weight_map": {"conv_in.weight": "diffusion_pytorch_model.bin"}}')
        rc, _, err = run_cli(["sample", "--prior", prior, "--n", 2, "--steps", 1, "--out", tmp_path / "s.png",
                              "--no-progress", "--device", "cpu"], capsys)
        assert rc == 2 and "never unpickles" in one_line(err), err
    assert not marker.exists()


def test_resume_tolerates_a_torn_metrics_line_and_refuses_a_foreign_state(tiny, tmp_path, capsys):
    out = tmp_path / "diff"
    assert run_cli(diffusion_args(tiny, out, 2), capsys)[0] == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "train/lo')  # a crash (or a full disk) in the middle of a row
    rc, _, err = run_cli(["train-diffusion", "--resume", out, "--steps", 3], capsys)
    assert rc == 0, err
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    state = load_resume_state(out)
    torch.save({k: v for k, v in state.items() if k != "ema"}, out / "last.pt")
    rc, _, err = run_cli(["train-diffusion", "--resume", out, "--steps", 4], capsys)
    line = one_line(err)
    assert rc == 2 and "not a train-diffusion checkpoint" in line and "ema" in line, err
    state["model"] = {k: v[:1] for k, v in state["model"].items()}
    torch.save(state, out / "last.pt")
    rc, _, err = run_cli(["train-diffusion", "--resume", out, "--steps", 4], capsys)
    assert rc == 2 and "does not fit the run's config.yaml" in one_line(err), err


def test_corrupt_checkpoints_are_one_line(tiny, tmp_path, capsys):
    """Truncated or foreign files: a one-line UserError, never a traceback."""
    run = _resume_dir(tmp_path, "distill", tiny)
    for content in (b"", b"garbage" * 50, b"PK\x03\x04" + b"\0" * 100):
        (run / "last.pt").write_bytes(content)
        rc, _, err = run_cli(["distill", "--resume", run], capsys)
        assert rc == 2 and "--resume: cannot read checkpoint" in one_line(err), err
    torch.save([1, 2], run / "last.pt")
    with pytest.raises(UserError, match="holds a list"):
        load_resume_state(run)


# --- crash safety -----------------------------------------------------------------------------------------------


def _spawn(args, extra_env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fastad", *[str(a) for a in args]], env={**ENV, **(extra_env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_at_random(proc: subprocess.Popen, out: Path, seed: int, total: int) -> None:
    """SIGKILL ``proc`` at a random point of its run: after its first checkpoint and a random number of the ``total``
    logged steps (at most ``total - 3``), plus up to 50 ms. Counted in steps, not seconds, so that a fast machine
    does not finish the run first."""
    rng = random.Random(seed)
    logged, wait = rng.randint(1, total - 3), rng.uniform(0, 0.05)

    def lines() -> int:
        try:
            return len((out / "metrics.jsonl").read_text().splitlines())
        except FileNotFoundError:
            return 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not ((out / "last.pt").is_file() and lines() >= logged):
        time.sleep(0.005)
    time.sleep(wait)
    proc.send_signal(signal.SIGKILL)
    err = proc.communicate()[1].decode()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err}"


def _no_temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.glob(".*.tmp")]


@pytest.fixture(scope="module")
def straight_distill(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main([str(a) for a in distill_args(tiny, out, 20)]) == 0
    return load_file(out / "student.safetensors")


@pytest.mark.parametrize("seed", [0, 1])
def test_distill_killed_at_random_points_resumes_exactly(seed, tiny, straight_distill, tmp_path, capsys):
    out = tmp_path / "run"
    _kill_at_random(_spawn(distill_args(tiny, out, 20)), out, seed, total=20)
    done = load_resume_state(out)["progress"]["round"]  # whatever the moment, last.pt loads
    assert 1 <= done < 20
    rc, _, err = run_cli(["distill", "--resume", out], capsys)
    assert rc == 0, err
    assert same_weights(straight_distill, load_file(out / "student.safetensors"))
    assert not _no_temp_files(out), _no_temp_files(out)  # a killed writer's temp file is swept
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == list(range(1, 21))


@pytest.fixture(scope="module")
def straight_diffusion(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "diff"
    assert main([str(a) for a in diffusion_args(tiny, out, 24)]) == 0
    return load_file(out / "prior" / "unet" / "diffusion_pytorch_model.safetensors")


@pytest.mark.parametrize("seed", [0, 1])
def test_train_diffusion_killed_at_random_points_resumes_exactly(seed, tiny, straight_diffusion, tmp_path, capsys):
    out = tmp_path / "diff"
    _kill_at_random(_spawn(diffusion_args(tiny, out, 24)), out, seed, total=24)
    step = load_resume_state(out)["step"]
    assert 1 <= step < 24
    rc, _, err = run_cli(["train-diffusion", "--resume", out], capsys)
    assert rc == 0, err
    assert same_weights(straight_diffusion, load_file(out / "prior" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert not _no_temp_files(out)
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == list(range(1, 25))


# Runs a command in a child that SIGKILLs itself inside the n-th write of last.pt: after `after` bytes of the
# temporary file ("write") or just before the rename ("replace").
_KILL_INSIDE_WRITE = """
import os, signal, sys
import fastad.utils.io as fio
from fastad.cli.main import main
where, nth, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
calls = {"n": 0, "bytes": 0}
real_save, real_replace = fio.atomic_torch_save, os.replace

def save(obj, path):
    if os.path.basename(str(path)) == "last.pt":
        calls["n"] += 1
    return real_save(obj, path)

def replace(src, dst):
    if where == "replace" and calls["n"] == nth and os.path.basename(str(dst)) == "last.pt":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)

real_write = fio._RecordingFile.write
def write(self, b):
    if where == "write" and calls["n"] == nth:
        calls["bytes"] += len(b)
        if calls["bytes"] > after:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_write(self, b)

fio.atomic_torch_save, fio.os.replace, fio._RecordingFile.write = save, replace, write
import fastad.distill.loop as loop
loop.atomic_torch_save = save
sys.exit(main(sys.argv[4:]))
"""


@pytest.mark.parametrize("where, after", [("write", 4000), ("replace", 0)])
def test_distill_killed_inside_a_checkpoint_write(where, after, tiny, straight_distill, tmp_path, capsys):
    """Killed while the 3rd last.pt is half written (or written but not renamed): last.pt still holds round 2."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", _KILL_INSIDE_WRITE, where, "3", str(after),
                           *[str(a) for a in distill_args(tiny, out, 20)]], env=ENV, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _no_temp_files(out), "the kill should have left a temporary file behind"
    assert load_resume_state(out)["progress"]["round"] == 2
    rc, _, err = run_cli(["distill", "--resume", out], capsys)
    assert rc == 0, err
    assert same_weights(straight_distill, load_file(out / "student.safetensors"))
    assert not _no_temp_files(out)


# --- full disk --------------------------------------------------------------------------------------------------


def test_full_disk_during_distill_keeps_the_previous_checkpoint(tiny, straight_distill, tmp_path, capsys, monkeypatch):
    """ENOSPC in the 3rd last.pt write: one line naming last.pt, exit 2; last.pt keeps round 2 and resumes."""
    out = tmp_path / "run"
    state = {"n": 0}
    real_write = fio._RecordingFile.write

    def full(self, b):
        if self.f.name.startswith(str(out / ".last.pt.")) and state["n"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, b)

    real_save = fio.atomic_torch_save

    def count(obj, path):
        state["n"] += Path(path).name == "last.pt"
        return real_save(obj, path)

    import fastad.distill.loop as loop

    monkeypatch.setattr(fio._RecordingFile, "write", full)
    monkeypatch.setattr(loop, "atomic_torch_save", count)
    rc, _, err = run_cli(distill_args(tiny, out, 20), capsys)
    line = one_line(err)
    assert rc == 2 and f"'{out / 'last.pt'}'" in line and "No space left on device" in line, line
    assert "previous last.pt is unchanged" in line
    assert load_resume_state(out)["progress"]["round"] == 2 and not _no_temp_files(out)
    monkeypatch.undo()
    rc, _, err = run_cli(["distill", "--resume", out], capsys)
    assert rc == 0, err
    assert same_weights(straight_distill, load_file(out / "student.safetensors"))


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_file_size_limit_during_train_diffusion_keeps_the_previous_checkpoint(tiny, tmp_path, capsys):
    """A real write failure (RLIMIT_FSIZE below the checkpoint's size) in a resumed train-diffusion: one line,
    exit 2, last.pt untouched; resumed without the limit, the run completes."""
    out = tmp_path / "diff"
    assert run_cli(diffusion_args(tiny, out, 2), capsys)[0] == 0
    before = (out / "last.pt").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "fastad", "train-diffusion", "--resume", str(out), "--steps", "4"],
                          env=ENV, capture_output=True, text=True, preexec_fn=_file_size_limit(len(before) // 2))
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert f"'{out / 'last.pt'}'" in line and "File too large" in line, line
    assert (out / "last.pt").read_bytes() == before and load_resume_state(out)["step"] == 2
    assert not _no_temp_files(out)
    rc, _, err = run_cli(["train-diffusion", "--resume", out, "--steps", 4], capsys)
    assert rc == 0, err
    assert load_resume_state(out)["step"] == 4


def test_failed_writes_leave_the_old_file(tmp_path, monkeypatch):
    """The writers themselves: an OSError (or safetensors' wrapped one) mid-write is a UserError naming the file,
    the old content stays and no temporary file is left."""
    path = tmp_path / "x.json"
    atomic_json({"a": 1}, path)
    monkeypatch.setattr(fio.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    with pytest.raises(UserError, match=rf"cannot write '{path}': No space left on device \(disk full\?\); the "
                                        "previous x.json is unchanged"):
        atomic_json({"a": 2}, path)
    monkeypatch.undo()
    assert path.read_text() == '{\n  "a": 1\n}\n' and not _no_temp_files(tmp_path)
    with pytest.raises(UserError, match=r"cannot write .*File too large"):
        fio.atomic_write(tmp_path / "y.bin", lambda tmp: (_ for _ in ()).throw(
            RuntimeError("Error while serializing: I/O error: File too large (os error 27)")))
    with pytest.raises(ValueError, match="not an OS error"):  # other failures pass through unchanged
        fio.atomic_write(tmp_path / "y.bin", lambda tmp: (_ for _ in ()).throw(ValueError("not an OS error")))
    assert not (tmp_path / "y.bin").exists() and not _no_temp_files(tmp_path)
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "z.pt")
    assert torch.equal(load_torch_file(tmp_path / "z.pt")["w"], torch.ones(2))


# --- the data-free rule for image folders ---------------------------------------------------------------------


def _image_folder(root: Path, classes=("a", "b", "c"), per_class=3) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(root / split / c / f"{i}.png")
    return root


def test_imagefolder_distill_never_opens_the_train_split(tiny, tmp_path, capsys, monkeypatch):
    """Every file opened (builtins.open, os.open, PIL.Image.open) and folder listed during a distill run with
    data.dataset imagefolder is recorded: nothing lies under train/."""
    root = _image_folder(tmp_path / "folder")
    torch.manual_seed(0)
    teacher = tmp_path / "teacher3.safetensors"
    save_classifier(teacher, create_model("resnet8", num_classes=3, in_channels=1),
                    {"arch": "resnet8", "num_classes": 3, "in_channels": 1, "input_size": [8, 8],
                     "mean": [0.5], "std": [0.5]})
    touched: list[str] = []

    def spy(real, name):
        def wrapper(path, *args, **kwargs):
            if isinstance(path, (str, bytes, os.PathLike)):
                touched.append(os.path.abspath(os.fsdecode(path)))
            return real(path, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(builtins, "open", spy(builtins.open, "open"))
    monkeypatch.setattr(os, "open", spy(os.open, "os.open"))
    monkeypatch.setattr(os, "listdir", spy(os.listdir, "listdir"))
    monkeypatch.setattr(os, "scandir", spy(os.scandir, "scandir"))
    monkeypatch.setattr(Image, "open", spy(Image.open, "Image.open"))
    rc, _, err = run_cli(distill_args({**tiny, "teacher": teacher}, tmp_path / "run", 2, "--set",
                                      "data.dataset=imagefolder", "--set", f"data.root={root}"), capsys)
    monkeypatch.undo()
    assert rc == 0, err
    train = str((root / "train").resolve())
    assert any(p.startswith(str((root / "test").resolve())) for p in touched), "the test split was not read"
    assert not [p for p in touched if p == train or p.startswith(train + os.sep)]


def test_imagefolder_classes_come_from_the_test_split(tmp_path):
    from fastad.data import dataset_info, load_dataset

    root = _image_folder(tmp_path / "f")
    assert dataset_info("imagefolder", root=root).class_names == ("a", "b", "c")
    (root / "train" / "d").mkdir()
    Image.new("L", (8, 8)).save(root / "train" / "d" / "0.png")
    with pytest.raises(UserError, match=r"class folder .*train/d is not among the test/ classes \['a', 'b', 'c'\]"):
        load_dataset("imagefolder", "train", root=root)
    (root / "test" / "d").mkdir()  # an empty test folder keeps the class's id
    ds = load_dataset("imagefolder", "train", root=root)
    assert ds.info.class_names == ("a", "b", "c", "d") and ds.labels.tolist()[-1] == 3
