"""In-memory image datasets: loading with selection, and batching."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from fastad.data.imagefolder import imagefolder_info
from fastad.data.info import (DATASETS, DatasetInfo, SplitReader, check_name, check_selection,
                              check_split)
from fastad.errors import UserError


@dataclass
class ImageDataset:
    """A loaded split (or part of one), held as tensors.

    images: uint8 [N, C, H, W]; labels: int64 [N] (original class ids); ``source`` is a JSON-able
    record of what was read: dataset, split, root, index_range, classes, num_images, files.
    """

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} "
                             f"{list(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 [{len(self.images)}], got "
                             f"{self.labels.dtype} {list(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 [C, H, W], int64 label)."""
        return self.images[i], self.labels[i]


def dataset_info(name: str, *, root: str | None = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; ``imagefolder`` reads its classes, channels and size from
    ``root``'s test split (train/ only when there is no test/), never from the training images.

    To use other statistics (e.g. for an image folder), ``dataclasses.replace(info, mean=...,
    std=...)``.
    """
    check_name(name)
    if name == "imagefolder":
        return imagefolder_info(root)
    return DATASETS[name]


def _reader(name: str, root: Path | None, split: str) -> SplitReader:
    if name in ("fashion_mnist", "mnist"):
        from fastad.data.idx import IdxSplit

        return IdxSplit(name, root, split)  # type: ignore[arg-type]
    if name in ("cifar10", "cifar100"):
        from fastad.data.cifar import CifarSplit

        return CifarSplit(name, root, split)  # type: ignore[arg-type]
    if name == "imagefolder":
        from fastad.data.imagefolder import ImageFolderSplit

        return ImageFolderSplit(root, split)  # type: ignore[arg-type]
    from fastad.data.digits import DigitsSplit

    return DigitsSplit(split)


def load_dataset(name: str, split: str, *, root: str | Path | None = None,
                 index_range: Sequence[int] | None = None,
                 classes: Sequence[int] | None = None, range_key: str = "index_range") -> ImageDataset:
    """Load images [start, stop) of ``split`` ("train" or "test"), then keep labels in ``classes``.

    ``index_range`` counts in file order and is applied first; ``classes`` then filters by the
    original class ids (labels are not renumbered). Images outside the selection are never
    decoded into the result. ``root`` defaults to the dataset's ``default_root``; ``digits``
    ignores it. Raises :class:`~fastad.errors.UserError` with a one-line message on bad input; ``range_key``
    names the range in it (e.g. "config key 'data.train_range'").
    """
    check_name(name)
    check_split(split)
    info = DATASETS[name]
    if name != "digits" and root is None and info.default_root is None:
        raise UserError(f"{name}: no data.root given; {info.how_to_get}")
    root_path = None if name == "digits" else Path(root if root is not None else info.default_root)
    reader = _reader(name, root_path, split)
    (start, stop), cls = check_selection(reader.info, split, reader.n, index_range, classes, range_key=range_key)

    labels = reader.labels(start, stop)
    keep = np.arange(start, stop) if cls is None else start + np.flatnonzero(np.isin(labels, cls))
    if len(keep) == 0:
        what = f" classes {list(cls)}" if cls else ""
        raise UserError(f"{name}: the selection {split}[{start}:{stop}]{what} contains no images")
    images = reader.images(keep)
    source = {"dataset": name, "split": split,
              "root": None if root_path is None else str(root_path.resolve()),
              "index_range": [start, stop], "classes": None if cls is None else list(cls),
              "num_images": int(len(keep)), "files": list(reader.files)}
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(images)),
                        torch.from_numpy(np.ascontiguousarray(labels[keep - start], np.int64)),
                        reader.info, source)


def load_eval_split(data: Any) -> ImageDataset:
    """The labelled images evaluation reads: the test split of ``data.dataset`` (``data`` is the ``data`` config
    section), only its images ``data.eval_range`` = [start, stop) when that is set (choose on one range, report
    on another)."""
    return load_dataset(data.dataset, "test", root=data.root,
                        index_range=tuple(data.eval_range) if data.eval_range else None,
                        range_key="config key 'data.eval_range'")


def iterate_batches(data: ImageDataset | tuple[torch.Tensor, torch.Tensor], batch_size: int, *,
                    shuffle: bool, generator: torch.Generator | None = None,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images [b, C, H, W], labels [b]) batches of an ImageDataset or a tensor pair.

    Batches stay on the tensors' device and dtype. With ``shuffle``, one permutation per call,
    drawn from ``generator`` (on its device). The last, short batch is dropped if ``drop_last``.
    """
    images, labels = (data.images, data.labels) if isinstance(data, ImageDataset) else data
    if len(images) != len(labels):
        raise ValueError(f"iterate_batches: {len(images)} images but {len(labels)} labels")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"iterate_batches: batch_size must be an int >= 1, got {batch_size!r}")
    n = len(labels)
    if shuffle:
        gdev = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=gdev).to(images.device)
    else:
        order = None
    end = n - n % batch_size if drop_last else n
    for s in range(0, end, batch_size):
        if order is None:
            yield images[s:s + batch_size], labels[s:s + batch_size]
        else:
            idx = order[s:s + batch_size]
            yield images[idx], labels[idx.to(labels.device)]
