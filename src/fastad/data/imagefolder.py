"""Image folders: ``root/{train,test}/<class_name>/*.{png,jpg,jpeg,bmp}``.

Classes are the sub-folders of ``root/test`` (or ``root/train`` when there is no test folder),
sorted by name; class id = position. Images are sorted by file name within a class, classes in
id order: that is the split's file order for ``index_range``. Every image is converted to the
mode of the first test image (L or RGB) and all must share its size. The description comes from
the test split so that reading it (all ``fastad distill`` reads) never opens anything under
``train/`` (the data-free rule); a train split may only hold class folders the test split has (an
empty test folder keeps a class's id).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fastad.data.info import DATASETS, DatasetInfo
from fastad.errors import UserError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _root(root: str | Path | None) -> Path:
    info = DATASETS["imagefolder"]
    if root is None:
        raise UserError(f"imagefolder: no data.root given; {info.how_to_get}")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"imagefolder: folder {root} does not exist; {info.how_to_get}")
    return root


def _list(split_dir: Path) -> dict[str, list[Path]]:
    """class name -> sorted image files, classes sorted."""
    return {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in EXTENSIONS)
            for d in sorted(split_dir.iterdir()) if d.is_dir()}


def _open(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"{path}: cannot read image ({e})") from None
    return im


def imagefolder_info(root: str | Path | None) -> DatasetInfo:
    """Classes from the folder names of the test split (train/ when there is no test/); channels and
    size from its first image. Nothing under ``train/`` is opened when ``test/`` exists."""
    root = _root(root)
    how = DATASETS["imagefolder"].how_to_get
    split_dir = next((root / s for s in ("test", "train") if (root / s).is_dir()), None)
    if split_dir is None:
        raise UserError(f"imagefolder: no test/ or train/ folder in {root}; {how}")
    files = _list(split_dir)
    first = next((f[0] for f in files.values() if f), None)
    if first is None:
        raise UserError(f"imagefolder: no {'/'.join(EXTENSIONS)} images in class folders of "
                        f"{split_dir}; {how}")
    im = _open(first)
    c = 1 if im.mode in _GREY_MODES else 3
    return replace(DATASETS["imagefolder"], channels=c, image_size=(im.height, im.width),
                   num_classes=len(files), class_names=tuple(files),
                   mean=(0.5,) * c, std=(0.5,) * c)


class ImageFolderSplit:
    """One split of an image folder; only selected files are decoded."""

    def __init__(self, root: Path, split: str) -> None:
        self.info = imagefolder_info(root)
        split_dir = root / split
        if not split_dir.is_dir():
            raise UserError(f"imagefolder: no {split}/ folder in {root}; "
                            f"{self.info.how_to_get}")
        files = _list(split_dir)
        unknown = sorted(set(files) - set(self.info.class_names))
        if unknown:
            ref = "test" if (root / "test").is_dir() else "train"
            raise UserError(f"imagefolder: class folder {split_dir / unknown[0]} is not among the "
                            f"{ref}/ classes {list(self.info.class_names)} (give {ref}/ the same class "
                            "folders; an empty one is fine)")
        ids = {n: i for i, n in enumerate(self.info.class_names)}
        self._paths = [p for n in files for p in files[n]]
        self._labels = np.array([ids[n] for n in files for _ in files[n]], np.int64)
        self.n = len(self._paths)
        self.files = [str(split_dir)]

    def labels(self, start: int, stop: int) -> np.ndarray:
        return self._labels[start:stop]

    def images(self, indices: np.ndarray) -> np.ndarray:
        c, (h, w) = self.info.channels, self.info.image_size
        out = np.empty((len(indices), c, h, w), np.uint8)
        for k, i in enumerate(indices):
            path = self._paths[i]
            im = _open(path)
            if im.size != (w, h):
                raise UserError(f"{path}: image is {im.width}x{im.height} (WxH) but the first "
                                f"image is {w}x{h}; all images must share one size")
            a = np.asarray(im.convert("L" if c == 1 else "RGB"))
            out[k] = a[None] if c == 1 else a.transpose(2, 0, 1)
        return out
