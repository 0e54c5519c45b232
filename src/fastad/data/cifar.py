"""CIFAR-10 / CIFAR-100 "python version" pickle batches.

Layout (official archives): ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
and ``cifar-100-python/{train, test, meta}``. Each batch is a dict with ``b'data'`` (uint8
[N, 3072], the R, G, B planes of a 32x32 image in row-major order) and ``b'labels'``
(CIFAR-10) or ``b'fine_labels'`` (CIFAR-100). Pickles are read with a restricted unpickler that
can only rebuild numpy arrays, so a malicious file cannot run code.
"""

from __future__ import annotations

import importlib
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fastad.data.info import DATASETS
from fastad.errors import UserError

# The only globals a CIFAR pickle needs: numpy array/dtype/scalar reconstruction (as written by
# numpy 1.x "numpy.core" and 2.x "numpy._core", pickle protocols 2-5) and the latin-1 bytes
# helper that protocol-2 pickles written by Python 3 use.
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    *((f"numpy.{core}.multiarray", f) for core in ("core", "_core") for f in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
}


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, f: BinaryIO, path: Path) -> None:
        super().__init__(f, encoding="bytes")  # py2 str -> bytes, as the CIFAR site says
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UserError(f"{self.path}: refusing to unpickle {module}.{name}; a CIFAR batch "
                            f"holds only numpy arrays, lists and numbers")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]  # numpy 2 moved numpy.core
        return getattr(importlib.import_module(module), name)


def load_pickle(path: Path) -> dict:
    """Unpickle a CIFAR file (``encoding="bytes"``: keys are bytes) with only numpy allowed."""
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, path).load()
    except UserError:
        raise
    except Exception as e:  # pickle raises many types on garbage (UnpicklingError, EOFError, ...)
        raise UserError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj


def _get(d: dict, key: bytes, path: Path) -> Any:
    if key not in d:
        raise UserError(f"{path}: missing key {key!r}; found {sorted(d)!r}")
    return d[key]


class CifarSplit:
    """A CIFAR-10/100 split; batches are unpickled once, only selected rows are copied."""

    _LAYOUT = {  # name: (sub-folder, {split: batch files}, meta file, labels key, names key)
        "cifar10": ("cifar-10-batches-py",
                    {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                    "batches.meta", b"labels", b"label_names"),
        "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]},
                     "meta", b"fine_labels", b"fine_label_names"),
    }

    def __init__(self, name: str, root: Path, split: str) -> None:
        info = DATASETS[name]
        sub, batches, meta_name, label_key, names_key = self._LAYOUT[name]
        folder = root / sub if (root / sub).is_dir() else root
        paths = [folder / b for b in [*batches[split], meta_name]]
        for p in paths:
            if not p.is_file():
                where = (f"{folder} (nor {root / sub})" if root.is_dir()
                         else f"{root} (no such folder)")
                raise UserError(f"{name}: no {p.name} in {where}; {info.how_to_get}")
        *batch_paths, meta_path = paths
        self.files = [str(p) for p in paths]

        names = _get(load_pickle(meta_path), names_key, meta_path)
        if not isinstance(names, list) or len(names) != info.num_classes:
            raise UserError(f"{meta_path}: {names_key!r} should list {info.num_classes} names")
        self.info = replace(info, class_names=tuple(
            n.decode() if isinstance(n, bytes) else str(n) for n in names))

        self._data: list[np.ndarray] = []  # per batch, uint8 [n_b, 3072]
        labels = []
        for p in batch_paths:
            d = load_pickle(p)
            data, lab = _get(d, b"data", p), np.asarray(_get(d, label_key, p))
            if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                    and data.shape[1] == 3 * 32 * 32):
                raise UserError(f"{p}: b'data' should be uint8 [N, 3072], found "
                                f"{getattr(data, 'dtype', type(data).__name__)} "
                                f"{list(getattr(data, 'shape', []))}")
            if lab.shape != (len(data),) or lab.dtype.kind not in "iu":
                raise UserError(f"{p}: {label_key!r} should hold {len(data)} integer labels, "
                                f"found shape {list(lab.shape)}")
            if len(lab) and not (0 <= lab.min() and lab.max() < info.num_classes):
                raise UserError(f"{p}: labels out of range 0..{info.num_classes - 1}")
            self._data.append(data)
            labels.append(lab.astype(np.int64))
        self._labels = np.concatenate(labels)
        self._offsets = np.cumsum([0] + [len(d) for d in self._data])
        self.n = int(self._offsets[-1])

    def labels(self, start: int, stop: int) -> np.ndarray:
        return self._labels[start:stop]

    def images(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), 3, 32, 32), np.uint8)
        batch = np.searchsorted(self._offsets, indices, side="right") - 1
        for b, data in enumerate(self._data):
            sel = batch == b
            if sel.any():
                out[sel] = data[indices[sel] - self._offsets[b]].reshape(-1, 3, 32, 32)
        return out
