"""Bad input, command by command: every refusal is one line on stderr naming the key or file, the value and
what is allowed, exit code 2, no traceback, and nothing written (no run folder, no changed file).

``CASES`` is the matrix; ``test_case_count`` keeps it at 40 or more distinct inputs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from fastad.cli.main import main
from fastad.config import load_config, save_config
from fastad.diffusion import build_unet, save_prior
from fastad.models import create_model, save_classifier

ROOT = os.geteuid() == 0  # root reads a chmod-000 file and writes into a read-only folder
CUDA = torch.cuda.is_available()
LONG = "x" * 100_000
MEAN, STD = [0.2860], [0.3530]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """Tiny models, broken copies of them, config files and run folders, all under one folder."""
    from conftest import make_fmnist_like

    a = tmp_path_factory.mktemp("assets")
    make_fmnist_like(a / "fmnist", n_train=40, n_test=20)
    torch.manual_seed(0)
    meta = {"arch": "resnet8", "num_classes": 10, "in_channels": 1, "input_size": [28, 28],
            "dataset": "fashion_mnist", "mean": MEAN, "std": STD}
    save_classifier(a / "teacher.safetensors", create_model("resnet8", num_classes=10, in_channels=1), meta)
    save_classifier(a / "teacher5.safetensors", create_model("resnet8", num_classes=5, in_channels=1),
                    {**meta, "num_classes": 5})
    save_classifier(a / "teacher_rgb.safetensors", create_model("resnet8", num_classes=10, in_channels=3),
                    {**meta, "in_channels": 3, "input_size": [32, 32], "mean": MEAN * 3, "std": STD * 3})
    save_prior(a / "prior", build_unet(sample_size=28, in_channels=1, block_out_channels=(8, 16, 16)),
               num_train_timesteps=100)
    save_prior(a / "prior_rgb32", build_unet(sample_size=32, in_channels=3, block_out_channels=(8, 16, 16)),
               num_train_timesteps=100)
    # Broken priors.
    for name in ("prior_nosched", "prior_badcfg", "prior_noweights", "prior_cutweights"):
        shutil.copytree(a / "prior", a / name)
    shutil.rmtree(a / "prior_nosched" / "scheduler")
    (a / "prior_badcfg" / "unet" / "config.json").write_text('{"_class_name": "UNet2DModel", "sample_')
    (a / "prior_noweights" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    w = a / "prior_cutweights" / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    # Broken checkpoints.
    (a / "empty.safetensors").write_bytes(b"")
    full = (a / "teacher.safetensors").read_bytes()
    (a / "cut.safetensors").write_bytes(full[: len(full) // 2])
    (a / "corrupt.pt").write_bytes(os.urandom(3000))
    (a / "dir.safetensors").mkdir()
    # Config files.
    cfg = load_config(None, [
        f"data.dataset=fashion_mnist", f"data.root={a / 'fmnist'}", "run.threads=1",
        f"distillation.teacher_checkpoint={a / 'teacher.safetensors'}",
        f"distillation.diffusion_checkpoint={a / 'prior'}", "distillation.student_arch=resnet8",
        "distillation.epochs=1", "distillation.synthesis_batch_size=4", "distillation.train_batch_size=4",
        "distillation.train_iterations=1", "distillation.buffer_size=8", "distillation.holdout_images=0",
        "distillation.eval_every=1", "fast_ad.ddim_steps=2", "fast_ad.T=100", "fast_ad.guidance=none",
        "logging.progress=false", "logging.tensorboard=false", "teacher_training.arch=resnet8",
        "teacher_training.epochs=1", "teacher_training.batch_size=32", "diffusion.block_out_channels=[8, 16, 16]",
        "diffusion.steps=2", "diffusion.batch_size=8", "diffusion.num_train_timesteps=100",
        "diffusion.sample_steps=2", "diffusion.sample_every=0", "data.eval_batch_size=20"])
    save_config(cfg, a / "tiny.yaml")
    (a / "empty.yaml").write_text("")
    (a / "comments.yaml").write_text("# nothing but a comment\n")
    (a / "latin1.yaml").write_bytes("run:\n  out: caf\xe9\n".encode("latin-1"))
    (a / "malformed.yaml").write_text("distillation:\n  lr: [0.1\n  epochs: 3\n")
    (a / "tag.yaml").write_text("run: !!python/object/apply:os.system ['echo hi']\n")
    (a / "dup.yaml").write_text("distillation:\n  lr: 0.1\n  lr: 0.2\n")
    (a / "list.yaml").write_text("- distillation\n- fast_ad\n")
    (a / "nan.yaml").write_text("distillation:\n  lr: .nan\n")
    (a / "inf.yaml").write_text("fast_ad:\n  lambda_max: .inf\n")
    (a / "typo.yaml").write_text("teacher_training:\n  epoch: 3\n")
    (a / "conf.d").mkdir()
    (a / "unreadable.yaml").write_text("run: {seed: 1}\n")
    (a / "unreadable.yaml").chmod(0)
    # Run folders.
    (a / "not_a_run").mkdir()
    (a / "not_a_run" / "notes.txt").write_text("mine\n")
    held = a / "held_run"  # a finished train-teacher run
    held.mkdir()
    save_config(cfg, held / "config.yaml", command="train-teacher")
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "epoch": 1}, held / "last.pt")
    (held / "summary.json").write_text("{}\n")
    for command, name in (("train-teacher", "cut_teacher"), ("distill", "cut_distill"),
                          ("train-diffusion", "cut_diffusion")):
        run = a / name
        run.mkdir()
        save_config(cfg, run / "config.yaml", command=command)
        (run / "last.pt").write_bytes((held / "last.pt").read_bytes()[:100])
    early = a / "early_run"  # a distill run from before run folders recorded their command
    early.mkdir()
    save_config(cfg, early / "config.yaml")
    (early / "grids").mkdir()
    torch.save({"student": {}, "optimizer": {}, "buffer": {}, "progress": {"round": 1}}, early / "last.pt")
    (a / "a_file").write_text("not a folder\n")
    (a / "read_only").mkdir()
    (a / "read_only").chmod(0o555)
    return a


@dataclass
class Case:
    name: str
    argv: Callable[[Path], list]  # assets -> arguments
    needles: tuple[str, ...]  # each must be in the one stderr line
    skip: str | None = None


def C(name, argv, *needles, skip=None):
    return Case(name, argv, needles, skip)


TINY = ("--config", "{a}/tiny.yaml")


def _args(*parts):
    return lambda a: [str(p).replace("{a}", str(a)) for p in parts]


CASES: list[Case] = [
    # Config files.
    C("config-missing", _args("train-teacher", "--config", "{a}/nope.yaml", "--out", "out"),
      "config file", "nope.yaml", "not found"),
    C("config-empty", _args("distill", "--config", "{a}/empty.yaml", "--out", "out"), "empty.yaml", "is empty"),
    C("config-only-comments", _args("config", "--config", "{a}/comments.yaml"), "comments.yaml", "is empty"),
    C("config-unreadable", _args("config", "--config", "{a}/unreadable.yaml"), "unreadable.yaml",
      "permission denied"),
    C("config-not-utf8", _args("train-diffusion", "--config", "{a}/latin1.yaml", "--out", "out"), "latin1.yaml",
      "not UTF-8", "0xe9"),
    C("config-malformed", _args("config", "--config", "{a}/malformed.yaml"), "malformed.yaml",
      "not valid YAML at line"),
    C("config-directory", _args("bench", "--config", "{a}/conf.d", "--out", "out"), "conf.d", "is a directory"),
    C("config-python-tag", _args("distill", "--config", "{a}/tag.yaml", "--out", "out"), "tag.yaml",
      "'!!python/object/apply:os.system'", "not allowed"),
    C("config-duplicate-key", _args("config", "--config", "{a}/dup.yaml"), "dup.yaml", "'lr' appears twice",
      "line 3"),
    C("config-list", _args("train-teacher", "--config", "{a}/list.yaml", "--out", "out"), "list.yaml",
      "expected a mapping of sections"),
    C("set-python-tag", _args("config", "--set", "run.seed=!!python/name:os.system"), "run.seed", "not allowed"),
    C("set-no-equals", _args("train-teacher", "--set", "teacher_training.lr", "--out", "out"),
      "teacher_training.lr", "expected section.key=value"),
    # Unknown names, with the nearest valid one.
    C("key-typo", _args("distill", *TINY, "--set", "distillation.lrr=0.1", "--out", "out"),
      "'distillation.lrr'", "did you mean 'distillation.lr'?"),
    C("section-typo", _args("config", "--set", "distilation.lr=0.1"), "'distilation'",
      "did you mean 'distillation'?"),
    C("key-in-other-section", _args("distill", *TINY, "--set", "fast_ad.clip_x0=true", "--out", "out"),
      "'fast_ad.clip_x0'", "did you mean 'sampler.clip_x0'?"),
    C("key-typo-in-file", _args("train-teacher", "--config", "{a}/typo.yaml", "--out", "out"),
      "'teacher_training.epoch'", "did you mean 'teacher_training.epochs'?"),
    C("dataset-typo", _args("train-teacher", "--set", "data.dataset=fashion_mnst", "--out", "out"),
      "data.dataset", "'fashion_mnst'", "did you mean 'fashion_mnist'?"),
    C("arch-typo", _args("distill", *TINY, "--set", "distillation.student_arch=resnet9", "--out", "out"),
      "distillation.student_arch", "'resnet9'", "did you mean"),
    C("recipe-typo", _args("distill", *TINY, "--recipe", "nonee", "--out", "out"), "--recipe", "'nonee'",
      "did you mean 'none'?"),
    C("bench-method-typo", _args("bench", *TINY, "--methods", "nonee", "--out", "out"), "--methods", "'nonee'",
      "did you mean 'none'?"),
    C("command-typo", _args("distil", "--out", "out"), "'distil'", "did you mean 'distill'?"),
    C("guidance-choice", _args("distill", *TINY, "--guidance", "cadrr", "--out", "out"), "--guidance", "'cadrr'",
      "did you mean 'cadr'?"),
    C("device-nonsense", _args("sample", "--prior", "{a}/prior", "--device", "gpu0", "--out", "out/s.png"),
      "--device", "'gpu0'", "expected auto, cpu, cuda"),
    C("epochs-not-int", _args("train-teacher", "--epochs", "ten", "--out", "out"), "--epochs", "'ten'"),
    # Wrong types, non-finite numbers, out-of-range values.
    C("wrong-type", _args("train-teacher", "--set", "teacher_training.lr=fast", "--out", "out"),
      "'teacher_training.lr'", "'fast'", "expected a float > 0"),
    C("list-for-int", _args("train-diffusion", "--set", "diffusion.steps=[1]", "--out", "out"),
      "'diffusion.steps'", "[1]", "expected an integer >= 1"),
    C("yaml-nan", _args("distill", "--config", "{a}/nan.yaml", "--out", "out"), "'distillation.lr'", "nan",
      "not a finite number"),
    C("yaml-inf", _args("config", "--config", "{a}/inf.yaml"), "'fast_ad.lambda_max'", "inf", "not a finite number"),
    C("set-nan", _args("distill", *TINY, "--set", "distillation.kd_temperature=nan", "--out", "out"),
      "'distillation.kd_temperature'", "'nan'", "not a finite number"),
    C("out-of-range", _args("distill", *TINY, "--set", "routing.guided_fraction=1.5", "--out", "out"),
      "'routing.guided_fraction'", "1.5", "<= 1"),
    C("negative-seed", _args("train-teacher", "--seed", "-1", "--out", "out"), "'run.seed'", "-1", ">= 0"),
    C("long-arch", _args("train-teacher", "--arch", LONG, "--out", "out"), "teacher_training.arch",
      "100,000 characters"),
    C("long-value", _args("distill", *TINY, "--set", f"distillation.lr={LONG}", "--out", "out"),
      "'distillation.lr'", "100,000 characters"),
    C("long-key", _args("config", "--set", f"{LONG}.x=1"), "unknown config section", "characters"),
    C("long-recipe", _args("distill", *TINY, "--recipe", LONG, "--out", "out"), "--recipe", "100,000 characters"),
    C("empty-unet-levels", _args("train-diffusion", *TINY, "--set", "diffusion.block_out_channels=[]", "--out",
                                 "out"), "'diffusion.block_out_channels'", "[]", "non-empty"),
    C("too-many-unet-levels", _args("train-diffusion", *TINY, "--set", "diffusion.block_out_channels=[8,8,8,8,8]",
                                    "--out", "out"), "'diffusion.block_out_channels'", "28", "at most 3 levels"),
    C("empty-classes", _args("train-teacher", *TINY, "--set", "data.classes=[]", "--out", "out"), "'data.classes'",
      "[]", "non-empty"),
    C("milestones-decreasing", _args("train-teacher", *TINY, "--set", "teacher_training.milestones=[9, 6]",
                                     "--out", "out"), "'teacher_training.milestones'", "[9, 6]", "increasing"),
    C("ddim-steps-beyond-T", _args("distill", *TINY, "--set", "fast_ad.ddim_steps=500", "--out", "out"),
      "'fast_ad.ddim_steps'", "500", "fast_ad.T (100)"),
    C("sample-steps-beyond-T", _args("train-diffusion", *TINY, "--set", "diffusion.sample_steps=500", "--out",
                                     "out"), "'diffusion.sample_steps'", "500", "<= diffusion.num_train_timesteps"),
    C("mean-std-channels", _args("distill", *TINY, "--set", "distillation.mean=[0.5]", "--set",
                                 "distillation.std=[0.5, 0.5]", "--out", "out"), "'distillation.std'", "[0.5, 0.5]"),
    C("data-root-missing", _args("train-teacher", *TINY, "--set", "data.root=/nonexistent/fmnist", "--out", "out"),
      "/nonexistent/fmnist"),
    # Devices.
    *[C(f"cuda-{cmd}", _args(cmd, *extra, "--device", "cuda"), "'run.device'" if cmd not in ("sample", "evaluate")
        else "--device: got 'cuda'", "CUDA is not available", skip="CUDA is available here" if CUDA else None)
      for cmd, extra in (("train-teacher", ("--out", "out")), ("train-diffusion", (*TINY, "--out", "out")),
                         ("distill", (*TINY, "--out", "out")),
                         ("evaluate", ("--checkpoint", "{a}/teacher.safetensors", "--root", "{a}/fmnist")),
                         ("sample", ("--prior", "{a}/prior", "--out", "out/s.png")))],
    C("cuda-bench", _args("bench", *TINY, "--set", "run.device=cuda", "--quick", "--out", "out"), "'run.device'",
      "CUDA is not available", skip="CUDA is available here" if CUDA else None),
    # Models that do not fit the data or each other.
    C("distill-teacher-classes", _args("distill", *TINY, "--teacher", "{a}/teacher5.safetensors", "--out", "out"),
      "teacher5.safetensors", "5"),
    C("distill-teacher-input", _args("distill", *TINY, "--teacher", "{a}/teacher_rgb.safetensors", "--out", "out"),
      "teacher_rgb.safetensors"),
    C("distill-prior-shape", _args("distill", *TINY, "--prior", "{a}/prior_rgb32", "--out", "out"), "prior_rgb32"),
    C("distill-solver-eta", _args("distill", *TINY, "--set", "sampler.solver=dpmpp-2m", "--set", "sampler.ddim_eta=1",
                                  "--out", "out"), "'sampler.ddim_eta'", "dpmpp-2m"),
    C("distill-solver-x0-rule", _args("distill", *TINY, "--recipe", "x0-routed-smooth", "--set",
                                      "sampler.solver=dpmpp-2m", "--out", "out"), "'sampler.solver'", "x0"),
    C("distill-autocast-value", _args("distill", *TINY, "--set", "distillation.autocast=fp8", "--out", "out"),
      "'distillation.autocast'", "fp8", "bf16"),
    C("evaluate-checkpoint-classes", _args("evaluate", "--checkpoint", "{a}/teacher5.safetensors", "--root",
                                           "{a}/fmnist"), "teacher5.safetensors", "5 classes", "has 10"),
    C("evaluate-teacher-channels", _args("evaluate", "--checkpoint", "{a}/teacher.safetensors", "--root", "{a}/fmnist",
                                         "--teacher", "{a}/teacher_rgb.safetensors"), "--teacher",
      "teacher_rgb.safetensors", "3 input channels"),
    C("sample-teacher-channels", _args("sample", "--prior", "{a}/prior", "--teacher", "{a}/teacher_rgb.safetensors",
                                       "--out", "out/s.png", "--device", "cpu"), "teacher_rgb.safetensors", "channels"),
    # Broken checkpoints.
    *[C(f"{cmd}-checkpoint-{kind}", _args(*argv(f"{{a}}/{file}")), file)
      for kind, file in (("empty", "empty.safetensors"), ("truncated", "cut.safetensors"), ("corrupt", "corrupt.pt"),
                         ("directory", "dir.safetensors"), ("missing", "gone.safetensors"))
      for cmd, argv in (("distill", lambda f: ("distill", *TINY, "--teacher", f, "--out", "out")),
                        ("evaluate", lambda f: ("evaluate", "--checkpoint", f, "--root", "{a}/fmnist")),
                        ("sample", lambda f: ("sample", "--prior", "{a}/prior", "--teacher", f, "--out", "out/s.png",
                                              "--device", "cpu")))],
    C("evaluate-teacher-truncated", _args("evaluate", "--checkpoint", "{a}/teacher.safetensors", "--root",
                                          "{a}/fmnist", "--teacher", "{a}/cut.safetensors"), "cut.safetensors"),
    # Broken priors.
    *[C(f"{cmd}-prior-{kind}", _args(*argv(f"{{a}}/{folder}")), folder, *needles)
      for kind, folder, needles in (("no-scheduler", "prior_nosched", ("scheduler",)),
                                    ("corrupt-config", "prior_badcfg", ("config.json",)),
                                    ("no-weights", "prior_noweights", ("diffusion_pytorch_model",)),
                                    ("truncated-weights", "prior_cutweights", ()),
                                    ("a-file", "a_file", ()))
      for cmd, argv in (("distill", lambda p: ("distill", *TINY, "--prior", p, "--out", "out")),
                        ("sample", lambda p: ("sample", "--prior", p, "--out", "out/s.png", "--device", "cpu")))],
    C("bench-ood-prior", _args("bench", *TINY, "--ood-prior", "{a}/prior_nosched", "--quick", "--methods", "none",
                               "--out", "out"), "out-of-domain", "prior_nosched", "scheduler"),
    # Output folders and files.
    *[C(f"{cmd}-out-holds-run", _args(cmd, *TINY, "--out", "{a}/held_run"), "held_run",
        "already holds a train-teacher run", "--overwrite")
      for cmd in ("train-teacher", "train-diffusion", "distill")],
    C("out-is-a-file", _args("train-teacher", *TINY, "--out", "{a}/a_file"), "a_file", "not a folder"),
    C("bench-out-is-a-run", _args("bench", *TINY, "--quick", "--methods", "none", "--out", "{a}/held_run"),
      "held_run", "not a bench"),
    C("sample-out-not-png", _args("sample", "--prior", "{a}/prior", "--out", "out/s.jpg"), "s.jpg", ".png"),
    C("sample-out-under-a-file", _args("sample", "--prior", "{a}/prior", "--out", "{a}/a_file/s.png", "--device",
                                       "cpu"), "a_file", "not a folder"),
    C("evaluate-json-directory", _args("evaluate", "--checkpoint", "{a}/teacher.safetensors", "--root", "{a}/fmnist",
                                       "--json", "{a}/conf.d"), "--json", "conf.d", "is a directory"),
    C("evaluate-confusion-not-png", _args("evaluate", "--checkpoint", "{a}/teacher.safetensors", "--root",
                                          "{a}/fmnist", "--confusion", "c.txt"), "--confusion", "c.txt", ".png"),
    C("out-not-writable", _args("train-teacher", *TINY, "--out", "/proc/fastad-out"), "/proc/fastad-out"),
    C("out-in-read-only-folder", _args("train-teacher", *TINY, "--out", "{a}/read_only/run"), "read_only",
      "not writable"),
    # Resume.
    C("resume-missing", _args("train-teacher", "--resume", "{a}/nowhere"), "nowhere", "no such folder"),
    C("resume-not-a-run", _args("train-diffusion", "--resume", "{a}/not_a_run"), "not_a_run", "no config.yaml"),
    C("resume-a-file", _args("distill", "--resume", "{a}/a_file"), "a_file", "not a folder"),
    C("resume-other-command", _args("train-teacher", "--resume", "{a}/cut_distill"), "cut_distill",
      "is a distill run", "fastad distill --resume"),
    C("resume-other-command-unrecorded", _args("train-diffusion", "--resume", "{a}/early_run"), "early_run",
      "is a distill run"),
    *[C(f"resume-cut-{cmd}", _args(cmd, "--resume", f"{{a}}/cut_{name}", flag, "50"), f"cut_{name}", "last.pt")
      for cmd, name, flag in (("train-teacher", "teacher", "--epochs"), ("distill", "distill", "--epochs"),
                              ("train-diffusion", "diffusion", "--steps"))],
    C("resume-fewer-epochs", _args("distill", "--resume", "{a}/early_run", "--epochs", "0"), "--epochs", "0",
      ">= 1"),
    C("resume-with-overwrite", _args("train-teacher", "--resume", "{a}/held_run", "--overwrite"), "--overwrite"),
    C("resume-with-recipe", _args("distill", "--resume", "{a}/early_run", "--recipe", "cadr"), "--recipe"),
]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with its content hash (folders: '<dir>')."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_dir():
            out[rel] = "<dir>"
        else:
            try:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            except PermissionError:
                out[rel] = "<unreadable>"
    return out


def _deny_as_for_a_user(monkeypatch, assets: Path) -> None:
    """What the operating system tells a user without permission, for the two modes set in ``assets``."""
    read_bytes, access = Path.read_bytes, os.access

    def denied_read(self):
        if self.name == "unreadable.yaml":
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    def denied_access(path, mode, *a, **k):
        if "read_only" in Path(path).parts and mode & os.W_OK:
            return False
        return access(path, mode, *a, **k)

    monkeypatch.setattr(Path, "read_bytes", denied_read)
    monkeypatch.setattr(os, "access", denied_access)


def test_case_count():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "case names must be distinct"
    print(f"{len(CASES)} bad-input cases")
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, assets, tmp_path, monkeypatch, capsys):
    if case.skip:
        pytest.skip(case.skip)
    if ROOT:  # root reads a chmod-000 file and writes into a read-only folder: the system answers as for a user
        _deny_as_for_a_user(monkeypatch, assets)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a default runs/<command>-<time> folder would appear here
    before = snapshot(assets)
    rc = main(case.argv(assets))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and "usage:" not in err, err
    assert len(lines[0]) < 1200, lines[0][:300]
    for needle in case.needles:
        assert needle in lines[0], (needle, lines[0])
    assert list(work.iterdir()) == [], "something was written in the working folder"
    assert snapshot(assets) == before, "an existing file or folder changed"


def test_evaluate_checks_the_teacher_before_any_prediction(assets, monkeypatch, capsys):
    """A mismatched --teacher is refused before the checkpoint's predictions (tens of seconds on a real split)."""
    import fastad.train.evaluate as ev

    calls = []
    monkeypatch.setattr(ev, "predict", lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    rc = main(["evaluate", "--checkpoint", str(assets / "teacher.safetensors"), "--root", str(assets / "fmnist"),
               "--teacher", str(assets / "teacher5.safetensors")])
    assert rc == 2 and calls == [] and "teacher5.safetensors" in capsys.readouterr().err


def test_overwrite_replaces_a_run(assets, tmp_path, capsys):
    """--overwrite replaces the run in --out (the refusal without it is in the matrix)."""
    out = tmp_path / "run"
    shutil.copytree(assets / "held_run", out)
    (out / "stale.txt").write_text("from the old run\n")
    rc = main(["train-teacher", "--config", str(assets / "tiny.yaml"), "--out", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert not (out / "stale.txt").exists() and (out / "teacher.safetensors").is_file()
    assert (out / "config.yaml").read_text().startswith("# fastad train-teacher run\n")


def test_refused_resume_keeps_the_config(assets, tmp_path, capsys):
    """A resume extended with --epochs but refused later (its teacher file is gone) leaves config.yaml as it was."""
    teacher = tmp_path / "teacher.safetensors"
    shutil.copy(assets / "teacher.safetensors", teacher)
    out = tmp_path / "run"
    rc = main(["distill", "--config", str(assets / "tiny.yaml"), "--teacher", str(teacher), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    before = snapshot(out)
    teacher.unlink()
    rc = main(["distill", "--resume", str(out), "--epochs", "3"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "teacher.safetensors" in lines[0], lines
    assert snapshot(out) == before
