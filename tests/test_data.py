"""Datasets: real file formats written to tmp_path, selection, errors, augmentation."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastad.data import (DATASETS, ImageDataset, augment, make_view, view_count, dataset_info, dataset_names,
                         iterate_batches, load_dataset, normalize, to_float)
from fastad.errors import UserError

FMNIST = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- writers of the real formats

def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    """IDX: magic 0,0,0x08,ndim; big-endian uint32 dims; ubyte data."""
    raw = bytes([0, 0, 8, arr.ndim]) + np.array(arr.shape, ">u4").tobytes() + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def marked_images(n: int, size: int = 28) -> np.ndarray:
    """uint8 [n, size, size]; image i is filled with i (so a result shows which rows were read)."""
    return np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, size, size)).copy()


def write_mnist(root: Path, n_train: int = 30, n_test: int = 10, gz: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", marked_images(n), gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)
    return root


def write_cifar10(root: Path, per_batch: int = 4) -> Path:
    """Official layout: cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}, protocol 2."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = [n.encode() for n in DATASETS["cifar10"].class_names]
    pickle.dump({b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072},
                open(d / "batches.meta", "wb"), protocol=2)
    for b, fname in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        idx = b * per_batch + np.arange(per_batch)  # global index as pixel marker
        data = np.repeat(idx.astype(np.uint8)[:, None], 3072, axis=1)
        data[:, 1024:2048] = 100  # G plane constant: checks the channel layout
        raw = pickle.dumps({b"batch_label": f"batch {b}".encode(), b"labels": list(idx % 10),
                            b"data": data, b"filenames": [b"x.png"] * per_batch}, protocol=2)
        # The official files were written by numpy 1.x: arrays rebuilt via numpy.core.
        (d / fname).write_bytes(raw.replace(b"numpy._core.", b"numpy.core."))
    return root


def write_cifar100(root: Path, n: int = 12) -> Path:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    names = [f"c{i}".encode() for i in range(100)]
    pickle.dump({b"fine_label_names": names, b"coarse_label_names": [b"x"] * 20},
                open(d / "meta", "wb"), protocol=4)
    for split in ("train", "test"):
        data = np.repeat(np.arange(n, dtype=np.uint8)[:, None], 3072, axis=1)
        pickle.dump({b"filenames": [b"x"] * n, b"batch_label": b"b", b"fine_labels": list(range(100 - n, 100)),
                     b"coarse_labels": [0] * n, b"data": data}, open(d / split, "wb"), protocol=5)
    return root


def write_folder(root: Path, mode: str = "RGB", size: tuple[int, int] = (6, 5)) -> Path:
    """root/{train,test}/{bird,cat}/k.png; pixel value = 10 * class + k."""
    for split, k_n in (("train", 3), ("test", 2)):
        for c, name in enumerate(["bird", "cat"]):
            (root / split / name).mkdir(parents=True)
            for k in range(k_n):
                Image.new(mode, size, (10 * c + k,) * (1 if mode == "L" else 3)).save(
                    root / split / name / f"{k}.png")
    return root


# ---------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [False, True])
def test_idx_load_and_selection(tmp_path: Path, gz: bool) -> None:
    root = write_mnist(tmp_path / "fm", gz=gz)
    ds = load_dataset("fashion_mnist", "train", root=str(root))
    assert isinstance(ds, ImageDataset) and len(ds) == 30
    assert ds.images.shape == (30, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [i % 10 for i in range(30)]
    assert len(load_dataset("mnist", "test", root=root)) == 10

    sub = load_dataset("fashion_mnist", "train", root=root, index_range=(5, 25), classes=[1, 3])
    marks = sub.images[:, 0, 0, 0].tolist()
    assert marks == [11, 13, 21, 23]  # only these rows were read, in file order
    assert (sub.images == sub.images[:, :, :1, :1]).all()
    assert sub.labels.tolist() == [1, 3, 1, 3]  # original class ids
    src = sub.source
    assert (src["dataset"], src["split"], src["index_range"], src["classes"], src["num_images"]) == \
        ("fashion_mnist", "train", [5, 25], [1, 3], 4)
    assert src["root"] == str(root.resolve()) and json.loads(json.dumps(src)) == src


def test_idx_prefers_plain_and_reads_gz_name(tmp_path: Path) -> None:
    root = write_mnist(tmp_path / "fm", gz=True)
    ds = load_dataset("fashion_mnist", "test", root=root)
    assert ds.source["files"][0].endswith("t10k-images-idx3-ubyte.gz")
    # gzip content under the plain name (some downloads drop the suffix) is detected.
    (root / "t10k-images-idx3-ubyte.gz").rename(root / "t10k-images-idx3-ubyte")
    again = load_dataset("fashion_mnist", "test", root=root)
    assert again.source["files"][0].endswith("ubyte") and torch.equal(again.images, ds.images)


def test_idx_missing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^fashion_mnist: no train-images-idx3-ubyte\[.gz\] in /nope \(no such folder\); install"):
        load_dataset("fashion_mnist", "train", root="/nope")
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(UserError) as e:
        load_dataset("fashion_mnist", "train", root=tmp_path / "empty")
    msg = str(e.value)
    assert "no train-images-idx3-ubyte[.gz] in" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("gz", [False, True])
def test_idx_corrupt(tmp_path: Path, gz: bool) -> None:
    root = write_mnist(tmp_path / "fm", gz=gz)
    suffix = ".gz" if gz else ""
    img = root / f"train-images-idx3-ubyte{suffix}"
    lbl = root / f"train-labels-idx1-ubyte{suffix}"
    good = img.read_bytes()

    def put(path: Path, raw: bytes) -> None:
        path.write_bytes(gzip.compress(raw) if gz else raw)

    raw = gzip.decompress(good) if gz else good
    put(img, b"\x00\x00\x08\x01" + raw[4:])  # wrong ndim
    with pytest.raises(UserError, match="bad IDX magic number 00000801"):
        load_dataset("fashion_mnist", "train", root=root)
    put(img, raw[:-5])
    with pytest.raises(UserError, match=r"truncated: header says 30x28x28 = 23520 bytes of data, file has 23515"):
        load_dataset("fashion_mnist", "train", root=root)
    put(img, raw)
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(29), gz)  # same name as lbl
    with pytest.raises(UserError, match=r"29 labels but .* has 30 images"):
        load_dataset("fashion_mnist", "train", root=root)
    write_idx(root / "train-labels-idx1-ubyte", np.full(30, 10), gz)
    with pytest.raises(UserError, match="label 10 out of range"):
        load_dataset("fashion_mnist", "train", root=root)
    assert lbl.exists()
    if gz:
        img.write_bytes(good[:100])
        with pytest.raises(UserError, match=f"{img}: not a valid gzip file"):
            load_dataset("fashion_mnist", "train", root=root)
        img.write_bytes(b"not gzip at all")
        with pytest.raises(UserError, match="not a valid gzip file"):
            load_dataset("fashion_mnist", "train", root=root)


def test_bad_split_range_classes_name(tmp_path: Path) -> None:
    root = write_mnist(tmp_path / "fm")
    with pytest.raises(UserError, match=r"unknown split 'val'; valid: train, test"):
        load_dataset("fashion_mnist", "val", root=root)
    for rng in [(5, 5), (-1, 4), (0, 31), (20, 10)]:
        with pytest.raises(UserError, match=rf"index_range: got \[{rng[0]}, {rng[1]}\], outside fashion_mnist's "
                                            r"train split; need 0 <= start < stop <= 30"):
            load_dataset("fashion_mnist", "train", root=root, index_range=rng)
    with pytest.raises(UserError, match=r"^config key 'data.eval_range': got \[0, 31\], outside fashion_mnist's test"):
        load_dataset("fashion_mnist", "test", root=root, index_range=(0, 31), range_key="config key 'data.eval_range'")
    with pytest.raises(UserError, match="expected two integers"):
        load_dataset("fashion_mnist", "train", root=root, index_range=(1.5, 3))
    with pytest.raises(UserError, match=r"classes \[0, 10\] invalid \(10\); need a non-empty list of class ids in \[0, 10\)"):
        load_dataset("fashion_mnist", "train", root=root, classes=[0, 10])
    for bad in (3, [], ["1"]):
        with pytest.raises(UserError, match="classes .* invalid"):
            load_dataset("fashion_mnist", "train", root=root, classes=bad)
    with pytest.raises(UserError, match="contains no images"):
        load_dataset("fashion_mnist", "train", root=root, index_range=(0, 3), classes=[7])
    with pytest.raises(UserError, match="unknown dataset 'imagenet'; valid: fashion_mnist, mnist"):
        load_dataset("imagenet", "train")
    with pytest.raises(ValueError):  # UserError is a ValueError
        dataset_info("nope")


# ---------------------------------------------------------------- CIFAR

def test_cifar10(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path)
    ds = load_dataset("cifar10", "train", root=root)
    assert ds.images.shape == (20, 3, 32, 32) and ds.info.class_names[0] == "airplane"
    assert ds.images[:, 0, 0, 0].tolist() == list(range(20))
    assert (ds.images[:, 1] == 100).all() and (ds.images[7, 2] == 7).all()  # R, G, B planes
    assert ds.labels.tolist() == [i % 10 for i in range(20)]
    # Range across batch boundaries, then classes; the folder itself is accepted as root.
    sub = load_dataset("cifar10", "train", root=root / "cifar-10-batches-py", index_range=(3, 17),
                       classes=[5, 4, 3])
    assert sub.images[:, 0, 0, 0].tolist() == [3, 4, 5, 13, 14, 15] == sub.labels.tolist()[:3] + [13, 14, 15]
    assert sub.source["classes"] == [3, 4, 5] and sub.source["index_range"] == [3, 17]
    test = load_dataset("cifar10", "test", root=root)
    assert test.images[:, 0, 0, 0].tolist() == [20, 21, 22, 23]


def test_cifar100(tmp_path: Path) -> None:
    root = write_cifar100(tmp_path)
    ds = load_dataset("cifar100", "test", root=root, classes=[95, 99, 0])
    assert ds.labels.tolist() == [95, 99] and ds.images[:, 0, 0, 0].tolist() == [7, 11]
    assert ds.info.num_classes == 100 and ds.info.class_names[95] == "c95"
    assert dataset_info("cifar100").class_names[:2] == ("apple", "aquarium_fish")


def test_cifar_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^cifar10: no data.root given; download"):
        load_dataset("cifar10", "train")
    with pytest.raises(UserError, match=r"cifar100: no train in .* \(nor .*cifar-100-python\); download"):
        load_dataset("cifar100", "train", root=tmp_path)
    with pytest.raises(UserError, match=r"cifar10: no test_batch in /nope \(no such folder\)"):
        load_dataset("cifar10", "test", root="/nope")
    root = write_cifar10(tmp_path / "c")
    batch = root / "cifar-10-batches-py" / "data_batch_3"

    class Evil:
        def __reduce__(self):  # would call print("pwned") on an unrestricted unpickler
            return (print, ("pwned",))

    pickle.dump({b"data": Evil(), b"labels": []}, open(batch, "wb"), protocol=2)
    with pytest.raises(UserError, match=r"data_batch_3: refusing to unpickle (__builtin__|builtins)\.print"):
        load_dataset("cifar10", "train", root=root)
    batch.write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"data_batch_3: not a readable CIFAR pickle"):
        load_dataset("cifar10", "train", root=root)
    pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1]}, open(batch, "wb"))
    with pytest.raises(UserError, match=r"b'labels' should hold 4 integer labels"):
        load_dataset("cifar10", "train", root=root)
    pickle.dump({b"labels": [0]}, open(batch, "wb"))
    with pytest.raises(UserError, match=r"missing key b'data'"):
        load_dataset("cifar10", "train", root=root)


# ---------------------------------------------------------------- image folder, digits

def test_imagefolder(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "rgb")
    info = dataset_info("imagefolder", root=root)
    assert (info.class_names, info.channels, info.image_size) == (("bird", "cat"), 3, (5, 6))
    assert info.mean == (0.5,) * 3
    ds = load_dataset("imagefolder", "train", root=root, index_range=(1, 6), classes=[1])
    assert ds.images.shape == (3, 3, 5, 6) and ds.labels.tolist() == [1, 1, 1]
    assert ds.images[:, 0, 0, 0].tolist() == [10, 11, 12]
    assert len(load_dataset("imagefolder", "test", root=root)) == 4

    grey = write_folder(tmp_path / "grey", mode="L")
    Image.new("RGB", (6, 5), (10, 10, 10)).save(grey / "test" / "cat" / "9.png")  # converted to L
    g = load_dataset("imagefolder", "test", root=grey)
    assert g.images.shape == (5, 1, 5, 6) and g.info.channels == 1
    odd = grey / "train" / "cat" / "z.png"
    Image.new("L", (7, 5)).save(odd)
    with pytest.raises(UserError, match=rf"{odd}: image is 7x5 \(WxH\) but the first image is 6x5"):
        load_dataset("imagefolder", "train", root=grey)
    with pytest.raises(UserError, match="imagefolder: no data.root given"):
        dataset_info("imagefolder")
    with pytest.raises(UserError, match="imagefolder: folder /nope does not exist"):
        load_dataset("imagefolder", "train", root="/nope")


def test_digits() -> None:
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(tr), len(te)) == (1437, 360) and tr.images.shape[1:] == (1, 8, 8)
    assert tr.images.max() == 255 and set(tr.labels.tolist()) == set(range(10))
    x = to_float(tr.images)
    assert abs(x.mean().item() - tr.info.mean[0]) < 1e-3 and abs(x.std().item() - tr.info.std[0]) < 1e-3
    sub = load_dataset("digits", "test", index_range=(10, 60), classes=[3, 4])
    assert set(sub.labels.tolist()) == {3, 4} and sub.source["root"] is None


def test_registry() -> None:
    assert dataset_names() == ["fashion_mnist", "mnist", "cifar10", "cifar100", "imagefolder", "digits"]
    i = dataset_info("cifar10")
    assert i.mean == (0.4914, 0.4822, 0.4465) and i.crop_padding == 4 and i.flip
    assert not dataset_info("mnist").flip and dataset_info("fashion_mnist").class_names[-1] == "Ankle boot"


# ---------------------------------------------------------------- tensor ops

def test_to_float_normalize() -> None:
    u = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1)
    assert to_float(u).flatten().tolist() == pytest.approx([0.0, 1.0, 0.2])
    info = dataset_info("cifar10")
    x = torch.full((2, 3, 4, 4), 0.5, dtype=torch.float64)
    y = normalize(x, info)
    assert y.dtype == torch.float64
    want = [(0.5 - m) / s for m, s in zip(info.mean, info.std)]
    assert y[1, :, 3, 3].tolist() == pytest.approx(want, abs=1e-12)
    assert normalize(x[0], info).shape == (3, 4, 4)  # unbatched works too
    with pytest.raises(ValueError, match="1 channels"):
        normalize(torch.zeros(1, 1, 2, 2), info)


def _shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference crop: out[i, j] = img[i + dy, j + dx], zero outside (slow, per sample)."""
    c, h, w = img.shape
    out = torch.zeros_like(img)
    for i in range(h):
        for j in range(w):
            if 0 <= i + dy < h and 0 <= j + dx < w:
                out[:, i, j] = img[:, i + dy, j + dx]
    return out


def test_augment_matches_reference_crop_and_flip() -> None:
    x = torch.rand(24, 2, 5, 6) + 1  # all nonzero, distinct: the match below is unique
    out = augment(x, crop_padding=2, flip=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    seen = set()
    for b in range(len(x)):
        hits = [(dy, dx, m) for dy in range(-2, 3) for dx in range(-2, 3) for m in (0, 1)
                if torch.equal(out[b], (lambda s: s.flip(-1) if m else s)(_shift(x[b], dy, dx)))]
        assert len(hits) == 1, b
        seen.add(hits[0])
    assert len({h[2] for h in seen}) == 2 and len({h[:2] for h in seen}) > 5  # both flips, many shifts


def test_augment_identities_and_determinism() -> None:
    x = torch.rand(16, 3, 8, 8)
    assert augment(x, crop_padding=0, flip=False, generator=None) is x
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    once = augment(x, crop_padding=0, flip=True, generator=g())
    assert all(torch.equal(o, a) or torch.equal(o, a.flip(-1)) for o, a in zip(once, x))
    assert torch.equal(augment(once, crop_padding=0, flip=True, generator=g()), x)  # flip twice
    a = augment(x, crop_padding=3, flip=True, generator=g())
    assert torch.equal(a, augment(x, crop_padding=3, flip=True, generator=g()))
    assert not torch.equal(a, augment(x, crop_padding=3, flip=True, generator=torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError):
        augment(x.to(torch.uint8), crop_padding=1, flip=False)


@pytest.mark.parametrize("p, flip", [(2, True), (1, False), (0, True), (0, False)])
def test_augment_index_names_the_view_drawn(p: int, flip: bool) -> None:
    """The KD steps' teacher-logit cache is keyed by this index: it must name the shift and flip exactly."""
    x = torch.rand(40, 2, 5, 6) + 1
    plain = augment(x, crop_padding=p, flip=flip, generator=torch.Generator().manual_seed(0))
    out, index = augment(x, crop_padding=p, flip=flip, generator=torch.Generator().manual_seed(0), with_index=True)
    assert torch.equal(out, plain) and index.dtype == torch.int64  # the same draws with or without the index
    assert view_count(p, flip) == (2 * p + 1) ** 2 * (2 if flip else 1)
    assert 0 <= index.min() and index.max() < view_count(p, flip) and (len(set(index.tolist())) > 1 or not (p or flip))
    flips = 2 if flip else 1
    for b, i in enumerate(index.tolist()):
        dy, dx, m = i // flips // (2 * p + 1) - p, i // flips % (2 * p + 1) - p, i % flips
        want = _shift(x[b], dy, dx)
        assert torch.equal(out[b], want.flip(-1) if m else want), (b, i)
    view = make_view([0.5, 0.2], [0.3, 0.4], crop_padding=p, flip=flip, generator=torch.Generator().manual_seed(0))
    y = x - 1.5
    drawn, vindex = view(y, with_index=True)
    assert view.count == view_count(p, flip) and torch.equal(vindex, index)  # the view draws as augment does
    assert torch.equal(drawn, make_view([0.5, 0.2], [0.3, 0.4], crop_padding=p, flip=flip,
                                        generator=torch.Generator().manual_seed(0))(y))


def test_iterate_batches(tmp_path: Path) -> None:
    ds = load_dataset("fashion_mnist", "train", root=write_mnist(tmp_path / "fm", n_train=23))
    sizes = [len(b[0]) for b in iterate_batches(ds, 5, shuffle=False)]
    assert sizes == [5, 5, 5, 5, 3]
    assert [len(b[1]) for b in iterate_batches(ds, 5, shuffle=True, drop_last=True)] == [5] * 4
    run = lambda: [(i[:, 0, 0, 0].tolist(), l.tolist()) for i, l in  # noqa: E731
                   iterate_batches((ds.images, ds.labels), 8, shuffle=True,
                                   generator=torch.Generator().manual_seed(1))]
    first = run()
    assert first == run()
    marks = sum((m for m, _ in first), [])
    assert sorted(marks) == list(range(23)) and marks != list(range(23))
    assert all(l == [m % 10 for m in ms] for ms, l in first)  # images and labels stay paired


# ---------------------------------------------------------------- the real Fashion-MNIST

@pytest.mark.skipif(not FMNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist() -> None:
    tr = load_dataset("fashion_mnist", "train")
    te = load_dataset("fashion_mnist", "test")
    assert (len(tr), len(te)) == (60000, 10000) and tr.images.shape[1:] == (1, 28, 28)
    assert tr.info.num_classes == 10 and set(te.labels.tolist()) == set(range(10))
    prior = load_dataset("fashion_mnist", "train", index_range=(50000, 60000), classes=[0, 1, 2, 3, 4])
    assert (prior.labels < 5).all() and 0 < len(prior) < 10000
    assert torch.equal(prior.images, tr.images[50000:][tr.labels[50000:] < 5])
    assert prior.source["index_range"] == [50000, 60000] and prior.source["classes"] == [0, 1, 2, 3, 4]
