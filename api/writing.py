"""What :func:`segpipe.write` hands the run's writers, and the delayed work that does it.

The writers export from a Zarr label array (as a run's export stage does from its work
directory), so labels are first stored into one, chunk by chunk (``dask.array.store`` for Dask
labels: each task writes whole Zarr chunks, nothing is gathered in memory), then exported by one
task that depends on the store; the Zarr array's folder is removed after.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.dataarray import is_dataarray, spatial_input
from segpipe.models.card import default_palette
from segpipe.models.foundation import InputError
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.labels import NODATA_U8, NODATA_U16

__all__ = ["LabelsExport", "export_labels", "labels_export"]


@dataclass(frozen=True)
class LabelsExport:
    """Labels (H, W; NumPy or Dask) and what their output says of them."""

    labels: Any
    out: str
    info: RasterInfo
    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    nodata: int
    tags: dict[str, str]


def labels_export(
    labels: Any, out: str, crs: str | None, transform: tuple[float, ...] | None,
    names: tuple[str, ...] | None, colors: tuple[tuple[int, int, int], ...] | None,
) -> LabelsExport:
    """Check ``labels`` and gather their metadata: a DataArray's own, else the arguments'."""
    from segpipe.pipeline.options import OutputFormat

    OutputFormat.from_path(out)  # an unknown extension is refused before anything is done
    attrs: dict[str, Any] = {}
    if is_dataarray(labels):
        described = spatial_input(labels.expand_dims("band"))
        crs = crs or described.crs_wkt
        transform = transform or described.transform
        attrs = dict(labels.attrs)
        labels = labels.data
    dtype = np.dtype(labels.dtype)
    if labels.ndim != 2 or dtype not in (np.uint8, np.uint16):
        raise InputError(f"write() takes labels (H, W) of uint8 or uint16, got {labels.ndim} "
                         f"dims of {dtype}: segment()'s result is such an array")
    names = tuple(names or attrs.get("class_names") or ())
    if not names:
        raise InputError("write() needs class_names= for an array's labels (the model card's "
                         "classes, in label order); segment()'s DataArray carries them")
    colors = tuple(tuple(c) for c in (colors or attrs.get("class_colors")
                                       or default_palette(len(names))))
    height, width = (int(n) for n in labels.shape)
    info = RasterInfo(path=out, format="labels", height=height, width=width, bands=1,
                      dtype=str(dtype), crs_wkt=crs, transform=transform)
    nodata = NODATA_U8 if dtype == np.uint8 else NODATA_U16
    tags = {k.upper(): str(v) for k, v in attrs.items() if k.startswith("segpipe_")}
    return LabelsExport(labels, out, info, names, colors, nodata, tags)


def export_labels(export: LabelsExport, store: str) -> Any:
    """The delayed work: store the labels into a Zarr array at ``store``, then export it."""
    import dask
    import dask.array as da

    from segpipe.pipeline.io.zarrstore import create_array

    labels = export.labels
    chunks = _chunks(labels)
    target = create_array(store, tuple(labels.shape), chunks, str(labels.dtype),
                          fill_value=export.nodata)
    if isinstance(labels, da.Array):
        stored = da.store(labels.rechunk(chunks), target, lock=False, compute=False)
    else:
        target[...] = np.asarray(labels)
        stored = None
    return dask.delayed(_export, pure=False)(export, store, stored)


def _chunks(labels: Any) -> tuple[int, int]:
    """Zarr chunks that each task writes whole: the Dask array's first chunk sizes."""
    chunks = getattr(labels, "chunks", None)
    if chunks is not None and isinstance(chunks[0], tuple):
        return int(chunks[0][0]), int(chunks[1][0])
    return min(1024, int(labels.shape[0])), min(1024, int(labels.shape[1]))


def _export(export: LabelsExport, store: str, _stored: Any) -> list[str]:
    """Write the output from the stored labels; returns the paths written."""
    from segpipe.pipeline.io.writers import ExportJob, write_outputs

    job = ExportJob(labels_path=store, out=export.out, info=export.info,
                    class_names=export.class_names, colors=export.colors,
                    nodata=export.nodata, tags=export.tags)
    try:
        return [str(p) for p in write_outputs(job)]
    finally:
        shutil.rmtree(Path(store).parent, ignore_errors=True)
