"""Pyramid levels: choosing one to read, deriving its metadata, and building them for outputs.

Reading: every reader fills :attr:`RasterInfo.levels` with the (height, width) of each level;
:func:`choose_level` picks the level asked for by index or by pixel size and
:func:`info_at_level` derives that level's :class:`RasterInfo` from the level-0 one (what the
readers report when opened at that level), so a planner opens the raster once.

Writing: output pyramids are derived from the stored level 0 by nearest downsampling with the
top-left convention, level ``i`` = ``level0[::2**i, ::2**i]`` (labels are categories and are never
averaged). Its shape is ``ceil(h / 2**i) × ceil(w / 2**i)``; the pixel ``k`` of level ``i`` is
pixel ``k * 2**i`` of level 0, so the level's pixel size is exactly ``2**i`` times level 0's with
no offset, and ``level[i+1] == level[i][::2, ::2]``. :func:`pyramid_shapes` lists the levels (by
factors of 2 until one tile holds the level) and :func:`read_nearest` reads rows of any level
straight from a level-0 array without reading the rest of it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from segpipe.models.foundation import InputError
from segpipe.pipeline.io.base import RasterInfo

if TYPE_CHECKING:
    from segpipe.models.card import ModelCard
    from segpipe.pipeline.options import SourceOptions

__all__ = [
    "check_level",
    "choose_input_level",
    "choose_level",
    "info_at_level",
    "iter_strips",
    "iter_tiles",
    "level_pixel_sizes",
    "level_scale",
    "open_stored",
    "pixel_size_in_meters",
    "pyramid_shapes",
    "raster_unit_in_meters",
    "read_nearest",
]

# ----------------------------------------------------------------------------------- reading


def level_scale(base: tuple[int, int], level: tuple[int, int]) -> tuple[float, float]:
    """How many times coarser (y, x) a level of shape ``level`` is than ``base``.

    When an integer factor ``f`` explains the shape (``ceil`` or ``floor`` of ``base / f`` on
    both axes, as pyramid writers do) that factor is exact; otherwise the size ratios.
    """
    ratio_y, ratio_x = base[0] / level[0], base[1] / level[1]
    factor = round(math.sqrt(ratio_y * ratio_x))
    if factor >= 1:
        floor = (base[0] // factor, base[1] // factor)
        ceil = (-(-base[0] // factor), -(-base[1] // factor))
        if tuple(level) in (floor, ceil):
            return float(factor), float(factor)
    return ratio_y, ratio_x


def check_level(path: str, levels: Sequence[tuple[int, int]], level: int) -> None:
    """Raise :class:`InputError`, listing the levels, unless ``level`` is one of ``levels``."""
    if not 0 <= level < len(levels):
        raise InputError(
            f"--level {level} does not exist in {path}: it has levels 0..{len(levels) - 1} "
            f"({', '.join(f'{w}x{h}' for h, w in levels)})"
        )


def info_at_level(info: RasterInfo, level: int) -> RasterInfo:
    """The :class:`RasterInfo` of pyramid level ``level``, from the level-0 ``info`` alone.

    The same computation the readers do (they call this): the level's shape from
    ``info.levels``; transform and pixel size scaled by how much coarser the level is. GDAL
    georeferences an overview by its size ratio to level 0 on each axis; other pyramids by the
    integer factor that explains the shape (:func:`level_scale`). A reader whose levels declare
    their own pixel size (OME-Zarr's scale transforms) lists them in
    ``info.extra["level_pixel_sizes"]``, and those are used. Raises :class:`InputError` listing
    the levels when ``level`` does not exist.
    """
    if info.level != 0:
        raise ValueError(f"info_at_level needs the level-0 info, got level {info.level}")
    levels = info.levels or ((info.height, info.width),)
    check_level(info.path, levels, level)
    if level == 0:
        return info
    height, width = levels[level]
    if info.format == "gdal":  # each axis by its own size ratio, as GDAL does
        derived = info.with_level(level, height, width, levels[0][0] / height,
                                  levels[0][1] / width)
    else:
        derived = info.with_level(level, height, width,
                                  level_scale(levels[0], levels[level])[1])
    declared = info.extra.get("level_pixel_sizes")
    if declared is not None and len(declared) == len(levels):
        derived = replace(derived, pixel_size=declared[level])
    return derived


def level_pixel_sizes(info: RasterInfo) -> tuple[tuple[float, float], ...] | None:
    """Pixel size (y, x) of every level in the raster's own units, or None when it has none.

    Microscopy rasters use ``info.pixel_size`` (in ``info.pixel_unit``); georeferenced rasters
    the transform's pixel size (in CRS units). Levels scale by their size ratio to level 0.
    """
    levels = info.levels or ((info.height, info.width),)
    here = levels[info.level] if info.level < len(levels) else (info.height, info.width)
    if info.pixel_size is not None:
        py, px = info.pixel_size
    elif info.transform is not None:
        a, b, _, d, e, _ = info.transform
        py, px = math.hypot(b, e), math.hypot(a, d)
    else:
        return None
    # back to level 0, then out to every level
    sy, sx = level_scale(levels[0], here)
    base_y, base_x = py / sy, px / sx
    scales = [level_scale(levels[0], shape) for shape in levels]
    return tuple((base_y * fy, base_x * fx) for fy, fx in scales)


def raster_unit_in_meters(info: RasterInfo) -> float | None:
    """Metres per unit of the raster's pixel size: its length unit, or a projected CRS's unit.

    None when unknown (no unit, a geographic CRS in degrees, or neither CRS nor unit).
    """
    from segpipe.pipeline.io.units import unit_in_meters

    if info.pixel_unit:
        return unit_in_meters(info.pixel_unit)
    if info.crs_wkt:
        from rasterio.crs import CRS

        crs = CRS.from_wkt(info.crs_wkt)
        return crs.linear_units_factor[1] if crs.is_projected else None
    return None


def pixel_size_in_meters(info: RasterInfo) -> float | None:
    """The pixel size of the raster's current level in metres (geometric mean of y and x).

    None when the raster has no pixel size or its unit is not a known length.
    """
    sizes = level_pixel_sizes(info)
    unit = raster_unit_in_meters(info)
    if sizes is None or unit is None:
        return None
    py, px = sizes[min(info.level, len(sizes) - 1)]
    return math.sqrt(py * px) * unit


def choose_input_level(
    source: SourceOptions, info: RasterInfo, card: ModelCard | None
) -> int:
    """The pyramid level to read: ``--level``, ``--pixel-size``, else the card's pixel size.

    The card's pixel size (in its own length unit) is used only for inputs with several levels
    whose pixel size is in a known length unit too; otherwise level 0.
    """
    from segpipe.pipeline.io.units import unit_in_meters

    if source.level is not None or source.pixel_size is not None:
        return choose_level(info, level=source.level, pixel_size=source.pixel_size)
    if card is None or card.pixel_size is None or len(info.levels) < 2:
        return 0
    card_m = unit_in_meters(card.pixel_size_unit)
    input_m = raster_unit_in_meters(info)
    if card_m is None or input_m is None:
        return 0
    return choose_level(info, level=None, pixel_size=card.pixel_size * card_m / input_m)


def _describe_levels(info: RasterInfo) -> str:
    levels = info.levels or ((info.height, info.width),)
    sizes = level_pixel_sizes(info)
    unit = info.pixel_unit or ("CRS units" if info.transform is not None else "")
    parts = []
    for i, (h, w) in enumerate(levels):
        text = f"{i}: {w}x{h}"
        if sizes is not None:
            text += f" ({math.sqrt(sizes[i][0] * sizes[i][1]):.4g} {unit}/px)".replace(" /", "/")
        parts.append(text)
    return "; ".join(parts)


def choose_level(info: RasterInfo, *, level: int | None, pixel_size: float | None) -> int:
    """The pyramid level to read: ``level`` itself, or the one closest to ``pixel_size``.

    ``pixel_size`` is in the raster's units (``info.pixel_unit`` for microscopy, CRS units for
    georeferenced rasters); closeness is measured on a log scale (the ratio to the request) and
    ties go to the finer level. With neither given, level 0. Raises :class:`InputError`, listing
    the levels, when the level does not exist, both are given, or the raster has no pixel size.
    """
    levels = info.levels or ((info.height, info.width),)
    if level is not None and pixel_size is not None:
        raise InputError("give --level or --pixel-size, not both")
    if level is not None:
        if not 0 <= level < len(levels):
            raise InputError(
                f"--level {level} does not exist in {info.path}: its levels are "
                f"{_describe_levels(info)}"
            )
        return level
    if pixel_size is None:
        return 0
    if not (pixel_size > 0 and math.isfinite(pixel_size)):
        raise InputError(f"--pixel-size must be a positive number, got {pixel_size}")
    sizes = level_pixel_sizes(info)
    if sizes is None:
        raise InputError(
            f"--pixel-size {pixel_size}: {info.path} has no pixel size; choose one of its "
            f"levels with --level instead: {_describe_levels(info)}"
        )
    distances = [abs(math.log(math.sqrt(py * px) / pixel_size)) for py, px in sizes]
    best = min(distances)
    return next(i for i, d in enumerate(distances) if d <= best * (1 + 1e-9) + 1e-12)


# ----------------------------------------------------------------------------------- writing


def pyramid_shapes(height: int, width: int, tile: int) -> tuple[tuple[int, int], ...]:
    """(height, width) of the nearest pyramid levels, halving until a level fits in one tile."""
    if tile < 1:
        raise InputError(f"tile must be a positive number of pixels, got {tile}")
    shapes = [(height, width)]
    factor = 1
    while max(shapes[-1]) > tile:
        factor *= 2
        shapes.append((math.ceil(height / factor), math.ceil(width / factor)))
    return tuple(shapes)


def read_nearest(array: Any, factor: int, row_start: int, row_stop: int) -> np.ndarray:
    """Rows ``[row_start, row_stop)`` of the nearest level ``factor`` of a level-0 array.

    ``array`` is (…, H, W) (a Zarr array or anything sliceable with steps); the result is
    ``array[..., ::factor, ::factor][..., row_start:row_stop, :]``, read without touching the
    rows in between (only the chunks holding the sampled rows are decoded).
    """
    lead = (slice(None),) * (len(array.shape) - 2)
    rows = slice(row_start * factor, (row_stop - 1) * factor + 1, factor)
    return np.asarray(array[(*lead, rows, slice(None, None, factor))])


def iter_strips(
    array: Any, factor: int, height: int, step: int
) -> Iterator[tuple[int, np.ndarray]]:
    """``(row, strip)`` of ``step`` rows (full width) of the nearest level ``factor``, top down."""
    for row in range(0, height, step):
        yield row, read_nearest(array, factor, row, min(row + step, height))


def iter_tiles(array: Any, factor: int, shape: tuple[int, int], tile: int) -> Iterator[np.ndarray]:
    """Tiles of the nearest level ``factor`` of a 2-D level-0 array, row-major (TIFF order)."""
    height, width = shape
    for _, strip in iter_strips(array, factor, height, tile):
        for col in range(0, width, tile):
            yield strip[..., col : col + tile]


def open_stored(path: str | os.PathLike[str], info: RasterInfo, what: str, ndim: int) -> Any:
    """Open the work-directory Zarr array of ``what`` (labels, probabilities, image) for export.

    Raises :class:`InputError` unless it has ``ndim`` axes (labels (H, W); probabilities and
    images (C, H, W)) and the image's height and width.
    """
    from segpipe.pipeline.io.zarrstore import open_array

    array = open_array(path, mode="r")
    layout = "(H, W)" if ndim == 2 else "(channels, H, W)"
    if array.ndim != ndim:
        raise InputError(f"{what} at {path} must be {layout}, got shape {array.shape}")
    if tuple(array.shape[-2:]) != info.shape:
        raise InputError(
            f"{what} at {path} have shape {tuple(array.shape)} but {info.path} is "
            f"{info.height}x{info.width}: they do not belong to this image"
        )
    return array
