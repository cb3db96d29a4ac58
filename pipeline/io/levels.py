"""Pyramid levels: choosing one to read, and building them for the outputs.

Reading: every reader fills :attr:`RasterInfo.levels` with the (height, width) of each level;
:func:`choose_level` picks the level asked for by index or by pixel size.

Writing: output pyramids are derived from the stored level 0 by nearest downsampling with the
top-left convention, level ``i`` = ``level0[::2**i, ::2**i]`` (labels are categories and are never
averaged). Its shape is ``ceil(h / 2**i) × ceil(w / 2**i)``; the pixel ``k`` of level ``i`` is
pixel ``k * 2**i`` of level 0, so the level's pixel size is exactly ``2**i`` times level 0's with
no offset, and ``level[i+1] == level[i][::2, ::2]``. :func:`pyramid_shapes` lists the levels (by
factors of 2 until one tile holds the level) and :func:`read_nearest` reads rows of any level
straight from a level-0 array without reading the rest of it.

Outputs are written under a temporary name beside the destination and renamed into place only
when complete (:func:`atomic_output`), so a failed export never leaves a partial file behind.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.models.errors import InputError
from segpipe.pipeline.io.base import RasterInfo

# Length units: the OME symbol (what RasterInfo.pixel_unit holds), the NGFF (UDUNITS-2) name and
# the size in metres.
LENGTH_UNITS: dict[str, tuple[str, float]] = {
    "Å": ("angstrom", 1e-10),
    "pm": ("picometer", 1e-12),
    "nm": ("nanometer", 1e-9),
    "µm": ("micrometer", 1e-6),
    "mm": ("millimeter", 1e-3),
    "cm": ("centimeter", 1e-2),
    "dm": ("decimeter", 1e-1),
    "m": ("meter", 1.0),
    "km": ("kilometer", 1e3),
    "in": ("inch", 0.0254),
    "ft": ("foot", 0.3048),
    "yd": ("yard", 0.9144),
    "mi": ("mile", 1609.344),
}
_ALIASES = {
    "um": "µm", "μm": "µm", "micron": "µm", "microns": "µm", "\\u00b5m": "µm",
    "micrometre": "µm", "micrometres": "µm", "micrometers": "µm",
    "metre": "m", "metres": "m", "meters": "m", "nanometre": "nm", "millimetre": "mm",
    "centimetre": "cm", "inches": "in", "feet": "ft", "angstroms": "Å",
}
_ALIASES.update({name: symbol for symbol, (name, _) in LENGTH_UNITS.items()})


def normalize_unit(unit: str | None) -> str | None:
    """The OME symbol of a length unit (``"micron"``, ``"um"``, ``"micrometer"`` → ``"µm"``).

    An empty unit is None; an unknown one is returned as given (stripped), never guessed.
    """
    if unit is None or not str(unit).strip():
        return None
    text = str(unit).strip()
    if text in LENGTH_UNITS:
        return text
    return _ALIASES.get(text.lower(), _ALIASES.get(text, text))


def ngff_unit(unit: str | None) -> str | None:
    """The NGFF axis unit name of ``unit`` (``"µm"`` → ``"micrometer"``), None if not a length."""
    symbol = normalize_unit(unit)
    return LENGTH_UNITS[symbol][0] if symbol in LENGTH_UNITS else None


def unit_in_meters(unit: str | None) -> float | None:
    """How many metres one ``unit`` is, None if it is not a known length unit."""
    symbol = normalize_unit(unit)
    return LENGTH_UNITS[symbol][1] if symbol in LENGTH_UNITS else None


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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_output(out_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``out_path``; on success move it to ``out_path``.

    Works for files and for directories (Zarr stores). An existing ``out_path`` is replaced only
    once the new output is complete (callers refuse to overwrite without ``--overwrite``). On
    error the temporary output is removed and ``out_path`` is left as it was.
    """
    out = Path(out_path)
    partial = out.with_name(f".{out.name}.partial")
    _remove(partial)
    try:
        yield partial
        if partial.is_dir() and out.exists():
            old = out.with_name(f".{out.name}.old")
            _remove(old)
            os.replace(out, old)
            os.replace(partial, out)
            _remove(old)
        else:
            if out.is_dir():
                _remove(out)
            os.replace(partial, out)
    finally:
        _remove(partial)


# ---------------------------------------------------------------------------- probabilities


class OutputFormat(StrEnum):
    """The formats segpipe writes; chosen from the output path's extension."""

    GEOTIFF = "geotiff"
    OME_TIFF = "ome-tiff"
    OME_ZARR = "ome-zarr"

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> OutputFormat:
        """``.ome.tif``/``.ome.tiff`` → OME-TIFF, ``.ome.zarr`` → OME-Zarr, ``.tif``/``.tiff``."""
        name = Path(path).name.lower().rstrip("/")
        if name.endswith((".ome.tif", ".ome.tiff", ".ome.tf2", ".ome.tf8", ".ome.btf")):
            return cls.OME_TIFF
        if name.endswith(".ome.zarr"):
            return cls.OME_ZARR
        if name.endswith((".tif", ".tiff")):
            return cls.GEOTIFF
        raise InputError(
            f"--output {path}: unknown extension; use .tif/.tiff (GeoTIFF), .ome.tif/.ome.tiff "
            "(OME-TIFF) or .ome.zarr (OME-Zarr)"
        )


def companion_path(out_path: str | os.PathLike[str], what: str, ext: str | None = None) -> Path:
    """A file beside the label output: ``mask.tif`` → ``mask.<what>.tif`` (or ``.<ext>``).

    ``mask.ome.tif`` → ``mask.<what>.ome.tif``, ``mask.ome.zarr`` → ``mask.<what>.ome.zarr``.
    """
    out = Path(out_path)
    name = out.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return out.with_name(f"{name[: -len(suffix)]}.{what}{ext or name[-len(suffix):]}")
    return out.with_name(f"{name}.{what}{ext or ''}")


def probabilities_path(out_path: str | os.PathLike[str]) -> Path:
    """Where the probabilities go: ``mask.tif`` → ``mask.probabilities.tif`` and so on."""
    return companion_path(out_path, "probabilities")


def write_probabilities(
    probs_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    info: RasterInfo,
    fmt: OutputFormat | str | None = None,
    *,
    class_names: Sequence[str] | None = None,
    as_uint8: bool = False,
) -> None:
    """Write the (K, H, W) probability Zarr at ``probs_path`` to ``out_path`` in ``fmt``.

    ``fmt`` defaults to the one of ``out_path``'s extension. Values are float32 in the TIFFs
    (neither GDAL nor OME know float16) and float16 in OME-Zarr; with ``as_uint8`` they are
    ``round(p * 255)`` as uint8 everywhere. Bands/channels are named after ``class_names``.
    """
    fmt = OutputFormat(fmt) if fmt is not None else OutputFormat.from_path(out_path)
    if fmt is OutputFormat.GEOTIFF:
        from segpipe.pipeline.io.tiff import write_probabilities_geotiff

        write_probabilities_geotiff(
            probs_path, out_path, info, class_names=class_names, as_uint8=as_uint8
        )
    elif fmt is OutputFormat.OME_TIFF:
        from segpipe.pipeline.io.ometiff import write_probabilities_ome_tiff

        write_probabilities_ome_tiff(
            probs_path, out_path, info, class_names=class_names, as_uint8=as_uint8
        )
    else:
        from segpipe.pipeline.io.omezarr import write_probabilities_ome_zarr

        write_probabilities_ome_zarr(
            probs_path, out_path, info, class_names=class_names, as_uint8=as_uint8
        )


def probability_block(block: np.ndarray, *, as_uint8: bool, float_dtype: str) -> np.ndarray:
    """A block of probabilities in the output type: float (``float_dtype``) or scaled uint8."""
    if as_uint8:
        return np.rint(np.clip(block.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    return block.astype(float_dtype, copy=False)


def class_channel_names(count: int, class_names: Sequence[str] | None) -> list[str]:
    """One name per probability channel: the class names, or ``class_<i>``."""
    if class_names is not None and len(class_names) == count:
        return [str(n) for n in class_names]
    return [f"class_{i}" for i in range(count)]
