"""Making what a block wrote to a local Zarr array durable before its marker says it is done.

A block marker promises that the block's chunks are complete; after a power loss a resume
trusts it and never recomputes the block. So the chunk files a block wrote are fsynced before
its marker is written, and so is the folder holding them (Zarr writes each chunk to a temporary
file and renames it into place). The folders above (``c/<row>/``, ``c/``) are created with the
array (:func:`make_chunk_folders`), so no block creates one, and made durable once with the
rest of the ingest (:func:`sync_tree`, before the manifest records the ingest as done): a
block needs no fsync of a folder it shares with every other block. An array in a bucket has
nothing to fsync (a PUT that returned is stored).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import zarr

from segpipe.models.foundation import fsync_path, fsync_tree
from segpipe.pipeline import storage

__all__ = ["chunk_files", "make_chunk_folders", "sync_region", "sync_tree"]


def chunk_files(path: str, region: tuple[slice, ...]) -> list[Path]:
    """The chunk files of the local Zarr array ``path`` that hold ``region`` (existing or not)."""
    array = zarr.open_array(path, mode="r")
    ranges = []
    for s, size, chunk in zip(region, array.shape, array.chunks):
        start, stop, _ = s.indices(size)
        ranges.append(range(start // chunk, (max(stop, start + 1) - 1) // chunk + 1))
    keys = [array.metadata.encode_chunk_key(coords) for coords in itertools.product(*ranges)]
    return [Path(path, *key.split("/")) for key in keys]


def make_chunk_folders(path: str) -> None:
    """Create, empty, every folder the chunks of the new local array ``path`` will go in."""
    if storage.is_url(path):
        return
    array = zarr.open_array(path, mode="r")
    rows = [range(n) for n in array.cdata_shape[:-1]]  # the last index names the file
    for coords in itertools.product(*rows):
        key = array.metadata.encode_chunk_key((*coords, 0))
        Path(path, *key.split("/")).parent.mkdir(parents=True, exist_ok=True)


def sync_region(path: str, region: tuple[slice, ...]) -> None:
    """Flush the chunk files holding ``region`` of the array ``path`` to disk, then their folders.

    A chunk Zarr did not store (equal to the fill value) has no file: its folder's fsync makes
    its absence durable. Nothing to do for an array in a bucket.
    """
    if storage.is_url(path):
        return
    files = chunk_files(path, region)
    for f in files:
        if f.is_file():
            fsync_path(f)
    for folder in {f.parent for f in files}:
        if folder.is_dir():
            fsync_path(folder)


def sync_tree(path: str | os.PathLike[str]) -> None:
    """Flush every file and folder under the local folder ``path`` to disk, and its own name."""
    if storage.is_url(os.fspath(path)) or not os.path.exists(path):
        return
    fsync_tree(path)
    fsync_path(os.path.dirname(os.path.abspath(path)))
