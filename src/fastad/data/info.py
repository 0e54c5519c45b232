"""Dataset descriptions and the registry of dataset names.

``DATASETS`` maps each name to its static :class:`DatasetInfo`. The ``imagefolder`` entry is a
template (no classes, size 0x0): :func:`dataset_info` fills it in from the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from fastad.errors import UserError


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset's images."""

    name: str  # registry name, e.g. "fashion_mnist"
    channels: int  # 1 (grey) or 3 (RGB)
    image_size: tuple[int, int]  # (H, W)
    num_classes: int
    class_names: tuple[str, ...]  # index = class id
    mean: tuple[float, ...]  # per channel, of images scaled to [0, 1]
    std: tuple[float, ...]
    flip: bool  # horizontal flip suits this data (False for digits/MNIST)
    crop_padding: int  # random-crop padding used for augmentation
    default_root: str | None  # where the files are looked for when no root is given
    how_to_get: str  # shown in "not found" errors


FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# CIFAR-100 fine label names in id order (as in the archive's `meta` file).
CIFAR100_CLASSES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid
otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray
road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle
wardrobe whale willow_tree wolf woman worm""".split())
assert len(CIFAR100_CLASSES) == 100
DIGITS = tuple(str(i) for i in range(10))

DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", 1, (28, 28), 10, FASHION_MNIST_CLASSES, (0.2860,), (0.3530,),
        flip=True, crop_padding=2, default_root="/usr/share/datasets/fashion-mnist",
        how_to_get="install it with 'apt-get install dataset-fashion-mnist' or set data.root"),
    "mnist": DatasetInfo(
        "mnist", 1, (28, 28), 10, DIGITS, (0.1307,), (0.3081,),
        flip=False, crop_padding=2, default_root="/usr/share/datasets/mnist",
        how_to_get="download the four MNIST IDX files (train-images-idx3-ubyte.gz, ...) "
                   "there or set data.root"),
    "cifar10": DatasetInfo(
        "cifar10", 3, (32, 32), 10, CIFAR10_CLASSES,
        (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
        flip=True, crop_padding=4, default_root=None,
        how_to_get="download and unpack cifar-10-python.tar.gz from "
                   "https://www.cs.toronto.edu/~kriz/cifar.html and set data.root"),
    "cifar100": DatasetInfo(
        "cifar100", 3, (32, 32), 100, CIFAR100_CLASSES,
        (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761),
        flip=True, crop_padding=4, default_root=None,
        how_to_get="download and unpack cifar-100-python.tar.gz from "
                   "https://www.cs.toronto.edu/~kriz/cifar.html and set data.root"),
    # Template: channels, size and classes come from the folder's test split (see dataset_info).
    "imagefolder": DatasetInfo(
        "imagefolder", 0, (0, 0), 0, (), (), (),
        flip=True, crop_padding=4, default_root=None,
        how_to_get="set data.root to a folder laid out as root/{train,test}/<class_name>/*.png"),
    # sklearn's bundled 8x8 digits. Statistics computed once from the train split
    # (first 1437 images, scaled to [0, 1]) and hard-coded here.
    "digits": DatasetInfo(
        "digits", 1, (8, 8), 10, DIGITS, (0.3054,), (0.3753,),
        flip=False, crop_padding=1, default_root=None,
        how_to_get="it ships with scikit-learn ('pip install scikit-learn')"),
}

SPLITS = ("train", "test")


def dataset_names() -> list[str]:
    """Names accepted by :func:`dataset_info` and :func:`~fastad.data.load_dataset`."""
    return list(DATASETS)


def check_name(name: str) -> None:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")


class SplitReader(Protocol):
    """One split of a dataset on disk, read in two phases so that selection can happen on labels
    before any image is decoded."""

    n: int  # images in the split
    info: DatasetInfo
    files: list[str]  # files this reader reads (recorded in ImageDataset.source)

    def labels(self, start: int, stop: int) -> np.ndarray:
        """int64 labels of images [start, stop), in file order."""
        ...

    def images(self, indices: np.ndarray) -> np.ndarray:
        """uint8 [k, C, H, W] images at sorted ``indices``; decodes only those images."""
        ...


def check_selection(info: DatasetInfo, split: str, n: int, index_range: Sequence[int] | None,
                    classes: Sequence[int] | None, *,
                    range_key: str = "index_range") -> tuple[tuple[int, int], tuple[int, ...] | None]:
    """Validate ``index_range`` against ``n`` images and ``classes`` against the class count; errors name the
    range as ``range_key`` (e.g. "config key 'data.eval_range'")."""
    if index_range is None:
        rng = (0, n)
    else:
        try:
            start, stop = (int(v) for v in index_range)
            if (start, stop) != tuple(index_range):
                raise TypeError
        except (TypeError, ValueError):
            raise UserError(f"{range_key}: got {index_range!r} for {info.name}; expected two integers "
                            f"(start, stop)") from None
        if not 0 <= start < stop <= n:
            raise UserError(f"{range_key}: got [{start}, {stop}], outside {info.name}'s {split} split; need "
                            f"0 <= start < stop <= {n}")
        rng = (start, stop)
    if classes is None:
        return rng, None
    allowed = f"need a non-empty list of class ids in [0, {info.num_classes})"
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
        raise UserError(f"{info.name}: classes {classes!r} invalid; {allowed}")
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < info.num_classes:
            raise UserError(f"{info.name}: classes {list(classes)!r} invalid ({c!r}); {allowed}")
    return rng, tuple(sorted({int(c) for c in classes}))
