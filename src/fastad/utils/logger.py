"""Run logs: one JSON object per line in metrics.jsonl, mirrored to TensorBoard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping


class RunLogger:
    """``log(step, {"train/loss": 0.3, ...})`` appends to ``metrics.jsonl`` and TensorBoard scalars."""

    def __init__(self, out_dir: str | Path, *, tensorboard: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self._jsonl = open(self.out_dir / "metrics.jsonl", "a", buffering=1)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import; only when asked for

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
        self._t0 = time.time()

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        record = {"step": step, "time": round(time.time() - self._t0, 3), **values}
        self._jsonl.write(json.dumps(record, default=_jsonable) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def add_image(self, tag: str, image_hwc_uint8, step: int) -> None:
        if self._tb is not None:
            self._tb.add_image(tag, image_hwc_uint8, step, dataformats="HWC")

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)
