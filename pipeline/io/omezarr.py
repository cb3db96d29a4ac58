"""OME-Zarr (NGFF 0.4 on Zarr v2, NGFF 0.5 on Zarr v3): the image reader.

The writers are in :mod:`segpipe.pipeline.io.writers.omezarr`.

Reading: the first ``multiscales`` of the group (or of series ``0`` of a ``bioformats2raw``
layout); every dataset is a level. Axes are mapped by type and name: the channel axis becomes the
bands, ``y`` and ``x`` the image plane, and time or z axes must have a single plane ((c, y, x),
(t, c, z, y, x) with t = z = 1, ...). The pixel size of a level is the y/x entries of its
``scale`` transform (times the multiscale-wide one) when both axes have a length unit; without
units there is no pixel size. Channel names come from ``omero`` channel labels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from segpipe.models.foundation import RasterError
from segpipe.models.location import is_url
from segpipe.pipeline import storage
from segpipe.pipeline.io.base import RasterInfo, ReaderBase
from segpipe.pipeline.io.pyramid import check_level, info_at_level
from segpipe.pipeline.io.tiff import AxisLayout
from segpipe.pipeline.io.units import normalize_unit, unit_in_meters
from segpipe.pipeline.tiling import Window


def _ome_attrs(path: Path) -> dict[str, Any] | None:
    """The OME attributes of the Zarr group at ``path`` (v3 ``ome`` key or v2 ``.zattrs``)."""
    try:
        if (path / "zarr.json").is_file():
            meta = json.loads((path / "zarr.json").read_text())
            if meta.get("node_type") != "group":
                return None
            attrs = meta.get("attributes", {})
            return attrs.get("ome", attrs)
        if (path / ".zattrs").is_file():
            return json.loads((path / ".zattrs").read_text())
    except (OSError, ValueError):
        return None
    return None


def _group_attrs(group: zarr.Group) -> dict[str, Any]:
    """The OME attributes of an open group: under ``ome`` (NGFF 0.5) or at the top (0.4)."""
    attrs = group.attrs.asdict()
    ome = attrs.get("ome")
    return dict(ome) if isinstance(ome, dict) else attrs


def is_ome_zarr(path: str) -> bool:
    """Whether ``path`` is an OME-Zarr image group (or a bioformats2raw layout).

    Local paths are recognised by their metadata; URLs (``s3://…``) by a ``.ome.zarr`` name.
    """
    if is_url(path):
        return path.rstrip("/").lower().endswith(".ome.zarr")
    p = Path(path)
    if not p.is_dir():
        return False
    attrs = _ome_attrs(p) or {}
    return "multiscales" in attrs or "bioformats2raw.layout" in attrs


def _axes(multiscale: dict[str, Any]) -> list[dict[str, Any]]:
    axes = multiscale.get("axes") or list("tczyx")  # NGFF 0.1/0.2 are always 5-D
    return [{"name": a} if isinstance(a, str) else dict(a) for a in axes]


def _letter(axis: dict[str, Any]) -> str:
    name, kind = str(axis.get("name", "")).lower(), axis.get("type")
    if kind == "channel" or (kind is None and name == "c"):
        return "C"
    return {"y": "Y", "x": "X", "z": "Z", "t": "T"}.get(name, "O")


def _scale(transforms: Sequence[dict[str, Any]] | None, ndim: int) -> list[float]:
    scale = [1.0] * ndim
    for t in transforms or ():
        if t.get("type") == "scale" and isinstance(t.get("scale"), list):
            scale = [a * float(b) for a, b in zip(scale, t["scale"])]
    return scale


PixelSize = tuple[float, float] | None


def _image_group(path: str) -> tuple[zarr.Group, dict[str, Any]]:
    """The group holding the image's ``multiscales`` (series 0 of bioformats2raw) and its attrs."""
    try:
        group = zarr.open_group(storage.zarr_store(path, read_only=True), mode="r")
    except Exception as exc:  # zarr raises several types for a bad store
        raise RasterError(f"cannot open {path} as an OME-Zarr group: {exc}") from None
    attrs = _group_attrs(group)
    if "multiscales" not in attrs and "bioformats2raw.layout" in attrs:
        series = group.get("0")
        if not isinstance(series, zarr.Group):
            raise RasterError(f"{path}: bioformats2raw layout without series 0")
        group, attrs = series, _group_attrs(series)
    if not attrs.get("multiscales"):
        raise RasterError(f"{path}: not an OME-Zarr image (no multiscales metadata)")
    return group, attrs


def _level_arrays(path: str, group: zarr.Group, datasets: Sequence[dict]) -> list[zarr.Array]:
    if not datasets:
        raise RasterError(f"{path}: the multiscales metadata lists no datasets")
    arrays = []
    for ds in datasets:
        try:
            node = group[str(ds["path"])]
        except (KeyError, TypeError) as exc:
            raise RasterError(f"{path}: cannot open level {ds.get('path')!r}: {exc}") from None
        if not isinstance(node, zarr.Array):
            raise RasterError(f"{path}: level {ds['path']!r} is not an array")
        arrays.append(node)
    return arrays


def _pixel_sizes(multiscale: dict[str, Any], letters: str) -> tuple[list[PixelSize], str | None]:
    """(y, x) pixel size of every level in the x axis' unit (None without units), and the unit."""
    axes = _axes(multiscale)
    global_scale = _scale(multiscale.get("coordinateTransformations"), len(axes))
    iy, ix = letters.index("Y"), letters.index("X")
    unit_y, unit_x = normalize_unit(axes[iy].get("unit")), normalize_unit(axes[ix].get("unit"))
    my, mx = unit_in_meters(unit_y), unit_in_meters(unit_x)

    def pixel_size(dataset: dict[str, Any]) -> PixelSize:
        scale = _scale(dataset.get("coordinateTransformations"), len(axes))
        sy, sx = scale[iy] * global_scale[iy], scale[ix] * global_scale[ix]
        if unit_y is None or unit_x is None or sy <= 0 or sx <= 0:
            return None
        if unit_y != unit_x and my is not None and mx is not None:
            sy = sy * my / mx
        elif unit_y != unit_x:
            return None
        return sy, sx

    sizes = [pixel_size(ds) for ds in multiscale["datasets"]]
    return sizes, unit_x if sizes[0] is not None else None


def _channel_names(attrs: dict[str, Any], bands: int) -> tuple[str, ...] | None:
    omero = attrs.get("omero") or {}
    labels = [c.get("label") for c in omero.get("channels", []) if isinstance(c, dict)]
    return tuple(str(n) for n in labels) if len(labels) == bands and all(labels) else None


class OmeZarrReader(ReaderBase):
    """One level of an OME-Zarr image (format ``"ome-zarr"``)."""

    def __init__(self, path: str, *, level: int = 0) -> None:
        group, attrs = _image_group(path)
        multiscale = attrs["multiscales"][0]
        letters = "".join(_letter(a) for a in _axes(multiscale))
        datasets = multiscale.get("datasets") or []
        arrays = _level_arrays(path, group, datasets)
        layouts = [AxisLayout.of(letters, a.shape, path) for a in arrays]
        levels = tuple((lay.height, lay.width) for lay in layouts)
        check_level(path, levels, level)
        sizes, unit = _pixel_sizes(multiscale, letters)
        base = layouts[0]
        info = RasterInfo(
            path=path,
            format="ome-zarr",
            height=base.height,
            width=base.width,
            bands=base.bands,
            dtype=str(arrays[0].dtype),
            pixel_size=sizes[0],
            pixel_unit=unit,
            channel_names=_channel_names(attrs, base.bands),
            levels=levels,
            extra={
                "ngff_version": attrs.get("version") or multiscale.get("version"),
                "axes": letters,
                "paths": [ds["path"] for ds in datasets],
                # each level's own scale transform, as declared (see info_at_level)
                "level_pixel_sizes": tuple(sizes),
            },
        )
        self.info = info_at_level(info, level)
        self._array = arrays[level]
        self._layout = layouts[level]

    def read(self, window: Window) -> np.ndarray:
        """Pixels of ``window`` as (bands, h, w)."""
        return self._layout.read(self._array, window)
