"""The quicklook: the input at a bounded size, the classes over it, a legend and a scale bar.

:func:`write_quicklook` writes one RGBA PNG, atomically:

* the image: read from the input's own pyramid by :func:`~segpipe.pipeline.io.overview.
  read_overview` (the coarsest level at least ``max_side`` pixels long, every ``step``-th pixel
  of it; never the whole image at full resolution, and for slides never the label or macro
  images), stretched per band between its 2nd and 98th percentiles over valid pixels. Three
  display bands are shown as RGB, one as grey (:func:`display_bands` picks them). Pixels whose
  display bands are all nodata (the nodata value, NaN or ±inf) are transparent (alpha 0);
* the classes: each pixel of a class is blended with the class colour,
  ``(1 - alpha) * image + alpha * colour`` (alpha 0.45), the labels read nearest from the label
  array (rows and columns of the overview mapped to the label grid, chunk row by chunk row);
  nodata labels are not coloured;
* the instances, when the spec names an instance id array (a run with instance labels: on by
  default, since the outlines show at a glance whether touching objects were split): ids read
  at the quicklook's decimation exactly as the labels (:func:`sampled_labels`, never the full
  resolution), and a thin dark line on every pixel whose id differs from that of its right or
  lower neighbour (:func:`instance_outlines`). Where objects are a few quicklook pixels across
  (a whole slide's nuclei at 1/60), lines would cover them and hide the classes: outlines are
  then left out (more than half of the instances' pixels would be line), and
  :attr:`Quicklook.outlined` says so;
* beneath, on white: one legend line per class present (colour, name, area, share) and a scale
  bar of a round length (1, 2 or 5 × 10ⁿ m, km, µm or mm) when the pixel size is known in a
  length unit (not for geographic CRSs in degrees).

Nothing of the input's metadata is copied into the PNG (no text chunks, no image description).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segpipe.pipeline.io.base import RasterInfo, open_raster
from segpipe.pipeline.io.overview import Overview, read_overview
from segpipe.pipeline.io.pyramid import level_pixel_sizes, raster_unit_in_meters
from segpipe.pipeline.io.readeroptions import ReaderOptions
from segpipe.pipeline.io.zarrstore import open_array
from segpipe.pipeline.legend import LegendEntry
from segpipe.pipeline.normalize import invalid_values
from segpipe.pipeline.storage import publish

__all__ = [
    "ALPHA",
    "MAX_SIDE",
    "Quicklook",
    "QuicklookSpec",
    "ScaleBar",
    "display_bands",
    "drawable_text",
    "instance_outlines",
    "legend_font",
    "nice_length",
    "sampled_labels",
    "scale_bar",
    "stretch",
    "write_quicklook",
]

MAX_SIDE = 1536  # longest side of the image part, in pixels
ALPHA = 0.45  # opacity of the class colours
PERCENTILES = (2.0, 98.0)  # the stretch, per band, over valid pixels
RGB_NAMES = ("red", "green", "blue")
#: zlib level of the PNG: 1 writes a 1536² quicklook twice as fast as the default 6, ~9 % larger
PNG_LEVEL = 1
OUTLINE = (0, 0, 0)  # the colour of instance outlines
#: outlines are drawn when at most this share of the instances' pixels would be line
OUTLINE_MAX_SHARE = 0.5

_PAD, _LINE, _SWATCH, _FONT_SIZE, _MIN_WIDTH = 8, 20, 14, 13, 240


@dataclass(frozen=True)
class QuicklookSpec:
    """What to draw: the input, its labels, the classes and the display settings.

    ``classes`` lists every class in label order (their colours colour the labels); the legend
    shows those :attr:`LegendEntry.present`. ``nodata`` is the input's nodata value as the run
    used it (None: the file's own); ``bands`` are the 0-based display bands (three: RGB, one:
    grey; None: :func:`display_bands` of the file's channel names).
    """

    input: str
    labels_path: str
    classes: tuple[LegendEntry, ...]
    label_nodata: int
    nodata: float | None = None
    bands: tuple[int, ...] | None = None
    max_side: int = MAX_SIDE
    alpha: float = ALPHA
    preview: str | None = None  # level 0's decimation kept by the ingest (io/preview.py)
    instances_path: str | None = None  # instance ids on the labels' grid: outlines drawn
    reader: ReaderOptions = field(default_factory=ReaderOptions)  # how the run read the input


@dataclass(frozen=True)
class ScaleBar:
    """A bar ``pixels`` long standing for ``length`` ``unit`` (e.g. 500 m)."""

    length: float
    unit: str
    pixels: int

    @property
    def text(self) -> str:
        """``500 m``, ``2 mm``, ``0.5 µm``."""
        return f"{self.length:g} {self.unit}"


@dataclass(frozen=True)
class Quicklook:
    """What was written: the PNG, where its pixels come from, and what the legend lists.

    The image part is the top-left ``shape`` of the PNG; its pixel ``(i, j)`` is pixel
    ``(i * step, j * step)`` of pyramid level ``level`` of the input.
    """

    path: Path
    level: int
    step: int
    shape: tuple[int, int]
    bands: tuple[int, ...]
    legend: tuple[LegendEntry, ...]
    scale_bar: ScaleBar | None = field(default=None)
    outlined: bool = False  # whether instance outlines were drawn


def display_bands(
    channel_names: Sequence[str] | None,
    selected: Sequence[int],
    card_band_names: Sequence[str] | None = None,
) -> tuple[int, ...]:
    """The 0-based input bands to show: red, green, blue when named, else three, else one.

    ``selected`` are the bands the model reads (in the card's order). Red, green and blue are
    looked up first among the card's band names (mapped through ``selected``), then among the
    input's channel names; otherwise the first three selected bands, or the first as grey.
    """
    if card_band_names is not None and len(card_band_names) == len(selected):
        names = [n.lower() for n in card_band_names]
        if all(n in names for n in RGB_NAMES):
            return tuple(int(selected[names.index(n)]) for n in RGB_NAMES)
    if channel_names:
        names = [str(n).lower() for n in channel_names]
        if all(n in names for n in RGB_NAMES):
            return tuple(names.index(n) for n in RGB_NAMES)
    return tuple(int(b) for b in selected[:3]) if len(selected) >= 3 else (int(selected[0]),)


def stretch(pixels: np.ndarray, nodata: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(bands, h, w) pixels → 0..255 float32 per band by percentiles, and the valid-pixel mask.

    Each band maps its 2nd..98th percentile over valid values to 0..255 (clipped); a constant
    band becomes mid-grey. A value is invalid when it equals ``nodata`` or is not finite; a
    pixel is valid unless all its bands are invalid. Invalid values become 0.
    """
    invalid = invalid_values(pixels, nodata)
    if np.issubdtype(pixels.dtype, np.floating):
        invalid = ~np.isfinite(pixels) if invalid is None else invalid | ~np.isfinite(pixels)
    out = np.zeros(pixels.shape, np.float32)
    for b in range(pixels.shape[0]):
        good = np.ones(pixels.shape[1:], bool) if invalid is None else ~invalid[b]
        if not good.any():
            continue
        lo, hi = np.percentile(pixels[b][good], PERCENTILES)
        if hi <= lo:
            lo, hi = lo - 0.5, lo + 0.5
        band = pixels[b].astype(np.float32)
        band -= np.float32(lo)
        band *= np.float32(255.0 / (hi - lo))
        np.clip(band, 0.0, 255.0, out=band)
        out[b] = np.where(good, band, np.float32(0))
    valid = np.ones(pixels.shape[1:], bool) if invalid is None else ~invalid.all(axis=0)
    return out, valid


def _label_index(count: int, step: int, level_size: int, label_size: int) -> np.ndarray:
    """Label rows (or columns) under ``count`` overview rows: nearest, by pixel centres."""
    centres = (np.arange(count, dtype=np.float64) * step + 0.5) * label_size / level_size
    return np.minimum(centres.astype(np.int64), label_size - 1)


def sampled_labels(
    labels_path: str | os.PathLike[str], level_shape: tuple[int, int], step: int,
    shape: tuple[int, int],
) -> np.ndarray:
    """The labels under an overview of ``shape`` (every ``step``-th pixel of ``level_shape``).

    The label array may be on another pyramid level than the overview: rows and columns are
    mapped by the ratio of the sizes (identity when they are equal). Read one chunk row at a
    time, only the selected rows and columns.
    """
    labels = open_array(labels_path, mode="r")
    height, width = labels.shape
    rows = _label_index(shape[0], step, level_shape[0], height)
    cols = _label_index(shape[1], step, level_shape[1], width)
    out = np.empty(shape, labels.dtype)
    chunk = labels.chunks[0]
    for r0 in range(0, height, chunk):
        lo, hi = np.searchsorted(rows, [r0, r0 + chunk])
        if hi > lo:
            out[lo:hi] = labels.get_orthogonal_selection((rows[lo:hi], cols))
    return out


def nice_length(limit: float) -> float:
    """The largest 1, 2 or 5 × 10ⁿ not above ``limit`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(limit))
    for mantissa in (5, 2, 1):
        if mantissa * power <= limit * (1 + 1e-9):
            return float(f"{mantissa * power:.12g}")
    return float(f"{power:.12g}")


def scale_bar(info: RasterInfo, step: int, width: int) -> ScaleBar | None:
    """A round scale bar at most a quarter of ``width`` overview pixels, when the size is known.

    Metres or kilometres for georeferenced inputs, micrometres or millimetres for microscopy.
    The bar is horizontal: it uses the pixel width.
    """
    sizes, unit_m = level_pixel_sizes(info), raster_unit_in_meters(info)
    if sizes is None or unit_m is None or width < 4:
        return None
    pixel = sizes[min(info.level, len(sizes) - 1)][1] * unit_m * step
    longest = pixel * width / 4
    if info.pixel_unit is not None and info.crs_wkt is None:
        unit, size = ("mm", 1e-3) if longest >= 1e-3 else ("µm", 1e-6)
    else:
        unit, size = ("km", 1e3) if longest >= 1e3 else ("m", 1.0)
    length = nice_length(longest / size)
    return ScaleBar(length, unit, max(1, round(length * size / pixel)))


def _overlay(
    rgb: np.ndarray, valid: np.ndarray, labels: np.ndarray, spec: QuicklookSpec
) -> np.ndarray:
    """(h, w, 4) uint8: the stretched image blended with the class colours, nodata transparent."""
    colors = np.array([c.color for c in spec.classes], np.float32).reshape(-1, 3)
    image = rgb.transpose(1, 2, 0)
    classed = (labels < len(colors)) & (labels != spec.label_nodata)
    lut = np.zeros((max(int(labels.max(initial=0)) + 1, len(colors)), 3), np.float32)
    lut[: len(colors)] = colors
    # whole arrays rather than masked selections (3× faster): alpha 0 leaves a pixel as it is
    alpha = np.where(classed, np.float32(spec.alpha), np.float32(0))[..., None]
    blended = (1 - alpha) * image + alpha * lut[labels]
    out = np.zeros((*labels.shape, 4), np.uint8)
    out[..., :3] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[..., 3] = np.where(valid, 255, 0)
    out[~valid, :3] = 0
    return out


def instance_outlines(ids: np.ndarray) -> np.ndarray:
    """Pixels whose id differs from their right or lower neighbour's: 1-px lines between ids.

    Every boundary between two ids (or an id and background) is marked once, on the pixel
    above or left of it, so lines stay one pixel wide where objects touch.
    """
    edge = np.zeros(ids.shape, bool)
    edge[:, :-1] = ids[:, :-1] != ids[:, 1:]
    edge[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return edge


def _outline(image: np.ndarray, spec: QuicklookSpec, view: Overview) -> bool:
    """Draw the instances' outlines on ``image`` (h, w, 4) in place; whether they were drawn."""
    if spec.instances_path is None:
        return False
    ids = sampled_labels(spec.instances_path, view.info.shape, view.step, view.shape)
    edge = instance_outlines(ids)
    inside = ids > 0
    if not inside.any() or (edge & inside).sum() > OUTLINE_MAX_SHARE * inside.sum():
        return False
    edge &= image[..., 3] > 0  # nodata stays transparent
    image[edge, :3] = OUTLINE
    return True


@cache
def legend_font() -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, bool]:
    """DejaVu Sans when the system has it (µ, ²), else Pillow's own font (ASCII text)."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", _FONT_SIZE), True
    except OSError:
        return ImageFont.load_default(_FONT_SIZE), False


def drawable_text(text: str) -> str:
    """``text`` as the legend font draws it (µ → u and ² → 2 with Pillow's own font)."""
    _, unicode_ok = legend_font()
    return text if unicode_ok else text.translate(str.maketrans("µ²", "u2"))


def _panel_size(legend: Sequence[LegendEntry], bar: ScaleBar | None) -> tuple[int, int]:
    font, _ = legend_font()
    widths = [font.getlength(drawable_text(e.text)) for e in legend]
    if bar is not None:
        widths.append(bar.pixels + font.getlength(drawable_text(bar.text)) + 8)
    width = _PAD * 2 + _SWATCH + 8 + int(max(widths, default=0)) + 1
    lines = len(legend) + (bar is not None)
    return max(width, _MIN_WIDTH), _PAD * 2 + _LINE * max(lines, 1)


def _draw_panel(
    canvas: Image.Image, top: int, legend: Sequence[LegendEntry], bar: ScaleBar | None
) -> None:
    draw = ImageDraw.Draw(canvas)
    font, _ = legend_font()
    y = top + _PAD
    for entry in legend:
        draw.rectangle([_PAD, y + 2, _PAD + _SWATCH, y + 2 + _SWATCH], fill=(*entry.color, 255),
                       outline=(0, 0, 0, 255))
        draw.text((_PAD + _SWATCH + 8, y + 2), drawable_text(entry.text), fill=(0, 0, 0, 255),
                  font=font)
        y += _LINE
    if bar is not None:
        draw.rectangle([_PAD, y + 6, _PAD + bar.pixels - 1, y + 11], fill=(0, 0, 0, 255))
        draw.text((_PAD + bar.pixels + 8, y + 2), drawable_text(bar.text), fill=(0, 0, 0, 255),
                  font=font)


def write_quicklook(spec: QuicklookSpec, out_png: str | os.PathLike[str]) -> Quicklook:
    """Write the quicklook of ``spec`` to ``out_png`` (atomically); what it shows."""
    bands = spec.bands
    if bands is None:
        with open_raster(spec.input, options=spec.reader) as reader:
            info = reader.info
        bands = display_bands(info.channel_names, range(info.bands))
    view: Overview = read_overview(spec.input, spec.max_side, bands=bands, preview=spec.preview,
                                   options=spec.reader)
    nodata = spec.nodata if spec.nodata is not None else view.info.nodata
    values, valid = stretch(view.pixels, nodata)
    if values.shape[0] != 3:
        values = np.repeat(values[:1], 3, axis=0)
    labels = sampled_labels(spec.labels_path, view.info.shape, view.step, view.shape)
    image = _overlay(values, valid, labels, spec)
    outlined = _outline(image, spec, view)
    legend = tuple(e for e in spec.classes if e.present)
    bar = scale_bar(view.info, view.step, view.shape[1])
    panel_w, panel_h = _panel_size(legend, bar)
    height, width = view.shape
    canvas = Image.new("RGBA", (max(width, panel_w), height + panel_h), (255, 255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    _draw_panel(canvas, height, legend, bar)
    with publish(os.fspath(out_png)) as partial:
        canvas.save(partial, format="PNG", compress_level=PNG_LEVEL)
    return Quicklook(Path(out_png), view.info.level, view.step, view.shape, tuple(bands),
                     legend, bar, outlined)
