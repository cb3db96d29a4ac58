"""A quicklook PNG of a label array: nearest-downsampled, coloured by class, with a legend."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from segpipe.pipeline.io.zarrstore import open_array
from segpipe.pipeline.storage import publish

NODATA_RGB = (0, 0, 0)


def downsampled_labels(labels_path: str | os.PathLike[str], max_side: int) -> np.ndarray:
    """Every ``step``-th label (nearest), read one chunk row at a time."""
    labels = open_array(labels_path, mode="r")
    height, width = labels.shape
    step = max(1, math.ceil(max(height, width) / max_side))
    rows = []
    chunk = labels.chunks[0]
    for r0 in range(0, height, chunk):
        first = r0 + (-r0) % step
        if first < min(r0 + chunk, height):
            rows.append(np.asarray(labels[first : min(r0 + chunk, height) : step, ::step]))
    return np.concatenate(rows)


def write_quicklook(
    labels_path: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    class_names: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
    nodata: int,
    max_side: int = 1024,
) -> None:
    """Write a PNG of at most ``max_side`` pixels a side plus a legend strip beneath, atomically."""
    small = downsampled_labels(labels_path, max_side)
    palette = np.zeros((nodata + 1, 3), np.uint8)
    palette[: len(colors)] = colors
    palette[nodata] = NODATA_RGB
    rgb = palette[np.minimum(small, nodata)]
    line = 18
    legend_h = line * (len(class_names) + 1) + 6
    canvas = Image.new("RGB", (max(rgb.shape[1], 220), rgb.shape[0] + legend_h), "white")
    canvas.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = rgb.shape[0] + 4
    for name, color in [*zip(class_names, colors), ("nodata", NODATA_RGB)]:
        draw.rectangle([6, y + 2, 20, y + 14], fill=tuple(color), outline="black")
        draw.text((28, y + 2), name, fill="black")
        y += line
    with publish(os.fspath(out_png)) as partial:
        canvas.save(partial, format="PNG")
