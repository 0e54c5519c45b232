"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes).

Values 0..16 are scaled to uint8 with ``round(v * 255 / 16)``. Deterministic split, in
sklearn's order: the first 1437 images are ``train``, the last 360 are ``test``.
"""

from __future__ import annotations

import numpy as np

from fastad.data.info import DATASETS

N_TRAIN = 1437  # of 1797; the remaining 360 are the test split


class DigitsSplit:
    """A digits split, held in memory (it is 115 kB)."""

    def __init__(self, split: str) -> None:
        from sklearn.datasets import load_digits  # sklearn is slow to import: only when used

        d = load_digits()
        sel = slice(0, N_TRAIN) if split == "train" else slice(N_TRAIN, None)
        self._images = np.round(d.images[sel] * 255 / 16).astype(np.uint8)[:, None]  # [N,1,8,8]
        self._labels = d.target[sel].astype(np.int64)
        self.info = DATASETS["digits"]
        self.n = len(self._labels)
        self.files: list[str] = ["sklearn.datasets.load_digits"]

    def labels(self, start: int, stop: int) -> np.ndarray:
        return self._labels[start:stop]

    def images(self, indices: np.ndarray) -> np.ndarray:
        return self._images[indices]
