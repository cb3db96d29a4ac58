"""OME-Zarr outputs (NGFF 0.4 on Zarr v2, 0.5 on Zarr v3): labels with their image, probabilities.

All are streamed chunk row by chunk row from the work arrays.

The labels output (:func:`write_labels`) is an image group whose ``labels/labels`` group holds
the label pyramid, following the NGFF labels layout viewers expect:

* The image: the ingested input (``job.image_path``, the (bands, H, W) work-directory Zarr)
  copied chunk row by chunk row, with ``omero`` channel names. Without ``image_path`` the image
  is a single-channel uint8 placeholder of the same grid whose chunks are never written (it costs
  no disk and reads as zeros), because labels must live under an image for the NGFF readers.
* The labels: (c=1, y, x), the same axes as the image as in the NGFF examples, uint8/uint16,
  ``image-label`` metadata with a colour (label value + RGBA) and a property (label value +
  ``class`` name) per class, and for the nodata value a transparent colour and class ``nodata``.
* Both pyramids have the same levels: level ``i`` = level 0 ``[::2**i, ::2**i]`` (nearest; built
  from level i-1 of the output, which is the same thing), halving until a level fits in one
  chunk. The ``scale`` of level ``i`` is the input's pixel size (in its NGFF unit) times ``2**i``
  with no translation (pixel k of level i is pixel k·2**i of level 0); without a pixel size the
  scale is 1.0 per pixel with no unit.

The probabilities (:func:`write_probabilities`) are an image of one channel per class, float16
(as stored) or ``round(p * 255)`` uint8, with the same pyramid and scales.

Both are written beside the output and moved into place when complete (on an object store:
written in place, published last by the root metadata, see
:mod:`segpipe.pipeline.io.zarrpublish`), in the NGFF version of ``job.options.ngff_version``:
"0.4" (Zarr v2, the most widely read) or "0.5" (Zarr v3).
Multiscales and label metadata are written with ome-zarr's own ``write_multiscales_metadata`` /
``write_label_metadata``; the arrays are filled here chunk row by chunk row so memory stays
O(chunk row).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.pyramid import open_stored, pyramid_shapes, read_nearest
from segpipe.pipeline.io.units import ngff_unit
from segpipe.pipeline.io.writers.common import (
    PYRAMID_METHOD,
    as_uint8,
    open_probabilities,
    probabilities_target,
    probability_block,
    probability_names,
    write_labels_and_probabilities,
)
from segpipe.pipeline.io.zarrpublish import output_group
from segpipe.pipeline.options import NgffVersion

if TYPE_CHECKING:
    from segpipe.pipeline.io.writers import ExportJob

__all__ = ["INSTANCE_NAME", "LABEL_NAME", "write", "write_labels", "write_probabilities"]

LABEL_NAME = "labels"
INSTANCE_NAME = "instances"


def _ome_zarr_writer() -> Any:
    """``ome_zarr.writer``, imported without its import-time deprecation warning (Scaler)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import ome_zarr.writer

    return ome_zarr.writer


@dataclass(frozen=True)
class _Grid:
    """What every array of one output shares: NGFF format, level shapes, chunk, scale, units."""

    fmt: Any
    shapes: tuple[tuple[int, int], ...]
    chunk: int
    scale: tuple[float, float]
    units: dict[str, str] | None

    @classmethod
    def of(cls, info: RasterInfo, chunk: int, version: NgffVersion) -> _Grid:
        """Levels halving until one ``chunk`` holds a level; scale from the pixel size."""
        from ome_zarr.format import FormatV04, FormatV05

        fmt = FormatV04() if NgffVersion(version) is NgffVersion.V04 else FormatV05()
        shapes = pyramid_shapes(info.height, info.width, chunk)
        unit = ngff_unit(info.pixel_unit)
        if info.pixel_size is None or unit is None:  # 1.0 per pixel, no unit
            return cls(fmt, shapes, chunk, (1.0, 1.0), None)
        scale = (float(info.pixel_size[0]), float(info.pixel_size[1]))
        return cls(fmt, shapes, chunk, scale, {"y": unit, "x": unit})

    def datasets(self) -> list[dict[str, Any]]:
        """The ``datasets`` of a multiscale: path ``i``, scale ``2**i`` times level 0's."""
        sy, sx = self.scale
        return [
            {
                "path": str(i),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, sy * 2**i, sx * 2**i]}
                ],
            }
            for i in range(len(self.shapes))
        ]

    def create(self, group: zarr.Group, bands: int, dtype: Any) -> list[zarr.Array]:
        """Empty arrays ``0..n`` of (bands, h, w) in ``group``, chunked (bands, chunk, chunk)."""
        kwargs: dict[str, Any] = {}
        if self.fmt.zarr_format == 2:
            kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        else:
            kwargs["dimension_names"] = ("c", "y", "x")
        return [
            group.create_array(
                str(i), shape=(bands, h, w), chunks=(bands, self.chunk, self.chunk),
                dtype=dtype, fill_value=0, **kwargs,
            )
            for i, (h, w) in enumerate(self.shapes)
        ]

    def write_multiscales(self, group: zarr.Group, name: str, **metadata: Any) -> None:
        """The group's ``multiscales`` (axes c, y, x) with ``metadata`` beside it."""
        _ome_zarr_writer().write_multiscales_metadata(
            group, self.datasets(), fmt=self.fmt, axes=["c", "y", "x"], axes_units=self.units,
            name=name, metadata={**metadata, "method": PYRAMID_METHOD},
        )


def _write_pyramid(
    group: zarr.Group,
    source: Any,
    grid: _Grid,
    dtype: Any,
    convert: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[zarr.Array]:
    """Create and fill arrays ``0..n`` of (C, h, w) in ``group``, one chunk row at a time.

    Level 0 is copied from ``source`` (C, H, W) (through ``convert``); level i is level i-1
    ``[:, ::2, ::2]`` read back from the output.
    """
    arrays = grid.create(group, source.shape[0], dtype)
    chunk = grid.chunk
    for row in range(0, grid.shapes[0][0], chunk):
        block = np.asarray(source[:, row : row + chunk, :])
        arrays[0][:, row : row + chunk, :] = convert(block) if convert else block
    for i in range(1, len(grid.shapes)):
        for row in range(0, grid.shapes[i][0], chunk):
            stop = min(row + chunk, grid.shapes[i][0])
            arrays[i][:, row:stop, :] = read_nearest(arrays[i - 1], 2, row, stop)
    return arrays


class _Labels2D:
    """A (H, W) label array seen as (1, H, W)."""

    def __init__(self, array: Any) -> None:
        self._array = array
        self.shape = (1, *array.shape)

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        return np.asarray(self._array[key[1:]])[None]


def _display_window(plane: np.ndarray, dtype: Any) -> tuple[float, float, float, float]:
    """(min, max, start, end) of a channel: its value range and the type's range (integers)."""
    finite = plane[np.isfinite(plane)] if plane.dtype.kind == "f" else plane
    start = float(finite.min()) if finite.size else 0.0
    end = float(finite.max()) if finite.size else 1.0
    if np.dtype(dtype).kind in "ui":
        return float(np.iinfo(dtype).min), float(np.iinfo(dtype).max), start, end
    return start, end, start, end


def _omero(
    names: Sequence[str], arrays: Sequence[zarr.Array], dtype: Any,
    window: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """``omero`` channel metadata: names, colours, display windows from the coarsest level."""
    coarsest = np.asarray(arrays[-1][:])
    channels = []
    for i, name in enumerate(names):
        if window is not None:
            low, high, start, end = (*window, *window)
        else:
            low, high, start, end = _display_window(coarsest[i], dtype)
        channels.append(
            {
                "label": str(name),
                "color": ("FF0000", "00FF00", "0000FF")[i] if len(names) == 3 else "FFFFFF",
                "active": True,
                "window": {"min": low, "max": high, "start": start, "end": end},
            }
        )
    return {"channels": channels, "rdefs": {"model": "color" if len(names) == 3 else "greyscale"}}


def _write_image(root: zarr.Group, job: ExportJob, grid: _Grid) -> None:
    """The image the labels belong to: the ingested input, or a placeholder that costs no disk."""
    info = job.info
    if job.image_path is not None:
        image = open_stored(job.image_path, info, "image", 3)
        arrays = _write_pyramid(root, image, grid, image.dtype)
        names = list(info.channel_names or [f"band_{i + 1}" for i in range(image.shape[0])])
        if len(names) != image.shape[0]:
            names = [f"band_{i + 1}" for i in range(image.shape[0])]
        omero = _omero(names, arrays, image.dtype)
    else:  # chunks never written: zeros, no disk
        arrays = grid.create(root, 1, "uint8")
        omero = _omero(["placeholder (labels only)"], arrays, "uint8", window=(0.0, 1.0))
    grid.write_multiscales(root, os.path.basename(info.path), omero=omero)


def _label_metadata(job: ExportJob) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``image-label`` colours and properties: one per class, and a transparent ``nodata``."""
    colors = [
        {"label-value": i, "rgba": [int(c) for c in color[:3]] + [255]}
        for i, color in enumerate(job.colors)
    ]
    properties: list[dict[str, Any]] = [
        {"label-value": i, "class": str(n)} for i, n in enumerate(job.class_names)
    ]
    if job.nodata >= len(job.class_names):
        colors.append({"label-value": int(job.nodata), "rgba": [0, 0, 0, 0]})
        properties.append({"label-value": int(job.nodata), "class": "nodata"})
    return colors, properties


def write_labels(job: ExportJob) -> Path:
    """Write the (H, W) label array as an OME-Zarr image with ``labels/labels`` at ``job.out``.

    See the module docstring for the layout. Returns the output path.
    """
    writer = _ome_zarr_writer()
    labels = open_stored(job.labels_path, job.info, "labels", 2)
    grid = _Grid.of(job.info, int(labels.chunks[0]), job.options.ngff_version)
    colors, properties = _label_metadata(job)
    with output_group(job.out, grid.fmt.zarr_format) as root:
        _write_image(root, job, grid)
        label_group = root.create_group("labels").create_group(LABEL_NAME)
        _write_pyramid(label_group, _Labels2D(labels), grid, labels.dtype)
        grid.write_multiscales(label_group, LABEL_NAME)
        writer.write_label_metadata(
            root["labels"], LABEL_NAME, colors=colors, properties=properties, fmt=grid.fmt,
            source={"image": "../../"},
        )
        if job.instances_path is not None:
            _write_instances(root, job, grid)
        if grid.fmt.zarr_format == 3:  # NGFF 0.5: every OME group carries the version
            writer.add_metadata(root["labels"], {"version": grid.fmt.version}, fmt=grid.fmt)
    return Path(job.out)


def _write_instances(root: zarr.Group, job: ExportJob, grid: _Grid) -> None:
    """The instance ids as a second label image, ``labels/instances`` (uint32, 0 background).

    Its ``image-label`` metadata names the image it belongs to and no colours (one per id
    would grow with the objects): viewers colour label images by id themselves. The
    ``labels`` group's list then names both label images.
    """
    writer = _ome_zarr_writer()
    ids = open_stored(str(job.instances_path), job.info, "instances", 2)
    labels = root["labels"]
    assert isinstance(labels, zarr.Group)  # write_labels created it
    group = labels.create_group(INSTANCE_NAME)
    _write_pyramid(group, _Labels2D(ids), grid, ids.dtype)
    grid.write_multiscales(group, INSTANCE_NAME)
    writer.write_label_metadata(labels, INSTANCE_NAME, fmt=grid.fmt,
                                source={"image": "../../"})


def write_probabilities(job: ExportJob) -> Path:
    """Write the (K, H, W) probabilities as an OME-Zarr image, one channel per class.

    At ``probabilities_path(job.out)``; returns that path. Channels named after the classes;
    pyramid and scales as in :func:`write_labels`.
    """
    probs = open_probabilities(job)
    grid = _Grid.of(job.info, int(probs.chunks[1]), job.options.ngff_version)
    uint8 = as_uint8(job)
    dtype = "uint8" if uint8 else "float16"
    out = probabilities_target(job.out)

    def convert(block: np.ndarray) -> np.ndarray:
        return probability_block(block, as_uint8=uint8, float_dtype="float16")

    with output_group(out, grid.fmt.zarr_format) as root:
        arrays = _write_pyramid(root, probs, grid, dtype, convert)
        names = probability_names(job, probs.shape[0])
        omero = _omero(names, arrays, dtype, window=(0.0, 255.0 if uint8 else 1.0))
        grid.write_multiscales(
            root, f"{os.path.basename(job.info.path)} probabilities", omero=omero
        )
    return Path(out)


def write(job: ExportJob) -> list[str]:
    """The labels (with their image), and the probabilities when the job has them; paths."""
    return write_labels_and_probabilities(job, write_labels, write_probabilities)
