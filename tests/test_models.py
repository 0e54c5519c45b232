"""Classifier zoo: layouts vs the public checkpoints, golden logits, any input size, checkpoints."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fastad.errors import UserError
from fastad.models import (
    create_model,
    list_models,
    load_classifier,
    load_weights,
    read_classifier_meta,
    save_classifier,
)

from conftest import FIXTURES

ZOO = FIXTURES / "model_zoo"

ZOO_ARCHS = [
    "resnet18", "resnet34", "resnet50", "wrn16_1", "wrn16_2", "wrn40_1", "wrn40_2",
    "resnet8", "resnet20", "resnet32", "resnet56", "resnet8x4", "resnet32x4", "vgg8", "vgg11", "vgg13",
]
GOLDEN_ARCHS = ["resnet8", "resnet20", "wrn16_1", "wrn40_1"]


@functools.lru_cache(maxsize=None)
def _zoo_spec() -> dict:
    return json.loads((ZOO / "state_dict_keys.json").read_text())["models"]


@functools.lru_cache(maxsize=2)  # cases run name-major: the 1- and 3-channel model of one arch
def _model(name: str, in_channels: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=7, in_channels=in_channels).eval()


def _user_error(fn, *args, **kwargs) -> str:
    """Run ``fn``, expect a UserError, check it is one line and return its message."""
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- layouts and numbers


@pytest.mark.parametrize("arch", ZOO_ARCHS)
def test_state_dict_matches_public_checkpoints(arch: str) -> None:
    spec = _zoo_spec()[arch]
    with torch.device("meta"):  # shapes only
        model = create_model(arch, num_classes=100)
        gray = create_model(arch, num_classes=100, in_channels=1)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == spec["keys"]
    assert sum(p.numel() for p in model.parameters()) == spec["params"]
    # in_channels only changes the stem's input channels.
    gray_shapes = {k: list(v.shape) for k, v in gray.state_dict().items()}
    assert gray_shapes.keys() == shapes.keys()
    differ = [k for k in shapes if shapes[k] != gray_shapes[k]]
    assert len(differ) == 1 and gray_shapes[differ[0]][1] == 1 and shapes[differ[0]][1] == 3


def _golden(arch: str) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    z = np.load(ZOO / f"golden_{arch}_c10.npz")
    sd = {k[len("state_dict/"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("state_dict/")}
    return sd, torch.from_numpy(z["input"]), torch.from_numpy(z["logits"])


@pytest.mark.parametrize("arch", GOLDEN_ARCHS)
def test_golden_logits(arch: str, tmp_path: Path) -> None:
    sd, x, logits = _golden(arch)
    path = tmp_path / f"{arch}.pt"
    torch.save({"state_dict": sd}, path)  # the public zoo's file format
    model, meta = load_classifier(path, arch=arch)
    assert meta["num_classes"] == 10 and meta["in_channels"] == 3 and not model.training
    with torch.no_grad():
        out = model(x)
    assert out.shape == logits.shape
    assert (out - logits).abs().max().item() < 1e-4


def test_registry_covers_the_zoo() -> None:
    assert set(ZOO_ARCHS) | {"resnet14", "resnet44", "resnet110", "vgg16", "vgg19"} <= set(list_models())


SHAPES = {"1x28": (1, 28, 28), "3x32": (3, 32, 32), "3x64": (3, 64, 64)}


@pytest.mark.parametrize(
    "name, shape", [pytest.param(n, s, id=f"{n}-{i}") for n in list_models() for i, s in SHAPES.items()]
)
def test_forward_any_input_size(name: str, shape: tuple[int, int, int]) -> None:
    model = _model(name, shape[0])
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
        feats = model.penultimate(x)
        via_head = model.head(feats)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    assert feats.shape == (2, model.feature_dim)
    assert torch.equal(logits, via_head)
    assert model.arch == name and model.num_classes == 7 and model.in_channels == shape[0]


# ---------------------------------------------------------------- registry errors


def test_unknown_model_lists_valid_names() -> None:
    msg = _user_error(create_model, "foo", num_classes=10)
    assert msg.startswith("unknown model 'foo'; valid models: resnet8, ")
    assert all(name in msg for name in list_models())


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"num_classes": 0}, "num_classes must be an integer >= 1, got 0"),
        ({"num_classes": 10, "in_channels": 0}, "in_channels must be an integer >= 1, got 0"),
        ({"num_classes": 2.5}, "num_classes must be an integer >= 1, got 2.5"),
        ({"num_classes": True}, "num_classes must be an integer >= 1, got True"),
    ],
)
def test_bad_counts(kwargs: dict, needle: str) -> None:
    assert needle in _user_error(create_model, "resnet8", **kwargs)


def test_list_models_natural_order() -> None:
    names = list_models()
    assert names.index("resnet8") < names.index("resnet18") < names.index("resnet110")
    assert len(set(names)) == len(names)


# ---------------------------------------------------------------- checkpoints


def _fresh(name: str = "resnet8", num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model(name, num_classes=num_classes)
    # Non-trivial BN statistics so that buffers matter for the logits.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(3)
    return model.eval()


X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("fmt", ["raw", "state_dict", "model", "ddp", "safetensors"])
def test_load_weights_round_trip(fmt: str, tmp_path: Path) -> None:
    src = _fresh(seed=0)
    sd = src.state_dict()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pt")
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        obj = {
            "raw": sd,
            "state_dict": {"state_dict": sd, "epoch": 200, "acc": 0.9},
            "model": {"model": sd, "optimizer": {"lr": 0.1}},
            "ddp": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        }[fmt]
        torch.save(obj, path)
    dst = _fresh(seed=1)
    load_weights(dst, path)
    for k, v in sd.items():
        assert torch.equal(dst.state_dict()[k], v), k
    with torch.no_grad():
        assert torch.equal(dst(X), src(X))


def test_save_and_load_classifier(tmp_path: Path) -> None:
    src = _fresh("wrn16_1", num_classes=10)
    meta = {
        "arch": "wrn16_1", "num_classes": 10, "in_channels": 3, "input_size": 32, "dataset": "cifar10",
        "class_names": [f"c{i}" for i in range(10)], "mean": [0.5] * 3, "std": [0.25] * 3, "test_top1": 0.9,
    }
    path = tmp_path / "sub" / "teacher.safetensors"
    save_classifier(path, src, meta)
    assert [p.name for p in path.parent.iterdir()] == ["teacher.safetensors"]  # no temp file left
    assert read_classifier_meta(path) == meta
    model, got = load_classifier(path)
    assert got == meta and not model.training and model.arch == "wrn16_1"
    assert model.block1.layer[0].bn1.num_batches_tracked.item() == 3
    with torch.no_grad():
        assert torch.equal(model(X), src(X))
    # Overrides win over the metadata (and then must fit the weights).
    msg = _user_error(load_classifier, path, num_classes=100)
    assert "shape mismatch fc.weight: checkpoint [10, 64] vs model [100, 64]" in msg


def test_torch_file_metadata_and_inference(tmp_path: Path) -> None:
    src = _fresh("resnet8", num_classes=10)
    zoo = tmp_path / "zoo.pth"
    torch.save({"state_dict": src.state_dict(), "epoch": 240}, zoo)
    assert read_classifier_meta(zoo) == {}
    msg = _user_error(load_classifier, zoo)
    assert "--arch" in msg and "resnet20" in msg
    model, meta = load_classifier(zoo, arch="resnet8")  # num_classes/in_channels read off the weights
    assert meta == {"arch": "resnet8", "num_classes": 10, "in_channels": 3}
    tagged = tmp_path / "tagged.pt"
    torch.save({"state_dict": src.state_dict(), "arch": "resnet8", "num_classes": 10}, tagged)
    assert read_classifier_meta(tagged) == {"arch": "resnet8", "num_classes": 10}
    model, meta = load_classifier(tagged)
    with torch.no_grad():
        assert torch.equal(model(X), src(X))
    gray = create_model("resnet8", num_classes=5, in_channels=1)
    gray_path = tmp_path / "gray.pt"
    torch.save(gray.state_dict(), gray_path)
    assert load_classifier(gray_path, arch="resnet8")[1]["in_channels"] == 1


def test_wrong_architecture_message(tmp_path: Path) -> None:
    path = tmp_path / "r20.pt"
    torch.save({"state_dict": create_model("resnet20", num_classes=100).state_dict()}, path)
    msg = _user_error(load_weights, create_model("resnet8", num_classes=100), path)
    assert msg.startswith(f"checkpoint '{path}' does not fit resnet8: unexpected keys [layer1.1.conv1.weight, ")
    assert "more)]" in msg and "missing keys" not in msg
    msg = _user_error(load_weights, create_model("resnet20", num_classes=10), path)
    assert msg.endswith("shape mismatch fc.weight: checkpoint [100, 64] vs model [10, 64], "
                        "fc.bias: checkpoint [100] vs model [10]")
    msg = _user_error(load_weights, create_model("wrn16_1", num_classes=100), path)
    assert "missing keys [block1.layer.0.bn1.weight, " in msg and "unexpected keys [" in msg


def test_bad_files(tmp_path: Path) -> None:
    model = create_model("resnet8", num_classes=10)
    missing = tmp_path / "nope.pt"
    assert _user_error(load_weights, model, missing) == f"checkpoint '{missing}' not found"
    assert "not found" in _user_error(load_classifier, missing, arch="resnet8")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint" * 10)
    assert f"cannot read checkpoint '{junk}'" in _user_error(load_weights, model, junk)
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(good))
    assert read_classifier_meta(good) == {}
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:1000])
    assert f"'{cut}'" in _user_error(load_weights, model, cut)
    trunc = tmp_path / "trunc.pt"
    torch.save(model.state_dict(), trunc)
    trunc.write_bytes(trunc.read_bytes()[:5000])
    assert f"cannot read checkpoint '{trunc}'" in _user_error(load_weights, model, trunc)
    assert "is not a file" in _user_error(load_weights, model, tmp_path)


def test_non_tensor_entries_refused(tmp_path: Path) -> None:
    model = create_model("resnet8", num_classes=10)
    path = tmp_path / "junk_entries.pt"
    torch.save({**model.state_dict(), "epoch": 3, "note": "hi"}, path)
    msg = _user_error(load_weights, model, path)
    assert "is not a state dict: entries [epoch, note] are not tensors (int, str)" in msg
    torch.save([1, 2, 3], path)
    assert "holds a list" in _user_error(load_weights, model, path)


_EXECUTED: list[str] = []


def _side_effect() -> str:
    _EXECUTED.append("ran")
    return "boom"


class _Payload:
    """Unpickling this would call _side_effect(): a stand-in for malicious code."""

    def __reduce__(self):
        return (_side_effect, ())


def test_pickled_objects_are_refused_not_executed(tmp_path: Path) -> None:
    model = create_model("resnet8", num_classes=10)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": model.state_dict(), "extra": _Payload()}, path)
    msg = _user_error(load_weights, model, path)
    assert "refusing to unpickle" in msg and str(path) in msg and "_side_effect" in msg
    assert "refusing" in _user_error(load_classifier, path, arch="resnet8")
    assert "refusing" in _user_error(read_classifier_meta, path)
    assert _EXECUTED == []


def test_save_classifier_checks_meta(tmp_path: Path) -> None:
    model = create_model("resnet8", num_classes=10)
    path = tmp_path / "m.safetensors"
    assert "lacks arch" in _user_error(save_classifier, path, model, {"num_classes": 10, "in_channels": 3})
    bad = {"arch": "resnet8", "num_classes": 100, "in_channels": 3}
    assert "num_classes=100 does not match the model's num_classes=10" in _user_error(save_classifier, path, model, bad)
    nonjson = {"arch": "resnet8", "num_classes": 10, "in_channels": 3, "x": object()}
    assert "not JSON-serialisable" in _user_error(save_classifier, path, model, nonjson)
    assert not path.exists() and list(tmp_path.iterdir()) == []
