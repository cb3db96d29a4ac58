"""OME-TIFF: the reader (tifffile), and the label and probability writers.

Reading: series 0 of the file, its pyramid levels from SubIFDs (or however tifffile finds them),
channels as bands (an RGB channel's three samples as three bands), the physical pixel size and
unit from the OME-XML ``Pixels`` element (``PhysicalSizeY``, ``PhysicalSizeX``; the schema's
default unit is µm) and the channel names. Without ``PhysicalSize*`` there is no pixel size.

Writing: the label array is streamed from its Zarr, tile by tile from a generator, into a tiled,
deflate-compressed (Big)TIFF whose pyramid levels live in SubIFDs and are the nearest
downsamplings of level 0 (``labels[::2**i, ::2**i]``, see :mod:`segpipe.pipeline.io.levels`),
halving until a level fits in one tile. The OME-XML has one channel named ``labels``, the input's
physical pixel size and unit when it has one (absent otherwise), and MapAnnotations in the
``segpipe/classes`` (label value → class name), ``segpipe/colors`` (label value → ``#rrggbb``) and
``segpipe/provenance`` (tags, nodata) namespaces. The file is written beside the output and
renamed into place when complete.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tifffile

from segpipe.models.errors import InputError
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.levels import (
    LENGTH_UNITS,
    atomic_output,
    class_channel_names,
    iter_tiles,
    normalize_unit,
    open_stored,
    probability_block,
    pyramid_shapes,
    unit_in_meters,
)
from segpipe.pipeline.io.tiff import AxisLayout, TifffileReader, classify_tiff

TILE = 512
NS_CLASSES = "segpipe/classes"
NS_COLORS = "segpipe/colors"
NS_PROVENANCE = "segpipe/provenance"


def accepts(path: str) -> bool:
    """Whether :class:`OmeTiffReader` is the reader for ``path`` (an OME-TIFF, not a GeoTIFF)."""
    return classify_tiff(path) == "ome"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def ome_pixels(xml: str, height: int, width: int) -> ET.Element | None:
    """The ``Pixels`` element of the first OME ``Image`` of size ``width`` × ``height``."""
    try:
        root = ET.fromstring(xml.encode() if isinstance(xml, str) else xml)
    except ET.ParseError:
        return None
    pixels = [p for image in _children(root, "Image") for p in _children(image, "Pixels")]
    for p in pixels:
        if (p.get("SizeY"), p.get("SizeX")) == (str(height), str(width)):
            return p
    return pixels[0] if pixels else None


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number > 0 and math.isfinite(number) else None


class OmeTiffReader(TifffileReader):
    """One level of series 0 of an OME-TIFF (format ``"ome-tiff"``)."""

    format = "ome-tiff"

    def _metadata(self, series: tifffile.TiffPageSeries) -> dict[str, Any]:
        layout = AxisLayout.of(series.axes, series.shape, self._tif.filename)
        meta: dict[str, Any] = {"extra": {"ome_name": series.name or None}}
        pixels = ome_pixels(self._tif.ome_metadata or "", layout.height, layout.width)
        if pixels is None:
            return meta
        size_y, size_x = _float(pixels.get("PhysicalSizeY")), _float(pixels.get("PhysicalSizeX"))
        unit_y = normalize_unit(pixels.get("PhysicalSizeYUnit", "µm"))
        unit_x = normalize_unit(pixels.get("PhysicalSizeXUnit", "µm"))
        if size_y is not None and size_x is not None and unit_y is not None and unit_x is not None:
            if unit_y != unit_x:  # one unit for both axes: express y in x's unit
                factor_y, factor_x = unit_in_meters(unit_y), unit_in_meters(unit_x)
                if factor_y is not None and factor_x is not None:
                    size_y = size_y * factor_y / factor_x
                    unit_y = unit_x
            if unit_y == unit_x:
                meta["pixel_size"], meta["pixel_unit"] = (size_y, size_x), unit_x
        channels = _children(pixels, "Channel")
        names = [c.get("Name") or f"channel_{i}" for i, c in enumerate(channels)]
        if len(names) == layout.bands:
            meta["channel_names"] = tuple(names)
        elif len(channels) == 1 and layout.bands in (3, 4):
            meta["channel_names"] = ("red", "green", "blue", "alpha")[: layout.bands]
        return meta


# ------------------------------------------------------------------------------- writers


def _tile_size(shape: tuple[int, int], tile: int) -> int:
    """``tile``, or less for small images (a multiple of 16, as TIFF requires)."""
    return max(16, min(tile, 16 * math.ceil(max(shape) / 16)))


def _physical(info: RasterInfo) -> dict[str, Any]:
    """OME PhysicalSize attributes of ``info``; empty when it has none or an unknown unit."""
    unit = normalize_unit(info.pixel_unit)
    if info.pixel_size is None or unit not in LENGTH_UNITS:
        return {}
    size_y, size_x = info.pixel_size
    return {
        "PhysicalSizeX": float(size_x), "PhysicalSizeXUnit": unit,
        "PhysicalSizeY": float(size_y), "PhysicalSizeYUnit": unit,
    }


def _resolution(info: RasterInfo, factor: int) -> dict[str, Any]:
    """TIFF resolution tags (pixels per centimetre) for non-OME readers, when the unit allows."""
    metres = unit_in_meters(info.pixel_unit)
    if info.pixel_size is None or metres is None:
        return {}
    size_y, size_x = info.pixel_size
    per_cm_x = 0.01 / (size_x * factor * metres)
    per_cm_y = 0.01 / (size_y * factor * metres)
    return {"resolution": (per_cm_x, per_cm_y), "resolutionunit": "CENTIMETER"}


def _write_pyramid(
    out_path: str | os.PathLike[str],
    shapes: Sequence[tuple[int, int]],
    tiles: Any,
    *,
    planes: int,
    dtype: np.dtype,
    tile: int,
    info: RasterInfo,
    metadata: dict[str, Any],
    predictor: bool = False,
) -> None:
    """Write a pyramidal OME-TIFF; ``tiles(level)`` yields that level's tiles in TIFF order."""
    raw = planes * shapes[0][0] * shapes[0][1] * dtype.itemsize
    lead = (planes,) if planes > 1 else ()
    options: dict[str, Any] = {
        "dtype": dtype,
        "tile": (tile, tile),
        "compression": "zlib",
        "photometric": "minisblack",
        "software": "segpipe",
    }
    if predictor:
        options["predictor"] = True
    bigtiff = raw > 2**31 - 2**25
    with atomic_output(out_path) as partial, tifffile.TiffWriter(
        partial, bigtiff=bigtiff, ome=True
    ) as tif:
        tif.write(
            tiles(0), shape=(*lead, *shapes[0]), subifds=len(shapes) - 1,
            metadata=metadata, **_resolution(info, 1), **options,
        )
        for i in range(1, len(shapes)):
            tif.write(
                tiles(i), shape=(*lead, *shapes[i]), subfiletype=1,
                **_resolution(info, 2**i), **options,
            )


def _hex(color: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in color[:3])


def write_label_ome_tiff(
    labels_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    info: RasterInfo,
    *,
    class_names: Sequence[str],
    colors: Sequence[Sequence[int]],
    nodata: int | None,
    tags: Mapping[str, str],
    tile: int = TILE,
) -> None:
    """Write the (H, W) label Zarr at ``labels_path`` as a pyramidal OME-TIFF at ``out_path``.

    Streams one tile row at a time per level (never the whole array); see the module docstring
    for the layout and metadata. ``colors`` are (r, g, b) per class; ``nodata`` the label value
    of input nodata (255/65535) or None.
    """
    labels = open_stored(labels_path, info, "labels", 2)
    if len(colors) != len(class_names):
        raise InputError(f"{len(class_names)} class names but {len(colors)} colors")
    tile = _tile_size(info.shape, tile)
    shapes = pyramid_shapes(info.height, info.width, tile)
    provenance = {str(k): str(v) for k, v in tags.items()}
    provenance["nodata"] = "" if nodata is None else str(nodata)
    provenance["source"] = os.path.basename(info.path)
    provenance["pyramid"] = "nearest: level i = level0[::2**i, ::2**i]"
    metadata: dict[str, Any] = {
        "axes": "YX",
        "Name": f"{os.path.basename(info.path)} labels",
        "Channel": {"Name": ["labels"]},
        **_physical(info),
        "MapAnnotation": [
            {"Namespace": NS_CLASSES, **{str(i): n for i, n in enumerate(class_names)}},
            {"Namespace": NS_COLORS, **{str(i): _hex(c) for i, c in enumerate(colors)}},
            {"Namespace": NS_PROVENANCE, **provenance},
        ],
    }

    def tiles(level: int) -> Iterator[np.ndarray]:
        return iter_tiles(labels, 2**level, shapes[level], tile)

    _write_pyramid(
        out_path, shapes, tiles, planes=1, dtype=np.dtype(labels.dtype), tile=tile, info=info,
        metadata=metadata,
    )


class _Plane:
    """Plane ``k`` of a (K, H, W) array, sliceable like a (H, W) array."""

    def __init__(self, array: Any, k: int) -> None:
        self._array, self._k = array, k
        self.shape = tuple(array.shape[1:])

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        return np.asarray(self._array[(self._k, *key)])


def write_probabilities_ome_tiff(
    probs_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    info: RasterInfo,
    *,
    class_names: Sequence[str] | None = None,
    as_uint8: bool = False,
    tile: int = TILE,
) -> None:
    """Write the (K, H, W) probability Zarr as a pyramidal OME-TIFF, one channel per class.

    float32 (OME has no float16) or ``round(p * 255)`` uint8; same layout and physical sizes as
    :func:`write_label_ome_tiff`. Channels are written one after the other (TIFF order), so each
    probability chunk is decoded once per class.
    """
    probs = open_stored(probs_path, info, "probabilities", 3)
    count = probs.shape[0]
    tile = _tile_size(info.shape, tile)
    shapes = pyramid_shapes(info.height, info.width, tile)
    metadata: dict[str, Any] = {
        "axes": "CYX" if count > 1 else "YX",
        "Name": f"{os.path.basename(info.path)} probabilities",
        "Channel": {"Name": class_channel_names(count, class_names)},
        **_physical(info),
        "MapAnnotation": [
            {
                "Namespace": NS_PROVENANCE,
                "source": os.path.basename(info.path),
                "scale": "1/255" if as_uint8 else "1",
                "pyramid": "nearest: level i = level0[::2**i, ::2**i]",
            }
        ],
    }
    dtype = np.dtype("uint8" if as_uint8 else "float32")

    def tiles(level: int) -> Iterator[np.ndarray]:
        for k in range(count):
            for t in iter_tiles(_Plane(probs, k), 2**level, shapes[level], tile):
                yield probability_block(t, as_uint8=as_uint8, float_dtype="float32")

    _write_pyramid(
        out_path, shapes, tiles, planes=count, dtype=dtype, tile=tile, info=info,
        metadata=metadata, predictor=True,
    )
