"""Image grids (``fastad.utils.images``) and the bench plot (``fastad.bench.plot``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from PIL import Image

from fastad.bench.plot import MARKERS, bench_figure, plot_bench, styles
from fastad.utils.images import CAPTION_MARGIN, caption_scale, save_grid

PAD = 2  # make_grid's default padding, also used between captioned cells
LINE_H = 14  # PIL's default font: getbbox("Ag")[3] + 2


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 ``[n, 1, size, size]`` in [0, 200]: never the white background."""
    return torch.randint(0, 201, (n, 1, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _read(path) -> np.ndarray:
    """The PNG as a uint8 ``[H, W]`` grey array."""
    return np.asarray(Image.open(path).convert("L"))


def _layout(img: np.ndarray, n: int, ncol: int, h: int, w: int) -> tuple[int, int]:
    """Cell width and cell height (image + caption strip) of a grid of ``n`` square ``h x w`` images."""
    rows = math.ceil(n / ncol)
    cw = (img.shape[1] - PAD) // ncol - PAD
    assert img.shape[1] == PAD + ncol * (cw + PAD) and cw % w == 0
    cell_h = (img.shape[0] - PAD) // rows - PAD
    assert img.shape[0] == PAD + rows * (cell_h + PAD)
    return cw, cell_h


def test_caption_scale() -> None:
    assert caption_scale(8, 1, 30.0) == 8  # about 64 px at least
    assert caption_scale(28, 2, 40.0) == 2  # 56 px is about 64 px, and the text fits
    assert caption_scale(28, 2, 53.0) == 3  # 53 + 2 margins > 56: the next integer factor
    assert caption_scale(28, 4, 10.0) == 4  # never below the requested scale
    assert caption_scale(8, 1, 10_000.0) == math.ceil((192 + 2 * CAPTION_MARGIN) / 8)  # huge captions are clipped


@pytest.mark.parametrize("captions", [
    [f"{k}\n{k} {90 + k}%" for k in range(10)],  # digits: short captions
    ["Sneaker\nSneaker 100%" if k % 2 else "Pullover 97%" for k in range(10)],  # some cells without a target line
])
def test_small_images_are_upscaled_and_captions_keep_apart(tmp_path, captions) -> None:
    x = _images(10, 8)
    out = save_grid(tmp_path / "g.png", x, nrow=5, captions=captions)
    img = _read(out)
    cw, cell_h = _layout(img, 10, 5, 8, 8)
    assert cw >= 64  # an 8x8 image is no longer an 8-px cell
    s = cw // 8
    assert cell_h == cw + 2 * LINE_H + 2  # upscaled image, then two caption lines
    for i in range(10):
        r, k = divmod(i, 5)
        y0, x0 = PAD + r * (cell_h + PAD), PAD + k * (cw + PAD)
        # The image itself: a nearest-neighbour integer upscale.
        expect = x[i, 0].repeat_interleave(s, 0).repeat_interleave(s, 1).numpy()
        assert np.array_equal(img[y0:y0 + cw, x0:x0 + cw], expect)
        strip = img[y0 + cw:y0 + cell_h]
        assert (strip[:, x0:x0 + cw] < 128).any()  # the caption was drawn
        # A background column between this cell's caption and the next one's: the captions never touch.
        if k < 4:
            assert (strip[:, x0 + cw - CAPTION_MARGIN:x0 + cw + PAD + CAPTION_MARGIN] == 255).all()
        assert (strip[:, x0:x0 + CAPTION_MARGIN] == 255).all()


def test_overlong_captions_are_clipped_inside_their_cell(tmp_path) -> None:
    x = _images(4, 28)
    captions = ["W" * 200 + "\n" + "%" * 200] * 4
    img = _read(save_grid(tmp_path / "g.png", x, nrow=4, scale=2, captions=captions))
    cw, cell_h = _layout(img, 4, 4, 28, 28)
    assert cw == 28 * caption_scale(28, 2, 10_000.0)  # upscaled up to the widest caption allowed, no more
    strip = img[PAD + cw:PAD + cell_h]
    for k in range(4):
        x0 = PAD + k * (cw + PAD)
        assert (strip[:, x0 + CAPTION_MARGIN:x0 + cw - CAPTION_MARGIN] < 128).any()
        assert (strip[:, x0 - PAD:x0 + CAPTION_MARGIN] == 255).all()  # left margin and the gap before it
        assert (strip[:, x0 + cw - CAPTION_MARGIN:x0 + cw + PAD] == 255).all()


def test_size_unchanged_when_captions_fit(tmp_path) -> None:
    x = _images(6, 28)
    captions = ["Bag\nBag 97%", "Coat\nCoat 60%", "Dress 12%", None, "", "Shirt\nShirt 100%"]
    img = _read(save_grid(tmp_path / "c.png", x, scale=2, captions=captions))
    # 6 cells -> 3 per row, 2 rows; 28 x 2 = 56 px cells, 2-px gaps, a two-line caption strip under each.
    assert img.shape == (PAD + 2 * (56 + 2 * LINE_H + 2 + PAD), PAD + 3 * (56 + PAD))
    plain = _read(save_grid(tmp_path / "p.png", x, scale=2))
    assert plain.shape == (PAD + 2 * (56 + PAD), PAD + 3 * (56 + PAD))  # captions=None: the plain grid
    for i in range(6):  # the images are the same in both
        r, k = divmod(i, 3)
        x0 = PAD + k * (56 + PAD)
        assert np.array_equal(img[PAD + r * (56 + 2 * LINE_H + 2 + PAD):][:56, x0:x0 + 56],
                              plain[PAD + r * (56 + PAD):][:56, x0:x0 + 56])
    # Empty captions leave their strip blank.
    strip = img[PAD + 56 + 2 * LINE_H + 2 + PAD + 56:][:2 * LINE_H + 2]
    assert (strip[:, PAD:PAD + 2 * 56 + PAD] == 255).all()


def test_missing_lines_align_at_the_bottom(tmp_path) -> None:
    x = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    img = _read(save_grid(tmp_path / "g.png", x, nrow=2, scale=3, captions=["Sandal\nSandal 97%", "Sandal 97%"]))
    cw = 84
    strip = img[PAD + cw:PAD + cw + 2 * LINE_H + 2]
    left, right = strip[:, PAD:PAD + cw], strip[:, PAD + cw + PAD:PAD + 2 * cw + PAD]
    assert (left[:LINE_H] < 128).any() and (right[:LINE_H] == 255).all()  # no target line on the right
    assert np.array_equal(left[LINE_H:], right[LINE_H:])  # both predictions on the same row


def test_caption_count_and_dtype_checked(tmp_path) -> None:
    with pytest.raises(ValueError, match="2 captions for 3 images"):
        save_grid(tmp_path / "g.png", _images(3, 8), captions=["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        save_grid(tmp_path / "g.png", torch.zeros(3, 1, 8, 8), captions=["a", "b", "c"])
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file


# The bench plot.

METHODS = ["none", "deepinversion", "x0", "x0-routed", "x0-routed-smooth", "cadr", "cadr-routed", "cadr-full",
           "fast-dfkd", "views", "views-routed", "real-kd"]
SWEEP = ["cadr-25", "cadr-50"]


def _result() -> dict:
    """A synthetic bench result: two settings, the teacher, 12 methods x 2 comparisons, 2 sweep rows."""
    rows = []
    for s, setting in enumerate(("in-domain", "out-of-domain")):
        rows.append({"setting": setting, "method": "teacher", "comparison": "-", "top1_mean": 92.0 - s,
                     "top1_std": 0.0})
        for i, method in enumerate([*METHODS, *SWEEP]):
            for comparison in ("images",) if method in SWEEP else ("images", "time"):
                rows.append({"setting": setting, "method": method, "comparison": comparison,
                             "top1_mean": 40.0 + 3 * i - 5 * s + (comparison == "time"), "top1_std": 0.5 * (i % 3),
                             "wall_seconds": 10.0 * (1 + i) * (2 if comparison == "time" else 1)})
    return {"settings": {"in-domain": {}, "out-of-domain": {}}, "rows": rows}


def test_styles_distinct() -> None:
    st = styles(METHODS)
    assert list(st) == METHODS
    assert len(set(st.values())) == len(METHODS) and len({c for c, _ in st.values()}) == len(METHODS)
    assert st["none"][0] != st["x0-routed-smooth"][0]
    assert all(m in MARKERS for _, m in st.values())
    many = styles(f"m{i}" for i in range(100))
    assert len(set(many.values())) == 100
    assert styles(["a", "b", "a"]) == styles(["a", "b"])


def test_plot_bench(tmp_path) -> None:
    result = _result()
    path = tmp_path / "bench.png"
    plot_bench(result, path, skip=SWEEP)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["bench.png"]

    fig = bench_figure(result, skip=SWEEP)
    axes = fig.axes[:2]
    assert [ax.get_title() for ax in axes] == ["in-domain", "out-of-domain"]
    st = styles(METHODS)
    for ax in axes:
        seen: dict[str, tuple[str, str]] = {}
        for container in ax.containers:
            method, comparison = container.get_label().rsplit(" (", 1)
            comparison = comparison.rstrip(")")
            line = container.lines[0]
            colour, marker = to_hex(line.get_color()), line.get_marker()
            assert seen.setdefault(method, (colour, marker)) == (colour, marker) == st[method]
            face = line.get_markerfacecolor()
            assert (face == "none") == (comparison == "images")
            if comparison == "time":
                assert to_hex(face) == colour
        assert sorted(seen) == sorted(METHODS)  # all 12 methods, no sweep row, no teacher point
        assert len(ax.containers) == 2 * len(METHODS)
        assert len(set(seen.values())) == len(METHODS)  # a distinct (colour, marker) per method
    labels = [t.get_text() for t in axes[-1].get_legend().get_texts()]
    assert labels[:len(METHODS)] == METHODS and "teacher" in labels and not set(SWEEP) & set(labels)
