"""IDX files (the MNIST format) and the Fashion-MNIST / MNIST splits built from them.

An IDX file is a 4-byte magic number (0, 0, dtype code, ndim), ``ndim`` big-endian uint32 sizes,
then the data in C order. We read only ubyte data (code 0x08). Gzip is detected by name or content. Plain files are memory-mapped so
that only the selected image rows are read; ``.gz`` files are decompressed in one go and only the
selected rows are copied out.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from fastad.data.info import DATASETS, DatasetInfo
from fastad.errors import UserError

_UBYTE = 0x08
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def find_file(root: Path, stem: str, info: DatasetInfo) -> Path:
    """``root/stem`` or ``root/stem.gz`` (plain preferred: it can be memory-mapped)."""
    for p in (root / stem, root / f"{stem}.gz"):
        if p.is_file():
            return p
    missing = "" if root.is_dir() else " (no such folder)"
    raise UserError(f"{info.name}: no {stem}[.gz] in {root}{missing}; {info.how_to_get}")


def _parse_header(head: bytes, path: Path, ndim: int) -> tuple[int, tuple[int, ...]]:
    """Return (header length, dims) or raise a one-line UserError."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != _UBYTE or head[3] != ndim:
        raise UserError(f"{path}: bad IDX magic number {head[:4].hex() or '(empty)'}; expected "
                        f"0000080{ndim} (ubyte, {ndim}-D)")
    hlen = 4 + 4 * ndim
    if len(head) < hlen:
        raise UserError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(head[4:hlen], dtype=">u4"))
    return hlen, dims


class IdxArray:
    """A ubyte IDX array: ``dims`` known from the header, rows read on demand."""

    def __init__(self, path: Path, ndim: int) -> None:
        self.path = path
        with open(path, "rb") as f:
            # By name or content: some downloads drop the .gz suffix.
            gz = path.suffix == ".gz" or f.read(2) == b"\x1f\x8b"
        if gz:
            try:
                raw = gzip.decompress(path.read_bytes())
            except (OSError, EOFError, zlib.error) as e:
                raise UserError(f"{path}: not a valid gzip file ({e})") from None
            hlen, self.dims = _parse_header(raw[:4 + 4 * ndim], path, ndim)
            self._check_size(len(raw) - hlen)
            # frombuffer does not copy: only the selected rows are copied out by rows().
            self._data = np.frombuffer(raw, np.uint8, offset=hlen).reshape(self.dims)
        else:
            with open(path, "rb") as f:
                hlen, self.dims = _parse_header(f.read(4 + 4 * ndim), path, ndim)
            self._check_size(os.path.getsize(path) - hlen)
            # A memmap reads from disk only the pages of the rows that are indexed.
            self._data = (np.memmap(path, np.uint8, mode="r", offset=hlen).reshape(self.dims)
                          if 0 not in self.dims else np.zeros(self.dims, np.uint8))

    def _check_size(self, size: int) -> None:
        expected = int(np.prod(self.dims))
        if size != expected:
            what = "truncated" if size < expected else "too long"
            raise UserError(f"{self.path}: {what}: header says {'x'.join(map(str, self.dims))} = "
                            f"{expected} bytes of data, file has {size}")

    def rows(self, indices: np.ndarray | slice) -> np.ndarray:
        """Copy of the selected rows (first axis), uint8."""
        return np.array(self._data[indices], dtype=np.uint8)


class IdxSplit:
    """A Fashion-MNIST / MNIST split: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``."""

    def __init__(self, name: str, root: Path, split: str) -> None:
        self.info = DATASETS[name]
        img_stem, lbl_stem = _FILES[split]
        img_path, lbl_path = find_file(root, img_stem, self.info), find_file(root, lbl_stem, self.info)
        self.files = [str(img_path), str(lbl_path)]
        self._images = IdxArray(img_path, 3)
        self._labels = IdxArray(lbl_path, 1).rows(slice(None)).astype(np.int64)
        self.n = self._images.dims[0]
        if len(self._labels) != self.n:
            raise UserError(f"{lbl_path}: {len(self._labels)} labels but {img_path} has "
                            f"{self.n} images")
        if self._images.dims[1:] != self.info.image_size:
            raise UserError(f"{img_path}: images are {self._images.dims[1]}x{self._images.dims[2]}"
                            f", expected {self.info.image_size[0]}x{self.info.image_size[1]}")
        if self.n and self._labels.max() >= self.info.num_classes:
            raise UserError(f"{lbl_path}: label {self._labels.max()} out of range; expected "
                            f"0..{self.info.num_classes - 1}")

    def labels(self, start: int, stop: int) -> np.ndarray:
        return self._labels[start:stop]

    def images(self, indices: np.ndarray) -> np.ndarray:
        return self._images.rows(indices)[:, None]  # [k, 1, H, W]
