"""Image grids as PNG files (PIL), optionally with a caption under each cell."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from fastad.utils.io import atomic_write

__all__ = ["to_uint8", "view_scale", "make_grid", "save_grid"]


def view_scale(width: int) -> int:
    """Nearest-neighbour upscale factor that makes a ``width``-pixel image about 96 px wide
    (28 -> 3, 32 -> 3, 8 -> 12; never below 1)."""
    return max(1, round(96 / width))


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Prior-space images ``[N, C, H, W]`` in [-1, 1] (any float dtype/device) -> uint8 CPU, clamped."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def make_grid(images: torch.Tensor, *, nrow: Optional[int] = None, scale: int = 1, padding: int = 2,
              pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images ``[N, C, H, W]`` (C = 1 or 3) into one uint8 ``[H', W', 3]`` array.

    ``nrow`` cells per row (default ``ceil(sqrt(N))``); each cell is upscaled ``scale`` times with
    nearest neighbour (so a 28x28 image stays crisp when viewed) and separated by ``padding`` pixels
    of ``pad_value``.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"make_grid expects non-empty uint8 [N, 1|3, H, W], got {images.dtype} {list(images.shape)}")
    n, c, h, w = images.shape
    x = images.cpu().expand(n, 3, h, w) if c == 1 else images.cpu()
    x = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3)  # nearest-neighbour upscale
    h, w = h * scale, w * scale
    ncol = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / ncol)
    grid = np.full((padding + rows * (h + padding), padding + ncol * (w + padding), 3), pad_value, np.uint8)
    for i, img in enumerate(x.permute(0, 2, 3, 1).numpy()):
        r, k = divmod(i, ncol)
        y0, x0 = padding + r * (h + padding), padding + k * (w + padding)
        grid[y0:y0 + h, x0:x0 + w] = img
    return grid


def save_grid(path: str | Path, images: torch.Tensor, *, nrow: Optional[int] = None, scale: int = 1,
              captions: Optional[Sequence[str]] = None) -> Path:
    """Write uint8 images ``[N, C, H, W]`` as a PNG grid; ``captions[i]`` (``"\\n"`` splits lines) is
    drawn under cell ``i`` with PIL's default font. The write is atomic. Returns ``path``."""
    from PIL import Image, ImageDraw, ImageFont

    path = Path(path)
    if captions is None:
        img = Image.fromarray(make_grid(images, nrow=nrow, scale=scale))
    else:
        if len(captions) != len(images):
            raise ValueError(f"save_grid: {len(captions)} captions for {len(images)} images")
        font = ImageFont.load_default()
        line_h = font.getbbox("Ag")[3] + 2
        lines = max(len(c.split("\n")) for c in captions)
        n, _, h, w = images.shape
        # A caption strip below each image: pad the images downwards, then draw into the strip.
        strip = lines * line_h + 2
        cell_h = h * scale + strip
        padded = torch.full((n, images.shape[1], math.ceil(cell_h / scale) * scale, w * scale), 255, dtype=torch.uint8)
        padded[:, :, : h * scale] = images.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        grid = make_grid(padded, nrow=nrow, scale=1)
        img = Image.fromarray(grid)
        draw = ImageDraw.Draw(img)
        ncol = nrow or math.ceil(math.sqrt(n))
        for i, text in enumerate(captions):
            r, k = divmod(i, ncol)
            x0, y0 = 2 + k * (w * scale + 2), 2 + r * (padded.shape[2] + 2) + h * scale + 1
            for j, line in enumerate(text.split("\n")):
                while line and draw.textlength(line, font=font) > w * scale:  # clip to the cell width
                    line = line[:-1]
                draw.text((x0 + 1, y0 + j * line_h), line, fill=(0, 0, 0), font=font)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return path
