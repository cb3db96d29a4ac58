"""OME-TIFF outputs: the labels and the probabilities, streamed tile by tile from the work arrays.

Each array is streamed from its Zarr, tile by tile from a generator, into a tiled,
deflate-compressed (Big)TIFF whose pyramid levels live in SubIFDs and are the nearest
downsamplings of level 0 (``array[::2**i, ::2**i]``, see :mod:`segpipe.pipeline.io.pyramid`),
halving until a level fits in one tile. The OME-XML carries the input's physical pixel size and
unit when it has one (absent otherwise); TIFF resolution tags repeat it for non-OME readers.

Instances (``--instance-labels``): one uint32 channel ``instances``, beside the output.
Labels: one channel named ``labels`` and MapAnnotations in the ``segpipe/classes`` (label value
→ class name), ``segpipe/colors`` (label value → ``#rrggbb``) and ``segpipe/provenance`` (tags,
nodata) namespaces. Probabilities: one channel per class (named after it), float32 (OME has no
float16) or ``round(p * 255)`` uint8, written channel after channel (TIFF order). The file is
written beside the output and moved into place when complete.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

from segpipe.pipeline import storage
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.pyramid import iter_tiles, open_stored, pyramid_shapes
from segpipe.pipeline.io.units import LENGTH_UNITS, normalize_unit, unit_in_meters
from segpipe.pipeline.io.writers.common import (
    PYRAMID_METHOD,
    as_uint8,
    instances_target,
    open_probabilities,
    probabilities_target,
    probability_block,
    probability_names,
    write_labels_and_probabilities,
)

if TYPE_CHECKING:
    from segpipe.pipeline.io.writers import ExportJob

__all__ = [
    "NS_CLASSES",
    "NS_COLORS",
    "NS_PROVENANCE",
    "TILE",
    "write",
    "write_instances",
    "write_labels",
    "write_probabilities",
]

TILE = 512
NS_CLASSES = "segpipe/classes"
NS_COLORS = "segpipe/colors"
NS_PROVENANCE = "segpipe/provenance"

Tiles = Callable[[int], Iterator[np.ndarray]]


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


@dataclass(frozen=True)
class _Pyramid:
    """The layout of one output: level shapes, tile, planes (channels), type, OME metadata."""

    info: RasterInfo
    shapes: tuple[tuple[int, int], ...]
    tile: int
    planes: int
    dtype: np.dtype
    metadata: dict[str, Any]
    predictor: bool = False

    @classmethod
    def of(cls, info: RasterInfo, tile: int, planes: int, dtype: Any, **kw: Any) -> _Pyramid:
        """Levels halving until one (small-image-adjusted) tile holds a level."""
        tile = _tile_size(info.shape, tile)
        shapes = pyramid_shapes(info.height, info.width, tile)
        return cls(info, shapes, tile, planes, np.dtype(dtype), **kw)


def _write_pyramid(out_path: str | os.PathLike[str], pyramid: _Pyramid, tiles: Tiles) -> Path:
    """Write a pyramidal OME-TIFF; ``tiles(level)`` yields that level's tiles in TIFF order."""
    shapes, info = pyramid.shapes, pyramid.info
    raw = pyramid.planes * shapes[0][0] * shapes[0][1] * pyramid.dtype.itemsize
    lead = (pyramid.planes,) if pyramid.planes > 1 else ()
    options: dict[str, Any] = {
        "dtype": pyramid.dtype,
        "tile": (pyramid.tile, pyramid.tile),
        "compression": "zlib",
        "photometric": "minisblack",
        "software": "segpipe",
    }
    if pyramid.predictor:
        options["predictor"] = True
    bigtiff = raw > 2**31 - 2**25
    with storage.publish(os.fspath(out_path)) as partial, tifffile.TiffWriter(
        partial, bigtiff=bigtiff, ome=True
    ) as tif:
        tif.write(
            tiles(0), shape=(*lead, *shapes[0]), subifds=len(shapes) - 1,
            metadata=pyramid.metadata, **_resolution(info, 1), **options,
        )
        for i in range(1, len(shapes)):
            tif.write(
                tiles(i), shape=(*lead, *shapes[i]), subfiletype=1,
                **_resolution(info, 2**i), **options,
            )
    return Path(out_path)


def _hex(color: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in color[:3])


def _label_metadata(job: ExportJob) -> dict[str, Any]:
    """OME metadata of the labels: one channel, physical size, classes, colours, provenance."""
    source = os.path.basename(job.info.path)
    provenance = {str(k): str(v) for k, v in job.tags.items()}
    provenance["nodata"] = str(job.nodata)
    provenance["source"] = source
    provenance["pyramid"] = PYRAMID_METHOD
    return {
        "axes": "YX",
        "Name": f"{source} labels",
        "Channel": {"Name": ["labels"]},
        **_physical(job.info),
        "MapAnnotation": [
            {"Namespace": NS_CLASSES, **{str(i): n for i, n in enumerate(job.class_names)}},
            {"Namespace": NS_COLORS, **{str(i): _hex(c) for i, c in enumerate(job.colors)}},
            {"Namespace": NS_PROVENANCE, **provenance},
        ],
    }


def write_labels(job: ExportJob, *, tile: int = TILE) -> Path:
    """Write the (H, W) label array as a pyramidal OME-TIFF at ``job.out``; returns that path.

    Streams one tile row at a time per level (never the whole array); see the module docstring
    for the layout and metadata.
    """
    labels = open_stored(job.labels_path, job.info, "labels", 2)
    pyramid = _Pyramid.of(job.info, tile, 1, labels.dtype, metadata=_label_metadata(job))

    def tiles(level: int) -> Iterator[np.ndarray]:
        return iter_tiles(labels, 2**level, pyramid.shapes[level], pyramid.tile)

    return _write_pyramid(job.out, pyramid, tiles)


def write_instances(job: ExportJob, *, tile: int = TILE) -> Path:
    """Write the (H, W) uint32 instance ids as a pyramidal OME-TIFF beside the output.

    At ``instances_target(job.out)``; returns that path. One channel ``instances``, the same
    layout and physical sizes as :func:`write_labels`, provenance in a MapAnnotation.
    """
    ids = open_stored(str(job.instances_path), job.info, "instances", 2)
    source = os.path.basename(job.info.path)
    metadata: dict[str, Any] = {
        "axes": "YX", "Name": f"{source} instances", "Channel": {"Name": ["instances"]},
        **_physical(job.info),
        "MapAnnotation": [{"Namespace": NS_PROVENANCE, "source": source,
                           "pyramid": PYRAMID_METHOD, "background": "0",
                           **{str(k): str(v) for k, v in job.tags.items()}}],
    }
    pyramid = _Pyramid.of(job.info, tile, 1, ids.dtype, metadata=metadata)

    def tiles(level: int) -> Iterator[np.ndarray]:
        return iter_tiles(ids, 2**level, pyramid.shapes[level], pyramid.tile)

    return _write_pyramid(instances_target(job.out), pyramid, tiles)


class _Plane:
    """Plane ``k`` of a (K, H, W) array, sliceable like a (H, W) array."""

    def __init__(self, array: Any, k: int) -> None:
        self._array, self._k = array, k
        self.shape = tuple(array.shape[1:])

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        return np.asarray(self._array[(self._k, *key)])


def write_probabilities(job: ExportJob, *, tile: int = TILE) -> Path:
    """Write the (K, H, W) probabilities as a pyramidal OME-TIFF, one channel per class.

    At ``probabilities_path(job.out)``; returns that path. Same layout and physical sizes as
    :func:`write_labels`. Each probability chunk is decoded once per class.
    """
    probs = open_probabilities(job)
    count, uint8 = probs.shape[0], as_uint8(job)
    metadata: dict[str, Any] = {
        "axes": "CYX" if count > 1 else "YX",
        "Name": f"{os.path.basename(job.info.path)} probabilities",
        "Channel": {"Name": probability_names(job, count)},
        **_physical(job.info),
        "MapAnnotation": [
            {
                "Namespace": NS_PROVENANCE,
                "source": os.path.basename(job.info.path),
                "scale": "1/255" if uint8 else "1",
                "pyramid": PYRAMID_METHOD,
            }
        ],
    }
    dtype = "uint8" if uint8 else "float32"
    pyramid = _Pyramid.of(job.info, tile, count, dtype, metadata=metadata, predictor=True)

    def tiles(level: int) -> Iterator[np.ndarray]:
        for k in range(count):
            for t in iter_tiles(_Plane(probs, k), 2**level, pyramid.shapes[level], pyramid.tile):
                yield probability_block(t, as_uint8=uint8, float_dtype="float32")

    return _write_pyramid(probabilities_target(job.out), pyramid, tiles)


def write(job: ExportJob) -> list[str]:
    """The labels, and the probabilities when the job has them, as OME-TIFFs; their paths."""
    return write_labels_and_probabilities(job, write_labels, write_probabilities)
