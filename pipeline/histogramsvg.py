"""The histogram of instance areas as an inline SVG figure of the HTML report.

Inline SVG rather than a PNG like the class bar chart: a few dozen rectangles, sharp at any
zoom, and each bar carries what it stands for (``data-count``, ``data-low``, ``data-high`` and a
``<title>`` tooltip), so the figure can be read back exactly. The bins are log-spaced
(:func:`segpipe.pipeline.instances.histogram.log_bins`), hence equally wide on the page: the
x axis is logarithmic, labelled at its two ends and in the middle. No script, no external
resource: the page stays self-contained.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from segpipe.pipeline.legend import number_text

__all__ = ["histogram_svg", "unit_text"]

_WIDTH, _HEIGHT = 640, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 12, 44
_FILL, _STROKE = "#4a78b5", "#1f3b60"


def unit_text(unit: str | None) -> str:
    """``um2`` → ``µm²``, ``m2`` → ``m²``; ``px`` (or nothing) → ``px``."""
    return {"m2": "m²", "um2": "µm²"}.get(unit or "", unit or "px")


def _text(x: float, y: float, text: str, anchor: str = "middle") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="12">'
            f"{html.escape(text)}</text>")


def _bar(x: float, width: float, height: float, count: int, low: float, high: float,
         unit: str) -> str:
    y = _TOP + (_HEIGHT - _TOP - _BOTTOM) - height
    noun = "instance" if count == 1 else "instances"
    tip = f"{count:,} {noun} of {number_text(low)} to {number_text(high)} {unit}"
    return (f'<rect class="bar" x="{x:.2f}" y="{y:.4f}" width="{width:.2f}" '
            f'height="{height:.4f}" fill="{_FILL}" stroke="{_STROKE}" stroke-width="0.5" '
            f'data-count="{count}" data-low="{low!r}" data-high="{high!r}">'
            f"<title>{html.escape(tip)}</title></rect>")


def histogram_svg(edges: Sequence[float], counts: Sequence[int], unit: str | None) -> str:
    """An ``<svg>`` element: one bar per bin, as tall as its count, on a log area axis.

    ``edges`` has one more value than ``counts`` (numpy.histogram's convention).
    """
    shown = unit_text(unit)
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM
    top = max(counts, default=0) or 1
    step = plot_w / max(len(counts), 1)
    bars = [_bar(_LEFT + i * step, step, plot_h * n / top, int(n), float(edges[i]),
                 float(edges[i + 1]), shown) for i, n in enumerate(counts)]
    base = _TOP + plot_h
    middle = len(counts) // 2
    labels = [
        _text(_LEFT, base + 16, number_text(float(edges[0]))),
        _text(_LEFT + middle * step, base + 16, number_text(float(edges[middle]))),
        _text(_LEFT + plot_w, base + 16, number_text(float(edges[-1]))),
        _text(_LEFT + plot_w / 2, base + 36, f"instance area ({shown}, log scale)"),
        _text(_LEFT - 6, _TOP + 10, f"{top:,}", anchor="end"),
        _text(_LEFT - 6, base, "0", anchor="end"),
    ]
    axes = (f'<line x1="{_LEFT}" y1="{base}" x2="{_LEFT + plot_w}" y2="{base}" stroke="#000"/>'
            f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{base}" stroke="#000"/>')
    total = sum(int(n) for n in counts)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
            f'viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="histogram of the areas '
            f'of {total:,} instances">' + "".join(bars) + axes + "".join(labels) + "</svg>")
