"""Zarr v3 arrays in the work directory: the ingested image and the label mask.

The image is stored (bands, height, width) chunked (bands, T, T): all bands of a tile in one
chunk, so a block reads whole chunks and any number of workers read in parallel. Labels are
(height, width) chunked (T, T); each block writes whole chunks only, so parallel writers never
share a chunk.

Work arrays are stored uncompressed (:data:`WORK_COMPRESSORS`): a chunk then costs what a
memory copy costs to write and to read. Measured on a 4096² 3-band uint8 mosaic of photographs
in 512² chunks (write + read of every chunk, median of 3, 2 shared cores): Zarr's default zstd
0.58 s + 0.24 s (32.4 MiB), no compression 0.08 s + 0.06 s (48 MiB, a numpy copy of the image
takes 0.07 s), blosc lz4 0.12 s + 0.08 s (42.3 MiB), zstd level 1 0.24 s + 0.29 s (35 MiB). The
free-disk check already counts the arrays uncompressed (:mod:`segpipe.pipeline.diskspace`).
Chunks equal to the fill value (nodata labels, an all-valid mask) are still not stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import zarr

from segpipe.models.foundation import RasterError
from segpipe.pipeline import storage
from segpipe.pipeline.io.base import RasterInfo, Reader, ReaderBase
from segpipe.pipeline.io.durable import make_chunk_folders
from segpipe.pipeline.io.preview import Preview
from segpipe.pipeline.tiling import Window

# attribute under which segpipe keeps the source RasterInfo of an ingested copy
INFO_ATTR = "segpipe_raster_info"

#: The codecs of work arrays after the ``bytes`` codec: none (see the module docstring).
WORK_COMPRESSORS = None


def is_zarr(path: str) -> bool:
    """Whether ``path`` is a Zarr array, v3 or v2 (OME-Zarr groups have their own reader).

    Local paths and URLs are recognised by their metadata; a URL with a ``.zarr`` name that is
    not ``.ome.zarr`` (as the work directory's arrays are named) without a request.
    """
    if storage.is_url(path):
        return _is_zarr_url(path)
    p = Path(path)
    if not p.is_dir():
        return False
    return (p / ".zarray").is_file() or (
        (p / "zarr.json").is_file() and _node_type(p) == "array"
    )


def direct_source(path: str, info: RasterInfo, tile: int) -> str | None:
    """The Zarr array to segment from in place, skipping the ingest copy, when that is sound.

    That is a plain (bands, H, W) or (H, W) array, or the chosen level of an OME-Zarr image
    with axes (c, y, x) or (y, x), whose chunks hold all bands and are between 64 px and four
    tiles on a side (so a block reads a bounded number of whole chunks). Else None.
    """
    if is_zarr(path):
        candidate = path
    elif info.format == "ome-zarr" and info.extra.get("axes") in ("CYX", "YX"):
        candidate = storage.join(path, str(info.extra["paths"][info.level]))
    else:
        return None
    try:
        array = zarr.open_array(storage.zarr_store(candidate, read_only=True), mode="r")
    except Exception:  # not an array after all (e.g. a bioformats2raw layout)
        return None
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.chunks[0] != array.shape[0]):
        return None
    if not all(64 <= c <= 4 * tile for c in array.chunks[-2:]):
        return None
    return candidate


def _is_zarr_url(url: str) -> bool:
    name = storage.basename(url).lower()
    if name.endswith(".zarr"):
        return not name.endswith(".ome.zarr")
    try:
        meta = storage.read_text(storage.join(url, "zarr.json"))
    except (OSError, ValueError):
        return storage.exists(storage.join(url, ".zarray"))
    import json

    try:
        return json.loads(meta).get("node_type") == "array"
    except ValueError:
        return False


def _node_type(p: Path) -> str | None:
    import json

    try:
        return json.loads((p / "zarr.json").read_text()).get("node_type")
    except (OSError, ValueError):
        return None


class ZarrReader(ReaderBase):
    """A (bands, height, width) or (height, width) Zarr array, such as an ingested image."""

    def __init__(self, path: str, *, level: int = 0) -> None:
        if level:
            raise RasterError(f"{path}: a plain Zarr array has only level 0")
        try:
            self._array = zarr.open_array(storage.zarr_store(path, read_only=True), mode="r")
        except Exception as exc:  # zarr raises several types for a bad store
            raise RasterError(f"cannot open {path} as a Zarr array: {exc}") from None
        shape = self._array.shape
        if len(shape) not in (2, 3):
            raise RasterError(f"{path}: expected a 2-D or 3-D array, found shape {shape}")
        stored = dict(self._array.attrs).get(INFO_ATTR)
        bands = shape[0] if len(shape) == 3 else 1
        if isinstance(stored, dict):
            info = RasterInfo.from_dict(stored)
        else:
            info = RasterInfo(
                path=path, format="zarr", height=shape[-2], width=shape[-1], bands=bands,
                dtype=str(self._array.dtype), levels=((shape[-2], shape[-1]),),
            )
        self.info = info

    @property
    def chunks(self) -> tuple[int, ...]:
        """The storage chunk shape."""
        return tuple(self._array.chunks)

    def read(self, window: Window) -> np.ndarray:
        """Pixels of ``window`` as (bands, h, w)."""
        rows, cols = window.slices
        if self._array.ndim == 2:
            return np.asarray(self._array[rows, cols])[None]
        return np.asarray(self._array[:, rows, cols])


def create_array(
    path: str | os.PathLike[str], shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str,
    *, fill_value: float = 0, attrs: dict | None = None,
) -> zarr.Array:
    """Create (or replace) an uncompressed Zarr v3 array at ``path`` (:data:`WORK_COMPRESSORS`).

    On a local disk the folders of its chunks are created with it (empty), so that writers
    never create one (:mod:`segpipe.pipeline.io.durable`).
    """
    array = zarr.create_array(
        store=storage.zarr_store(os.fspath(path)), shape=shape, chunks=chunks, dtype=dtype,
        fill_value=fill_value, overwrite=True, zarr_format=3, compressors=WORK_COMPRESSORS,
    )
    if attrs:
        array.attrs.update(attrs)
    make_chunk_folders(os.fspath(path))
    return array


def open_array(path: str | os.PathLike[str], mode: str = "r+") -> zarr.Array:
    """Open an existing array."""
    return zarr.open_array(storage.zarr_store(os.fspath(path), read_only=mode == "r"), mode=mode)


def info_attrs(info: RasterInfo) -> dict:
    """``info`` as JSON-able attributes (without the free-form extras)."""
    return {INFO_ATTR: info.to_dict()}


def ingest(
    open_reader: Callable[[], AbstractContextManager[Reader]], path: str | os.PathLike[str],
    tile: int, *, threads: int = 1, valid_path: str | os.PathLike[str] | None = None,
    preview: Preview | None = None,
) -> None:
    """Copy a reader's level into a Zarr array at ``path``, chunk-aligned strips on ``threads``.

    ``open_reader()`` opens the source (each thread opens its own: readers are not shared across
    threads). Strips are one chunk row by at most 16 chunks; thread ``i`` copies strips ``i``,
    ``i + threads``, … so no two threads write one chunk. ``valid_path``: the reader's mask
    band (:meth:`Reader.read_mask`) is copied there too, strip by strip with the pixels, as a
    (height, width) bool array chunked (T, T). ``preview``: filled with the decimation of every
    window copied (for the quicklook; :mod:`segpipe.pipeline.io.preview`).
    """
    with open_reader() as reader:
        info = reader.info
        create_array(path, (info.bands, info.height, info.width), (info.bands, tile, tile),
                     info.dtype, attrs=info_attrs(info))
        if valid_path is not None:
            create_array(valid_path, (info.height, info.width), (tile, tile), "bool",
                         fill_value=True)
        step = 16 * tile
        windows = [
            Window(r, c, min(tile, info.height - r), min(step, info.width - c))
            for r in range(0, info.height, tile)
            for c in range(0, info.width, step)
        ]
        parts = [windows[i::threads] for i in range(min(max(1, threads), len(windows)))]

        def copy(part: list[Window]) -> None:
            with open_reader() as own:
                _copy_windows(own, path, part, valid_path, preview)

        # this reader copies the first part; each other thread opens its own
        with ThreadPoolExecutor(max(1, len(parts) - 1),
                                thread_name_prefix="segpipe-ingest") as pool:
            others = [pool.submit(copy, part) for part in parts[1:]]
            _copy_windows(reader, path, parts[0], valid_path, preview)
            for done in others:
                done.result()


def _copy_windows(
    reader: Reader, path: str | os.PathLike[str], windows: list[Window],
    valid_path: str | os.PathLike[str] | None = None, preview: Preview | None = None,
) -> None:
    # every chunk is written, even one equal to the fill value: Zarr's check for those compares
    # each chunk in full and cost ~40 % of the ingest (image chunks are almost never empty)
    array = open_array(path).with_config({"write_empty_chunks": True})
    valid = open_array(valid_path) if valid_path is not None else None
    for w in windows:
        rows, cols = w.slices
        pixels = reader.read(w)
        array[:, rows, cols] = pixels
        if preview is not None:
            preview.add(w, pixels)
        if valid is not None:
            mask = reader.read_mask(w)
            if mask is None:
                raise RasterError(f"{reader.info.path} has no mask band to copy")
            valid[rows, cols] = mask
