"""Shared test fixtures: small datasets written in the real on-disk formats."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

# Tiny test batches gain nothing from threads; an extra OpenMP thread spinning against other
# processes on a shared 2-core machine made tests ~10x slower.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format (magic 0x0000080N, big-endian dims), gzipped if .gz."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if path.suffix == ".gz" else open)(path, "wb").write(data)


def make_fmnist_like(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """A small Fashion-MNIST-format folder: real images when the Debian package is here, else class-coded
    synthetic ones (each class a distinct bright bar, so a classifier can learn it)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c + 3: 2 * c + 6, 4:24] = 250
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture
def tiny_fmnist(tmp_path: Path) -> Path:
    return make_fmnist_like(tmp_path / "fmnist")
