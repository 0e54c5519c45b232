"""``bench.png``: student top-1 against wall-clock seconds, one panel per setting.

Every method keeps one colour and one marker shape in all panels (:func:`styles`); the marker is
filled for the ``time`` comparison (equal synthesis + training budget) and open for ``images`` (equal
image count). The teacher is a dashed grey line; error bars are the std over seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Collection, Iterable

from fastad.utils.io import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MARKERS", "styles", "bench_figure", "plot_bench"]

# 11 shapes that can be drawn filled or open; 11 is coprime with the 20 tab20 colours, so the
# (colour, marker) pairs of the first 220 methods are all distinct (and the colours of the first 20).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "p", "h", "<", ">")


def _palette() -> list[str]:
    """The 20 tab20 colours as hex strings, the 10 dark shades first, then the 10 light ones."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    tab20 = colormaps["tab20"]
    return [to_hex(tab20(i)) for i in (*range(0, 20, 2), *range(1, 20, 2))]


def styles(methods: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``method -> (colour, marker)`` in order of first appearance (repeats ignored): the ``i``-th
    method gets tab20 colour ``i mod 20`` (dark shades first) and marker ``MARKERS[i mod 11]``, so every
    method of up to 220 has its own pair."""
    palette = _palette()
    out: dict[str, tuple[str, str]] = {}
    for method in methods:
        if method not in out:
            i = len(out)
            out[method] = (palette[i % len(palette)], MARKERS[i % len(MARKERS)])
    return out


def _plotted(result: dict, skip: Collection[str]) -> list[dict]:
    """The rows that get a point: not the teacher, not in ``skip``, with a wall time and a mean."""
    return [r for r in result["rows"] if r["method"] != "teacher" and r["method"] not in skip
            and r.get("wall_seconds") is not None and r.get("top1_mean") is not None]


def bench_figure(result: dict, *, skip: Collection[str] = ()) -> "Figure":
    """The bench plot as a matplotlib ``Figure`` with one axes per ``result["settings"]`` key.

    ``result["rows"]``: dicts with ``setting``, ``method``, ``comparison`` (``"images"``, ``"time"``,
    or ``"-"`` for the teacher), ``top1_mean``, ``top1_std`` and (not the teacher) ``wall_seconds``.
    Each plotted row is one ``errorbar`` whose container is labelled ``"<method> (<comparison>)"``;
    rows whose method is in ``skip`` are left out. The legend names every method once, plus what
    filled and open markers mean.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    settings = list(result["settings"])
    rows = _plotted(result, skip)
    style = styles(r["method"] for r in rows)
    fig = Figure(figsize=(6.5 * len(settings), 4.8))
    axes = fig.subplots(1, len(settings), squeeze=False)[0]
    has_teacher = False
    for ax, setting in zip(axes, settings):
        teacher = [r for r in result["rows"] if r["setting"] == setting and r["method"] == "teacher"
                   and r.get("top1_mean") is not None]
        if teacher:
            has_teacher = True
            ax.axhline(teacher[0]["top1_mean"], color="grey", ls="--", lw=1)
        for r in (r for r in rows if r["setting"] == setting):
            colour, marker = style[r["method"]]
            filled = r["comparison"] == "time"
            ax.errorbar(r["wall_seconds"], r["top1_mean"], yerr=r.get("top1_std") or None, fmt=marker, ms=7,
                        color=colour, mec=colour, mfc=colour if filled else "none", capsize=2,
                        label=f"{r['method']} ({r['comparison']})")
        ax.set_xscale("log")
        ax.set_xlabel("wall-clock seconds per run (synthesis + training + evaluation)")
        ax.set_ylabel("student top-1 (%)")
        ax.set_title(setting)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], ls="none", marker=m, ms=7, color=c, label=method) for method, (c, m) in style.items()]
    if has_teacher:
        handles.append(Line2D([], [], color="grey", ls="--", lw=1, label="teacher"))
    handles += [Line2D([], [], ls="none", marker="o", ms=7, color="black", label="filled: equal time"),
                Line2D([], [], ls="none", marker="o", ms=7, color="black", mfc="none", label="open: equal images")]
    axes[-1].legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5),
                    ncol=1 if len(handles) <= 24 else 2)
    fig.tight_layout()
    return fig


def plot_bench(result: dict, path: Path, *, skip: Collection[str] = ()) -> None:
    """Write :func:`bench_figure` ``(result, skip=skip)`` to ``path`` (PNG, 110 dpi; atomic)."""
    fig = bench_figure(result, skip=skip)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
