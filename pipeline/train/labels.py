"""Label sources: class indices (and instances) for any window of the image grid.

Every source answers ``read(window) -> (classes, instances)``: ``classes`` int64 with −1 where a
pixel is unlabelled (the label raster's nodata or ``--ignore-value``, or outside the image),
``instances`` int32 (0: no instance) or None when the source has none. A label raster holds
class indices 0..K−1; an optional instance raster (``--instances``) holds instance ids. Vector
labels come from :mod:`segpipe.pipeline.train.vectors`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from segpipe.models.foundation import InputError
from segpipe.pipeline.io.base import RasterInfo, open_raster
from segpipe.pipeline.tiling import Window
from segpipe.pipeline.train.vectors import VECTOR_SUFFIXES, read_vector_labels

__all__ = ["LabelSource", "RasterLabels", "is_vector", "open_labels", "read_padded"]


class LabelSource(Protocol):
    """Class indices (−1: unlabelled) and instance ids (or None) of any window."""

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels of ``window``; pixels outside the image are unlabelled."""
        ...


def read_padded(
    read: Callable[[Window], np.ndarray], window: Window, height: int, width: int, fill: int
) -> np.ndarray:
    """Band 1 of ``window`` through ``read``; pixels outside the image are ``fill``."""
    out = np.full((window.height, window.width), fill, np.int64)
    inner = window.intersection(Window(0, 0, height, width))
    if inner is not None:
        out[inner.relative_to(window).slices] = read(inner)[0]
    return out


class RasterLabels:
    """A label raster of class indices, with an optional instance raster of the same grid."""

    def __init__(self, path: str, info: RasterInfo, ignore: int | None,
                 instances: str | None = None) -> None:
        self._labels = _open_matching(path, info, "--labels")
        self._instances = _open_matching(instances, info, "--instances") if instances else None
        nodata = self._labels.info.nodata
        self.ignore = ignore if ignore is not None else (
            None if nodata is None or nodata != nodata else int(nodata)
        )
        self.height, self.width = info.height, info.width

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        """Class indices (−1: unlabelled or outside) and instance ids of ``window``."""
        classes = read_padded(self._labels.read, window, self.height, self.width, -1)
        if self.ignore is not None:
            classes[classes == self.ignore] = -1
        if self._instances is None:
            return classes, None
        ids = read_padded(self._instances.read, window, self.height, self.width, 0)
        return classes, ids.astype(np.int32)


def _open_matching(path: str, info: RasterInfo, option: str):
    reader = open_raster(path)
    size = (reader.info.height, reader.info.width)
    if size != (info.height, info.width):
        raise InputError(f"{option} {path} is {size[0]}×{size[1]} but the image {info.path} is "
                         f"{info.height}×{info.width}: labels must be on the image's grid")
    if np.issubdtype(np.dtype(reader.info.dtype), np.floating):
        raise InputError(f"{option} {path} holds {reader.info.dtype} values: labels must be "
                         "integers (class indices)")
    return reader


def is_vector(path: str) -> bool:
    """Whether ``path`` is a vector file (by its extension)."""
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def open_labels(
    path: str, info: RasterInfo, *, class_field: str | None, class_names: list[str] | None,
    ignore: int | None, instances: str | None, point_radius: int,
) -> tuple[LabelSource, list[str] | None]:
    """The label source of ``path`` on the grid of ``info``, and class names it implies."""
    if is_vector(path):
        if instances:
            raise InputError("--instances applies to label rasters; vector features already "
                             "are instances")
        return read_vector_labels(path, class_field, class_names, info, point_radius)
    return RasterLabels(path, info, ignore, instances), None
