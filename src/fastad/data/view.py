"""The one map from the prior's pixel space [-1, 1] to the teacher's normalised input space (``view``)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fastad.data.augment import augment, view_count
from fastad.diffusion.ddim import to_device
from fastad.errors import UserError

__all__ = ["RESIZE_MODES", "make_view"]

#: How images of another size than the teacher's input are resized (``torch.nn.functional.interpolate`` modes).
RESIZE_MODES = ("bilinear", "bicubic", "nearest", "area")


def make_view(
    mean: Sequence[float],
    std: Sequence[float],
    *,
    crop_padding: int = 0,
    flip: bool = False,
    generator: torch.Generator | None = None,
    size: Sequence[int] | None = None,
    resize: str = "bilinear",
) -> Callable[[Tensor], Tensor]:
    """Return ``view(x)``: ``((x + 1) / 2 - mean) / std``, with optional random crop and flip.

    Every place that feeds prior-space images to a teacher or student uses it: the guidance, the
    student's KD step (with the dataset's crop/flip), DeepInversion, and the teacher's reading of samples.

    ``x`` [B, C, H, W] in prior space [-1, 1] -> [B, C, H, W] in the teacher's input space, same
    device and dtype. ``mean``/``std`` are the teacher's per-channel dataset statistics (length C).
    Crop/flip (``fastad.data.augment``) run in [0, 1] space, before normalising, so the padding is
    black as in teacher training; they are gathers, hence differentiable w.r.t. ``x``. Each call
    draws fresh offsets/flips from ``generator`` (the default generator when None).

    ``size`` ``[H, W]``: the teacher's input size; images of another size are first resized to it
    (``resize``: one of :data:`RESIZE_MODES`, by ``torch.nn.functional.interpolate``, differentiable).
    None: no resize.

    ``view(x, with_index=True)`` also says which of its ``view.count`` crop/flip views each sample got
    (:func:`fastad.data.augment.augment`'s index; the KD steps' teacher-logit cache is keyed by it).
    """
    mean_l, std_l = [float(m) for m in mean], [float(s) for s in std]
    if not mean_l or len(mean_l) != len(std_l):
        raise UserError(f"view: mean {mean_l} and std {std_l} must be non-empty and of equal length")
    if not all(math.isfinite(s) and s > 0 for s in std_l) or not all(math.isfinite(m) for m in mean_l):
        raise UserError(f"view: std {std_l} must be finite and > 0, mean {mean_l} finite")
    if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
        raise UserError(f"view: crop_padding={crop_padding!r} must be an int >= 0")
    if resize not in RESIZE_MODES:
        raise UserError(f"view: resize={resize!r}; choose one of {', '.join(RESIZE_MODES)}")
    c, hw = len(mean_l), None if size is None else (int(size[0]), int(size[1]))
    smooth = {"align_corners": False} if resize in ("bilinear", "bicubic") else {}
    stats: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}  # mean, std per device and dtype

    def scaled(x: Tensor) -> Tensor:  # [-1, 1] -> [0, 1], at the teacher's size
        if x.ndim != 4 or x.shape[1] != c:
            raise UserError(f"view: expected images [B, {c}, H, W], got {list(x.shape)}")
        u = (x + 1) / 2
        return F.interpolate(u, size=hw, mode=resize, **smooth) if hw is not None and tuple(u.shape[-2:]) != hw else u

    def normalised(u: Tensor) -> Tensor:
        key = (u.device, u.dtype)
        if key not in stats:  # copied once, without making the host wait for the device
            stats[key] = tuple(to_device(torch.tensor(v, dtype=u.dtype).view(c, 1, 1), u.device)
                               for v in (mean_l, std_l))
        m, s = stats[key]
        return (u - m) / s

    def view(x: Tensor, *, with_index: bool = False):
        """``x`` -> the teacher's input; ``with_index``: also each sample's view index (``augment``'s)."""
        if with_index:
            u, index = augment(scaled(x), crop_padding=crop_padding, flip=flip, generator=generator, with_index=True)
            return normalised(u), index
        return normalised(augment(scaled(x), crop_padding=crop_padding, flip=flip, generator=generator))

    view.count = view_count(crop_padding, flip)  # type: ignore[attr-defined]
    return view
