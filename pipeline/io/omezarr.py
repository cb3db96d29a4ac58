"""OME-Zarr (NGFF 0.4 on Zarr v2, NGFF 0.5 on Zarr v3): the image reader and the writers.

Reading: the first ``multiscales`` of the group (or of series ``0`` of a ``bioformats2raw``
layout); every dataset is a level. Axes are mapped by type and name: the channel axis becomes the
bands, ``y`` and ``x`` the image plane, and time or z axes must have a single plane ((c, y, x),
(t, c, z, y, x) with t = z = 1, ...). The pixel size of a level is the y/x entries of its
``scale`` transform (times the multiscale-wide one) when both axes have a length unit; without
units there is no pixel size. Channel names come from ``omero`` channel labels.

Writing labels (:func:`write_label_ome_zarr`) makes an image group whose ``labels/<name>`` group
holds the label pyramid, following the NGFF labels layout viewers expect:

* The image: the ingested input (``image_path``, the (bands, H, W) work-directory Zarr) copied
  chunk row by chunk row, with ``omero`` channel names. Without ``image_path`` the image is a
  single-channel uint8 placeholder of the same grid whose chunks are never written (it costs no
  disk and reads as zeros), because labels must live under an image for the NGFF readers.
* The labels: (c=1, y, x), the same axes as the image as in the NGFF examples, uint8/uint16,
  ``image-label`` metadata with a colour (label value + RGBA) and a property (label value +
  ``class`` name) per class, and for the nodata value a transparent colour and class ``nodata``.
* Both pyramids have the same levels: level ``i`` = level 0 ``[::2**i, ::2**i]`` (nearest; built
  from level i-1 of the output, which is the same thing), halving until a level fits in one
  chunk. The ``scale`` of level ``i`` is the input's pixel size (in its NGFF unit) times ``2**i``
  with no translation (pixel k of level i is pixel k·2**i of level 0); without a pixel size the
  scale is 1.0 per pixel with no unit.

The group is written beside the output and renamed into place when complete. ``ngff_version``
"0.4" (Zarr v2, the most widely read) or "0.5" (Zarr v3). Multiscales and label metadata are
written with ome-zarr's own ``write_multiscales_metadata`` / ``write_label_metadata``; the arrays
are filled here chunk row by chunk row so memory stays O(chunk row).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from segpipe.models.errors import InputError, RasterError
from segpipe.pipeline.io.base import RasterInfo, ReaderBase
from segpipe.pipeline.io.levels import (
    atomic_output,
    class_channel_names,
    ngff_unit,
    normalize_unit,
    open_stored,
    probability_block,
    pyramid_shapes,
    read_nearest,
    unit_in_meters,
)
from segpipe.pipeline.io.tiff import AxisLayout
from segpipe.pipeline.tiling import Window

PYRAMID_METHOD = "nearest: level i = level0[::2**i, ::2**i]"


class NgffVersion(StrEnum):
    """The OME-Zarr versions segpipe writes."""

    V04 = "0.4"
    V05 = "0.5"


# ------------------------------------------------------------------------------- reading


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
    if "://" in path:
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


class OmeZarrReader(ReaderBase):
    """One level of an OME-Zarr image (format ``"ome-zarr"``)."""

    def __init__(self, path: str, *, level: int = 0) -> None:
        try:
            group = zarr.open_group(path, mode="r")
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
        multiscale = attrs["multiscales"][0]
        axes = _axes(multiscale)
        letters = "".join(_letter(a) for a in axes)
        datasets = multiscale.get("datasets") or []
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
        layouts = [AxisLayout.of(letters, a.shape, path) for a in arrays]
        levels = tuple((lay.height, lay.width) for lay in layouts)
        if not 0 <= level < len(levels):
            raise InputError(
                f"--level {level} does not exist in {path}: it has levels 0..{len(levels) - 1} "
                f"({', '.join(f'{w}x{h}' for h, w in levels)})"
            )
        global_scale = _scale(multiscale.get("coordinateTransformations"), len(axes))
        iy, ix = letters.index("Y"), letters.index("X")
        units = normalize_unit(axes[iy].get("unit")), normalize_unit(axes[ix].get("unit"))

        def pixel_size(i: int) -> tuple[float, float] | None:
            scale = _scale(datasets[i].get("coordinateTransformations"), len(axes))
            sy, sx = scale[iy] * global_scale[iy], scale[ix] * global_scale[ix]
            if None in units or sy <= 0 or sx <= 0:
                return None
            my, mx = unit_in_meters(units[0]), unit_in_meters(units[1])
            if units[0] != units[1] and my is not None and mx is not None:
                sy = sy * my / mx
            elif units[0] != units[1]:
                return None
            return sy, sx

        omero = attrs.get("omero") or {}
        labels = [c.get("label") for c in omero.get("channels", []) if isinstance(c, dict)]
        base = layouts[0]
        names = tuple(str(n) for n in labels) if len(labels) == base.bands and all(labels) else None
        size0 = pixel_size(0)
        info = RasterInfo(
            path=path,
            format="ome-zarr",
            height=base.height,
            width=base.width,
            bands=base.bands,
            dtype=str(arrays[0].dtype),
            pixel_size=size0,
            pixel_unit=units[1] if size0 is not None else None,
            channel_names=names,
            levels=levels,
            extra={
                "ngff_version": attrs.get("version") or multiscale.get("version"),
                "axes": letters,
                "paths": [ds["path"] for ds in datasets],
            },
        )
        if level:
            height, width = levels[level]
            info = replace(
                info, level=level, height=height, width=width, pixel_size=pixel_size(level)
            )
        self.info = info
        self._array = arrays[level]
        self._layout = layouts[level]

    def read(self, window: Window) -> np.ndarray:
        """Pixels of ``window`` as (bands, h, w)."""
        return self._layout.read(self._array, window)


# ------------------------------------------------------------------------------- writing


def _ome_zarr_writer() -> Any:
    """``ome_zarr.writer``, imported without its import-time deprecation warning (Scaler)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import ome_zarr.writer

    return ome_zarr.writer


def _format(version: NgffVersion | str) -> Any:
    from ome_zarr.format import FormatV04, FormatV05

    try:
        v = NgffVersion(version)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in NgffVersion)
        raise InputError(f"ngff_version {version!r} is not one of {choices}") from None
    return FormatV04() if v is NgffVersion.V04 else FormatV05()


def _spatial(info: RasterInfo) -> tuple[tuple[float, float], dict[str, str] | None]:
    """Level-0 (y, x) scale and the NGFF axis units: the pixel size, or 1.0 without units."""
    unit = ngff_unit(info.pixel_unit)
    if info.pixel_size is None or unit is None:
        return (1.0, 1.0), None
    return (float(info.pixel_size[0]), float(info.pixel_size[1])), {"y": unit, "x": unit}


def _datasets(count: int, scale: tuple[float, float]) -> list[dict[str, Any]]:
    return [
        {
            "path": str(i),
            "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, scale[0] * 2**i, scale[1] * 2**i]}
            ],
        }
        for i in range(count)
    ]


def _create(
    group: zarr.Group, name: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: Any,
    fmt: Any, fill_value: Any = 0,
) -> zarr.Array:
    kwargs: dict[str, Any] = {}
    if fmt.zarr_format == 2:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    else:
        kwargs["dimension_names"] = ("c", "y", "x")
    return group.create_array(
        name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill_value, **kwargs
    )


def _write_pyramid(
    group: zarr.Group,
    source: Any,
    shapes: Sequence[tuple[int, int]],
    chunk: int,
    fmt: Any,
    *,
    dtype: Any,
    convert: Any = None,
) -> list[zarr.Array]:
    """Create and fill arrays ``0..n`` of (C, h, w) in ``group``, one chunk row at a time.

    Level 0 is copied from ``source`` (C, H, W) (through ``convert``); level i is level i-1
    ``[:, ::2, ::2]`` read back from the output.
    """
    bands = source.shape[0]
    arrays = [
        _create(group, str(i), (bands, h, w), (bands, chunk, chunk), dtype, fmt)
        for i, (h, w) in enumerate(shapes)
    ]
    height = shapes[0][0]
    for row in range(0, height, chunk):
        block = np.asarray(source[:, row : row + chunk, :])
        arrays[0][:, row : row + chunk, :] = convert(block) if convert else block
    for i in range(1, len(shapes)):
        for row in range(0, shapes[i][0], chunk):
            stop = min(row + chunk, shapes[i][0])
            arrays[i][:, row:stop, :] = read_nearest(arrays[i - 1], 2, row, stop)
    return arrays


class _Labels2D:
    """A (H, W) label array seen as (1, H, W)."""

    def __init__(self, array: Any) -> None:
        self._array = array
        self.shape = (1, *array.shape)

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        return np.asarray(self._array[key[1:]])[None]


def _omero(
    names: Sequence[str], arrays: Sequence[zarr.Array], dtype: Any, *, window: tuple[float, float]
    | None = None,
) -> dict[str, Any]:
    """``omero`` channel metadata: names, colours, display windows from the coarsest level."""
    coarsest = np.asarray(arrays[-1][:])
    channels = []
    for i, name in enumerate(names):
        if window is not None:
            low, high = window
            start, end = window
        else:
            plane = coarsest[i]
            finite = plane[np.isfinite(plane)] if plane.dtype.kind == "f" else plane
            start = float(finite.min()) if finite.size else 0.0
            end = float(finite.max()) if finite.size else 1.0
            if np.dtype(dtype).kind in "ui":
                low, high = float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
            else:
                low, high = start, end
        color = ("FF0000", "00FF00", "0000FF")[i] if len(names) == 3 else "FFFFFF"
        channels.append(
            {
                "label": str(name),
                "color": color,
                "active": True,
                "window": {"min": low, "max": high, "start": start, "end": end},
            }
        )
    return {"channels": channels, "rdefs": {"model": "color" if len(names) == 3 else "greyscale"}}


def _write_image(
    root: zarr.Group,
    info: RasterInfo,
    shapes: Sequence[tuple[int, int]],
    chunk: int,
    fmt: Any,
    image_path: str | os.PathLike[str] | None,
) -> None:
    writer = _ome_zarr_writer()
    scale, units = _spatial(info)
    if image_path is not None:
        image = open_stored(image_path, info, "image", 3)
        arrays = _write_pyramid(root, image, shapes, chunk, fmt, dtype=image.dtype)
        names = list(info.channel_names or [f"band_{i + 1}" for i in range(image.shape[0])])
        if len(names) != image.shape[0]:
            names = [f"band_{i + 1}" for i in range(image.shape[0])]
        omero = _omero(names, arrays, image.dtype)
    else:  # a placeholder whose chunks are never written: zeros, no disk
        arrays = [
            _create(root, str(i), (1, h, w), (1, chunk, chunk), "uint8", fmt)
            for i, (h, w) in enumerate(shapes)
        ]
        omero = _omero(["placeholder (labels only)"], arrays, "uint8", window=(0.0, 1.0))
    writer.write_multiscales_metadata(
        root, _datasets(len(shapes), scale), fmt=fmt, axes=["c", "y", "x"], axes_units=units,
        name=os.path.basename(info.path), metadata={"omero": omero, "method": PYRAMID_METHOD},
    )


def write_label_ome_zarr(
    labels_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    info: RasterInfo,
    *,
    class_names: Sequence[str],
    colors: Sequence[Sequence[int]],
    nodata: int | None,
    image_path: str | os.PathLike[str] | None = None,
    ngff_version: NgffVersion | str = NgffVersion.V04,
    name: str = "labels",
) -> None:
    """Write the (H, W) label Zarr as an OME-Zarr image with ``labels/<name>`` at ``out_path``.

    See the module docstring for the layout. ``colors`` are (r, g, b) per class; ``nodata`` the
    label value of input nodata (255/65535) or None.
    """
    writer = _ome_zarr_writer()
    fmt = _format(ngff_version)
    labels = open_stored(labels_path, info, "labels", 2)
    if len(colors) != len(class_names):
        raise InputError(f"{len(class_names)} class names but {len(colors)} colors")
    chunk = int(labels.chunks[0])
    shapes = pyramid_shapes(info.height, info.width, chunk)
    scale, units = _spatial(info)
    label_colors = [
        {"label-value": i, "rgba": [int(c) for c in color[:3]] + [255]}
        for i, color in enumerate(colors)
    ]
    properties: list[dict[str, Any]] = [
        {"label-value": i, "class": str(n)} for i, n in enumerate(class_names)
    ]
    if nodata is not None and nodata >= len(class_names):
        label_colors.append({"label-value": int(nodata), "rgba": [0, 0, 0, 0]})
        properties.append({"label-value": int(nodata), "class": "nodata"})
    with atomic_output(out_path) as partial:
        root = zarr.open_group(partial, mode="w", zarr_format=fmt.zarr_format)
        _write_image(root, info, shapes, chunk, fmt, image_path)
        label_group = root.create_group("labels").create_group(name)
        _write_pyramid(label_group, _Labels2D(labels), shapes, chunk, fmt, dtype=labels.dtype)
        writer.write_multiscales_metadata(
            label_group, _datasets(len(shapes), scale), fmt=fmt, axes=["c", "y", "x"],
            axes_units=units, name=name, metadata={"method": PYRAMID_METHOD},
        )
        writer.write_label_metadata(
            root["labels"], name, colors=label_colors, properties=properties, fmt=fmt,
            source={"image": "../../"},
        )
        if fmt.zarr_format == 3:  # NGFF 0.5: every OME group carries the version
            writer.add_metadata(root["labels"], {"version": fmt.version}, fmt=fmt)


def write_probabilities_ome_zarr(
    probs_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    info: RasterInfo,
    *,
    class_names: Sequence[str] | None = None,
    as_uint8: bool = False,
    ngff_version: NgffVersion | str = NgffVersion.V04,
) -> None:
    """Write the (K, H, W) probability Zarr as an OME-Zarr image, one channel per class.

    float16 (as stored) or ``round(p * 255)`` uint8; channels named after the classes; nearest
    pyramid and scales as in :func:`write_label_ome_zarr`.
    """
    writer = _ome_zarr_writer()
    fmt = _format(ngff_version)
    probs = open_stored(probs_path, info, "probabilities", 3)
    chunk = int(probs.chunks[1])
    shapes = pyramid_shapes(info.height, info.width, chunk)
    scale, units = _spatial(info)
    dtype = "uint8" if as_uint8 else "float16"

    def convert(block: np.ndarray) -> np.ndarray:
        return probability_block(block, as_uint8=as_uint8, float_dtype="float16")

    with atomic_output(out_path) as partial:
        root = zarr.open_group(partial, mode="w", zarr_format=fmt.zarr_format)
        arrays = _write_pyramid(root, probs, shapes, chunk, fmt, dtype=dtype, convert=convert)
        names = class_channel_names(probs.shape[0], class_names)
        omero = _omero(names, arrays, dtype, window=(0.0, 255.0 if as_uint8 else 1.0))
        writer.write_multiscales_metadata(
            root, _datasets(len(shapes), scale), fmt=fmt, axes=["c", "y", "x"], axes_units=units,
            name=f"{os.path.basename(info.path)} probabilities",
            metadata={"omero": omero, "method": PYRAMID_METHOD},
        )
