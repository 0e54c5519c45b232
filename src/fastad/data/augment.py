"""Batched tensor ops on images: scaling, normalisation, random crop + horizontal flip.

All follow the input's device (and dtype, for float inputs). Order in a training step:
``x = augment(to_float(u8), ...)`` then ``normalize(x, info)``, so that crop padding is black, as
with the usual PIL-based pipelines.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastad.data.info import DatasetInfo
from fastad.diffusion.ddim import to_device


def to_float(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images [..., C, H, W] in 0..255 -> float in [0, 1], same device."""
    if x.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {x.dtype}")
    return x.to(dtype) / 255


def normalize(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """``(x - mean) / std`` per channel of ``x`` [..., C, H, W] in [0, 1]; keeps device/dtype."""
    c = x.shape[-3]
    if c != len(info.mean):
        raise ValueError(f"normalize: images have {c} channels, {info.name} has {len(info.mean)}")
    mean = torch.tensor(info.mean, device=x.device, dtype=x.dtype).view(c, 1, 1)
    std = torch.tensor(info.std, device=x.device, dtype=x.dtype).view(c, 1, 1)
    return (x - mean) / std


def view_count(crop_padding: int, flip: bool) -> int:
    """How many distinct views :func:`augment` can make of one image: ``(2p + 1)^2`` shifts, times 2 with flips."""
    return (2 * crop_padding + 1) ** 2 * (2 if flip else 1)


def augment(x: torch.Tensor, *, crop_padding: int, flip: bool,
            generator: torch.Generator | None = None, with_index: bool = False):
    """Random crop (zero padding) and random horizontal flip, independently per sample.

    x: float [B, C, H, W] on any device -> same shape, device and dtype. Each sample is shifted by
    (dy, dx) drawn uniformly from [-p, p] (p = ``crop_padding``; pixels shifted in are 0), then
    mirrored with probability 1/2 when ``flip``. Randomness comes from ``generator`` (on the
    generator's device; the default generator when None): offsets first, then flips. One gather
    per axis, no per-sample loop. With p = 0 and flip False, returns ``x`` itself.

    ``with_index``: also return which view each sample got, as an int64 index ``[B]`` in
    ``[0, view_count)``: ``(dy_i * (2p + 1) + dx_i) * 2 + mirror`` with ``dy_i, dx_i`` in ``[0, 2p]`` (without flips,
    ``dy_i * (2p + 1) + dx_i``). The draws are the same with or without it.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"augment expects a float [B, C, H, W] tensor, got {x.dtype} "
                         f"{list(x.shape)}")
    if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
        raise ValueError(f"augment: crop_padding must be an int >= 0, got {crop_padding!r}")
    b, c, h, w = x.shape
    p = crop_padding
    index = torch.zeros(b, dtype=torch.int64, device=x.device)  # (dy * (2p + 1) + dx) * flips + mirror
    if p == 0 and not flip:
        return (x, index) if with_index else x
    gdev = generator.device if generator is not None else x.device
    rows = torch.arange(h, device=x.device).expand(b, h)  # [B, H] source row in padded image
    cols = torch.arange(w, device=x.device).expand(b, w)  # [B, W]
    if p:
        off = to_device(torch.randint(0, 2 * p + 1, (2, b, 1), generator=generator, device=gdev), x.device)
        rows, cols = rows + off[0], cols + off[1]
        index = off[0, :, 0] * (2 * p + 1) + off[1, :, 0]
        x = F.pad(x, (p, p, p, p))
    if flip:
        mirror = to_device(torch.rand(b, 1, generator=generator, device=gdev), x.device) < 0.5
        cols = torch.where(mirror, cols.flip(1), cols)
        index = index * 2 + mirror[:, 0]
    x = x.gather(2, rows[:, None, :, None].expand(b, c, h, x.shape[3]))  # [B, C, H, W + 2p]
    x = x.gather(3, cols[:, None, None, :].expand(b, c, h, w))  # [B, C, H, W]
    return (x, index) if with_index else x
