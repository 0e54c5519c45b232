"""Image grids as PNG files (PIL), optionally with a caption under each cell."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from fastad.utils.io import atomic_write

__all__ = ["to_uint8", "view_scale", "make_grid", "caption_scale", "save_grid"]


def view_scale(width: int) -> int:
    """Nearest-neighbour upscale factor that makes a ``width``-pixel image about 96 px wide
    (28 -> 3, 32 -> 3, 8 -> 12; never below 1)."""
    return max(1, round(96 / width))


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Prior-space images ``[N, C, H, W]`` in [-1, 1] (any float dtype/device) -> uint8 CPU, clamped."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _check_images(images: torch.Tensor, who: str) -> None:
    """Raise ``ValueError`` unless ``images`` is a non-empty uint8 ``[N, 1|3, H, W]`` tensor."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"{who} expects non-empty uint8 [N, 1|3, H, W], got {images.dtype} {list(images.shape)}")


def make_grid(images: torch.Tensor, *, nrow: Optional[int] = None, scale: int = 1, padding: int = 2,
              pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images ``[N, C, H, W]`` (C = 1 or 3) into one uint8 ``[H', W', 3]`` array.

    ``nrow`` cells per row (default ``ceil(sqrt(N))``); each cell is upscaled ``scale`` times with
    nearest neighbour (so a 28x28 image stays crisp when viewed) and separated by ``padding`` pixels
    of ``pad_value``.
    """
    _check_images(images, "make_grid")
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


# Captioned grids: cells are upscaled (nearest neighbour, integer factor) until they are about
# CAPTION_CELL_WIDTH px wide and every caption line fits; CAPTION_MARGIN px of background stay free on
# both sides of each caption line, so neighbouring captions are always 2 * CAPTION_MARGIN + padding apart.
CAPTION_CELL_WIDTH = 64
CAPTION_MARGIN = 2
# A caption line wider than this is clipped instead of the images being upscaled further.
CAPTION_MAX_WIDTH = 192


def caption_scale(width: int, scale: int, text_width: float, *, min_width: int = CAPTION_CELL_WIDTH,
                  max_width: int = CAPTION_MAX_WIDTH) -> int:
    """Upscale factor for ``width``-pixel images whose cells carry captions ``text_width`` px wide.

    At least ``scale``; at least about ``min_width`` px per cell (``round``, like :func:`view_scale`:
    8 -> 8, 16 -> 4, 28 -> 2); and at least ``text_width + 2 * CAPTION_MARGIN`` px per cell
    (``ceil``: the widest line always fits), where ``text_width`` counts up to ``max_width`` px.
    """
    need = min(text_width, max_width) + 2 * CAPTION_MARGIN
    return max(scale, round(min_width / width), math.ceil(need / width))


def save_grid(path: str | Path, images: torch.Tensor, *, nrow: Optional[int] = None, scale: int = 1,
              captions: Optional[Sequence[Optional[str]]] = None) -> Path:
    """Write uint8 images ``[N, C, H, W]`` (C = 1 or 3) as a PNG grid; the write is atomic. Returns ``path``.

    Without ``captions`` the grid is :func:`make_grid` ``(images, nrow=nrow, scale=scale)``. With
    ``captions`` (one per image), ``captions[i]`` (``"\\n"`` splits lines) is drawn with PIL's default
    font in a strip under cell ``i``. The upscale factor is raised from ``scale`` where needed
    (:func:`caption_scale`) so that each cell is about 64 px wide at least and as wide as its
    widest caption line, and each line keeps a background margin inside its cell, so the captions of
    neighbouring cells never touch. Cells may have fewer lines than others (or ``None``/``""``: no
    caption): lines are aligned at the bottom of the strip, so the last lines of all cells share a
    row (e.g. ``"Sandal\\nSandal 97%"`` next to ``"Sandal 97%"`` puts both predictions side by side).
    """
    from PIL import Image, ImageDraw, ImageFont

    path = Path(path)
    if captions is None:
        img = Image.fromarray(make_grid(images, nrow=nrow, scale=scale))
    else:
        _check_images(images, "save_grid")
        if len(captions) != len(images):
            raise ValueError(f"save_grid: {len(captions)} captions for {len(images)} images")
        font = ImageFont.load_default()
        line_h = font.getbbox("Ag")[3] + 2
        texts = [text.split("\n") if text else [] for text in captions]
        lines = max(1, max(len(t) for t in texts))
        widest = max((font.getlength(line) for t in texts for line in t), default=0.0)
        n, c, h, w = images.shape
        s = caption_scale(w, scale, widest)
        cw, ch = w * s, h * s
        # A caption strip below each image: pad the upscaled images downwards, then draw into the strip.
        strip = lines * line_h + 2
        padded = torch.full((n, c, ch + strip, cw), 255, dtype=torch.uint8)
        padded[:, :, :ch] = images.cpu().repeat_interleave(s, 2).repeat_interleave(s, 3)
        padding = 2
        grid = make_grid(padded, nrow=nrow, scale=1, padding=padding)
        img = Image.fromarray(grid)
        draw = ImageDraw.Draw(img)
        ncol = nrow or math.ceil(math.sqrt(n))
        room = cw - 2 * CAPTION_MARGIN
        for i, text in enumerate(texts):
            r, k = divmod(i, ncol)
            x0 = padding + k * (cw + padding) + CAPTION_MARGIN
            y0 = padding + r * (ch + strip + padding) + ch + 1 + (lines - len(text)) * line_h
            for j, line in enumerate(text):
                while line and font.getlength(line) > room:  # clip to the cell, margins kept
                    line = line[:-1]
                draw.text((x0, y0 + j * line_h), line, fill=(0, 0, 0), font=font)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return path
