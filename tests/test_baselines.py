"""Baselines for the benchmark: DeepInversion synthesis from noise, and KD on real data (the reference)."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from fastad.baselines import DeepInversionSynthesizer, train_student_on_real
from fastad.data import load_dataset, to_float
from fastad.errors import UserError
from fastad.models import create_model
from fastad.train.evaluate import normalizer

MEAN, STD = [0.2860], [0.3530]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Synthetic Fashion-MNIST-format data and a resnet8 teacher briefly fit on it (non-trivial BN statistics)."""
    from conftest import make_fmnist_like

    root = make_fmnist_like(tmp_path_factory.mktemp("data") / "fmnist", n_train=200, n_test=100)
    train, test = load_dataset("fashion_mnist", "train", root=root), load_dataset("fashion_mnist", "test", root=root)
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=10, in_channels=1)
    opt = torch.optim.SGD(teacher.parameters(), lr=0.05, momentum=0.9)
    norm, g = normalizer(MEAN, STD), torch.Generator().manual_seed(0)
    for _ in range(40):
        idx = torch.randperm(len(train), generator=g)[:32]
        x = norm(to_float(train.images[idx]))  # no crop: a 2-row shift turns one class bar into another
        loss = F.cross_entropy(teacher(x), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    teacher.zero_grad(set_to_none=True)
    teacher.eval().requires_grad_(False)
    return {"teacher": teacher, "train": train, "test": test}


def test_teacher_fixture_is_useful(setup):
    from fastad.train.evaluate import accuracy_report, predict

    logits, labels = predict(setup["teacher"], setup["test"], mean=MEAN, std=STD)
    assert accuracy_report(logits, labels, num_classes=10)["top1"] > 80


def _di(teacher, **kw):
    # No crop by default: on this synthetic data a row shift turns one class bar into another.
    args = dict(mean=MEAN, std=STD, image_shape=(1, 28, 28), iterations=15, lr=0.25, bn_weight=0.1)
    return DeepInversionSynthesizer(teacher, **{**args, **kw})


def _hooks(teacher) -> int:
    return len(teacher._forward_pre_hooks) + len(teacher._forward_hooks) + sum(
        len(m._forward_pre_hooks) + len(m._forward_hooks) for m in teacher.modules())


def test_deepinversion_lowers_ce_and_keeps_teacher_clean(setup):
    teacher = setup["teacher"]
    # Give the parameters requires_grad back: even then no .grad may land on them.
    teacher.requires_grad_(True)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    try:
        synth = _di(teacher)
        labels = torch.arange(8) % 10
        images = synth(labels, generator=torch.Generator().manual_seed(1))
    finally:
        teacher.requires_grad_(False)
    assert images.shape == (8, 1, 28, 28) and images.dtype == torch.float32 and not images.requires_grad
    assert images.min() >= -1 and images.max() <= 1
    assert all(p.grad is None for p in teacher.parameters())
    assert _hooks(teacher) == 0 and not teacher.training
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN running stats untouched
    # An independent measurement: CE of the teacher on the starting noise (same generator) vs the result.
    noise = torch.randn((8, 1, 28, 28), generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    norm = normalizer(MEAN, STD)
    with torch.no_grad():
        ce0 = F.cross_entropy(teacher(norm((noise + 1) / 2)), labels).item()
        ce1 = F.cross_entropy(teacher(norm((images + 1) / 2)), labels).item()
    assert ce1 < 0.5 * ce0
    s = synth.stats.summary()
    assert s["batches"] == 1 and s["iterations"] == 15
    assert s["ce_initial"] == pytest.approx(ce0, rel=1e-4) and s["ce_final"] == pytest.approx(ce1, rel=1e-4)
    assert s["l_bn_final"] < s["l_bn_initial"] and 0 <= s["teacher_acc"] <= 100
    synth.stats.reset()
    assert synth.stats.summary() == {"batches": 0}


def test_deepinversion_deterministic_and_bn_only(setup):
    teacher = setup["teacher"]
    synth = _di(teacher, iterations=4, crop_padding=1, flip=True, tv_l2=0.1, l2=0.01)
    labels = torch.tensor([3, 1, 4, 1])
    a = synth(labels, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():  # a caller's no_grad does not stop the optimisation
        b = synth(labels, generator=torch.Generator().manual_seed(7))
    c = synth(labels, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert synth.stats.summary()["batches"] == 3
    assert _hooks(teacher) == 0
    # CE off: the BN statistic alone still decreases (it is the same L_BN as fastad's guidance).
    bn_only = _di(teacher, iterations=10, bn_weight=1.0, ce_weight=0.0)
    bn_only(labels, generator=torch.Generator().manual_seed(7))
    s = bn_only.stats.summary()
    assert s["l_bn_final"] < s["l_bn_initial"]


def test_deepinversion_starts_from_the_generators_noise(setup):
    """0 iterations returns the clamped N(0, 1) start drawn from the call's generator, and records its statistics."""
    teacher, labels = setup["teacher"], torch.tensor([3, 1, 4, 1])
    synth = _di(teacher, iterations=0)
    out = synth(labels, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, torch.randn((4, 1, 28, 28), generator=torch.Generator().manual_seed(0)).clamp(-1, 1))
    s = synth.stats.summary()
    assert s["iterations"] == 0 and s["ce_final"] == pytest.approx(s["ce_initial"])
    assert s["l_bn_final"] == pytest.approx(s["l_bn_initial"])


def test_deepinversion_config_section():
    """The ``deepinversion`` section: defaults, and a bad value is a one-line error naming the key."""
    from fastad.baselines import DeepInversionConfig

    c = DeepInversionConfig()
    assert (c.iterations, c.lr, c.tv_l2, c.l2) == (200, 0.05, 0.0, 0.0)
    for kw, key in (({"iterations": -1}, "deepinversion.iterations"), ({"lr": 0}, "deepinversion.lr"),
                    ({"tv_l2": -1.0}, "deepinversion.tv_l2")):
        with pytest.raises(UserError, match=key):
            DeepInversionConfig(**kw)


@pytest.mark.parametrize("kw", [
    {"iterations": -1}, {"iterations": 1.5}, {"lr": 0.0}, {"bn_weight": -1.0}, {"ce_weight": float("nan")},
    {"tv_l2": -0.1}, {"crop_padding": -2}, {"flip": "yes"}, {"image_shape": (1, 28)}, {"image_shape": (3, 28, 28)},
    {"std": [0.0]},
])
def test_deepinversion_bad_arguments(setup, kw):
    with pytest.raises(UserError):
        _di(setup["teacher"], **kw)


def test_deepinversion_bad_calls(setup):
    teacher = setup["teacher"]
    synth = _di(teacher, iterations=1)
    g = torch.Generator().manual_seed(0)
    for labels in (torch.tensor([0.5, 1.0]), torch.zeros(2, 2, dtype=torch.long), torch.tensor([0, 10])):
        with pytest.raises(UserError):
            synth(labels, generator=g)
    assert _hooks(teacher) == 0  # removed on the error path too
    teacher.train()
    try:
        with pytest.raises(UserError, match="training mode"):
            synth(torch.tensor([0, 1]), generator=g)
    finally:
        teacher.eval()


def _real_kd(setup, student, **kw):
    args = dict(mean=MEAN, std=STD, steps=60, batch_size=16, lr=0.1, device="cpu", crop_padding=0,
                generator=torch.Generator().manual_seed(0))
    return train_student_on_real(setup["teacher"], student, setup["train"], setup["test"], **{**args, **kw})


def test_real_kd_improves_student(setup):
    torch.manual_seed(1)
    student = create_model("resnet8", num_classes=10, in_channels=1)
    from fastad.train.evaluate import accuracy_report, predict

    logits, labels = predict(student, setup["test"], mean=MEAN, std=STD)
    initial = accuracy_report(logits, labels, num_classes=10)["top1"]
    res = _real_kd(setup, student, eval_every=20)
    assert res["steps_done"] == 60 and not res["stopped_early"] and res["images_seen"] == 960
    assert res["student_top1"] > initial + 20, (initial, res["student_top1"])
    assert 0 <= res["student_top5"] <= 100 and res["student_top5"] >= res["student_top1"]
    assert [h["step"] for h in res["history"]] == [20, 40, 60]
    assert res["wall_seconds"] >= res["train_seconds"] > 0


def test_real_kd_respects_max_seconds(setup):
    student = create_model("resnet8", num_classes=10, in_channels=1)
    t0 = time.perf_counter()
    res = _real_kd(setup, student, steps=10_000, max_seconds=0.3)
    assert res["stopped_early"] and 1 <= res["steps_done"] < 10_000
    # The budget is checked before each step, so at most one step (well under 5 s, even on shared cores) overruns it.
    assert res["train_seconds"] < 0.3 + 5 and time.perf_counter() - t0 < 20


@pytest.mark.parametrize("kw", [
    {"steps": 0}, {"steps": 2.0}, {"batch_size": 0}, {"batch_size": 201}, {"lr": -1.0}, {"momentum": 1.0},
    {"kd_temperature": 0},
    {"schedule": "linear"}, {"eval_every": 0}, {"max_seconds": 0}, {"crop_padding": -1},
    {"mean": [0.1, 0.2]}, {"flip": 1},
])
def test_real_kd_bad_arguments(setup, kw):
    with pytest.raises(UserError):
        _real_kd(setup, create_model("resnet8", num_classes=10, in_channels=1), **kw)


def test_real_kd_needs_eval_teacher(setup):
    setup["teacher"].train()
    try:
        with pytest.raises(UserError, match="training mode"):
            _real_kd(setup, create_model("resnet8", num_classes=10, in_channels=1))
    finally:
        setup["teacher"].eval()
