"""The work directory of one run: its manifest, its arrays, its block markers, its stage timings.

A work directory holds one run: the ingested image (``image.zarr``, unless the input is itself a
usable Zarr array) with, for an input whose GDAL mask is a band of its own (an internal mask, an
alpha band), that mask as ``valid.zarr`` (True where valid), the label array (``labels.zarr``),
optionally ``probabilities.zarr``,
``manifest.json`` and one marker per finished block (``done/<block id>``). The manifest records
the run's :class:`~segpipe.pipeline.keys.LabelKey`, its export key, the normalization statistics
(computed once, reused on resume) and the finished stages with their seconds, in the stage order
that is the contract for resume: ingest → stats → segment → export.

The manifest is written atomically and only by the driver. A block marker is written by whichever
worker wrote the block's chunks, after the write, one small file per block, so there is no shared
file to race on and a crash (even ``kill -9``) leaves either a marker for a complete block or
none. Resuming recomputes exactly the blocks without a marker.

The folder may be an object-store URL (``s3://bucket/run``): the arrays, the manifest and the
markers are then objects, through :mod:`segpipe.pipeline.storage` (the manifest one PUT, each
marker one conditional PUT written once, resume lists the markers).
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.models.foundation import ResumeError
from segpipe.pipeline import storage
from segpipe.pipeline.keys import LabelKey, jsonable

__all__ = ["BlockRecord", "Manifest", "WorkDir", "WorkState", "pack_array", "unpack_array"]

MANIFEST = "manifest.json"
DONE_DIR = "done"
FORMAT = 3  # 3: block markers carry objects (components, edges) and per-row counts
#: Markers of an object-store work directory fetched at once (one row of blocks at a time).
MARKER_READERS = 8


@dataclass(frozen=True)
class BlockRecord:
    """A finished block, as written in its marker: pixels, per-label counts, where and when.

    ``counts`` maps each label value written in the block's core (nodata included, under its
    own value) to its pixel count, so the report never re-reads the label array. ``shape`` is
    the core's (height, width). For objects (:mod:`segpipe.pipeline.objects`): ``components``,
    the number of 4-connected components per class in the core, and ``edges``, the packed
    component ids along its top, bottom, left and right edges. For geodesic areas
    (:mod:`segpipe.pipeline.areas`), only when the job asks: ``row_classes`` and ``row_counts``,
    the packed per-class pixel counts of each row of the core (``len(row_classes)`` × height).
    Arrays are packed with :func:`pack_array` (a 2048-px block's edges are 8k ids).
    ``skipped``: written as nodata without running the model (outside ``--mask``, or all
    nodata).
    """

    block_id: str
    pixels: int
    counts: Mapping[int, int]
    seconds: float
    worker: str
    pid: int
    run_id: str
    finished: float = field(default_factory=time.time)
    shape: tuple[int, int] = (0, 0)
    components: Mapping[int, int] = field(default_factory=dict)
    edges: str = ""
    row_classes: tuple[int, ...] = ()
    row_counts: str = ""
    skipped: bool = False

    @property
    def index(self) -> tuple[int, int]:
        """The block's (row, column) in the block grid, from its id."""
        bi, bj = self.block_id.split("_")
        return int(bi), int(bj)

    def edge_ids(self) -> np.ndarray:
        """The unpacked edge ids (top, bottom, left, right)."""
        return unpack_array(self.edges)

    def row_table(self) -> np.ndarray:
        """The unpacked per-class counts per row, shape (len(row_classes), height)."""
        return unpack_array(self.row_counts).reshape(len(self.row_classes), self.shape[0])

    def to_json(self) -> str:
        """JSON text of the marker."""
        return json.dumps({
            **asdict(self), "counts": {str(k): v for k, v in self.counts.items()},
            "components": {str(k): v for k, v in self.components.items()},
        })

    @classmethod
    def from_json(cls, text: str) -> BlockRecord:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        d["counts"] = {int(k): int(v) for k, v in d["counts"].items()}
        d["components"] = {int(k): int(v) for k, v in d["components"].items()}
        d["shape"] = tuple(d["shape"])
        d["row_classes"] = tuple(d["row_classes"])
        return cls(**d)


def pack_array(a: np.ndarray) -> str:
    """A 1-d integer array as compact text: ``<dtype>:<base64 of its zlib-compressed bytes>``."""
    flat = np.ascontiguousarray(a).ravel()
    data = base64.b64encode(zlib.compress(flat.tobytes(), 6)).decode("ascii")
    return f"{flat.dtype.str}:{data}"


def unpack_array(text: str) -> np.ndarray:
    """Inverse of :func:`pack_array` (an empty text is an empty array)."""
    if not text:
        return np.zeros(0, np.uint32)
    dtype, data = text.split(":", 1)
    return np.frombuffer(zlib.decompress(base64.b64decode(data)), np.dtype(dtype)).copy()


@dataclass(frozen=True)
class Manifest:
    """The contents of ``manifest.json`` (``plan`` is kept for people reading the directory)."""

    key: LabelKey
    output: str
    export: Mapping[str, Any] = field(default_factory=dict)
    plan: Mapping[str, Any] = field(default_factory=dict)
    normalizer: Mapping[str, Any] | None = None
    stages: Mapping[str, float] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    segpipe_version: str = ""
    format: int = FORMAT

    def to_json(self) -> str:
        """The manifest as indented JSON."""
        d = asdict(self)
        d["key"] = self.key.to_dict()
        return json.dumps(jsonable(d), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise ValueError(
                f"it has work-directory format {d.get('format')!r} and this segpipe reads "
                f"format {FORMAT} only, whose block markers carry what areas and objects need"
            )
        d["key"] = LabelKey.from_dict(d["key"])
        return cls(**d)

    def with_stage(self, name: str, seconds: float) -> Manifest:
        """The manifest with stage ``name`` recorded as finished."""
        return replace(self, stages={**self.stages, name: seconds})

    @property
    def segmented(self) -> bool:
        """Whether every block of the run was segmented (the label array is complete)."""
        return "segment" in self.stages


class WorkState(StrEnum):
    """What :meth:`WorkDir.open` found: a new run, an unfinished one resumed, a finished one."""

    NEW = "new"
    RESUMED = "resumed"
    FINISHED = "finished"


class _Held:
    """The driver's copy of the manifest, kept between stages (see :class:`WorkDir`)."""

    __slots__ = ("manifest",)

    def __init__(self) -> None:
        self.manifest: Manifest | None = None


@dataclass(frozen=True)
class WorkDir:
    """One run's folder. Paths of its arrays, its manifest and its block markers.

    The driver holds the manifest in memory once it has opened or loaded it: :meth:`require`
    answers from that copy, and only a change is written (:meth:`open`, then one save per stage
    recorded), so a run reads ``manifest.json`` once. Only the driver writes the manifest, so
    the copy cannot go stale within a run, and :meth:`open` (the start of every run) always
    reads the file. The copy travels with no pickle: a Dask worker gets the path alone (it only
    writes and lists block markers), and it takes no part in equality or hashing.
    """

    path: str
    _held: _Held = field(default_factory=_Held, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "path", state["path"])
        object.__setattr__(self, "_held", _Held())

    @property
    def image(self) -> str:
        """The ingested copy of the input."""
        return storage.join(self.path, "image.zarr")

    @property
    def valid(self) -> str:
        """The ingested copy of the input's mask band (True where valid), when it has one."""
        return storage.join(self.path, "valid.zarr")

    @property
    def preview(self) -> str:
        """Level 0's decimation for the quicklook, kept by the ingest (``io/preview.py``)."""
        return storage.join(self.path, "preview.zarr")

    @property
    def labels(self) -> str:
        """The label array the blocks write."""
        return storage.join(self.path, "labels.zarr")

    @property
    def probabilities(self) -> str:
        """The probability array (written only when asked for)."""
        return storage.join(self.path, "probabilities.zarr")

    @property
    def seams(self) -> str:
        """The seam join's block offsets and union pairs (:mod:`segpipe.pipeline.seamjoin`)."""
        return storage.join(self.path, "seams")

    @property
    def markers(self) -> str:
        """Where the block markers are (a folder, or an object prefix)."""
        return storage.join(self.path, DONE_DIR)

    @property
    def done_dir(self) -> Path:
        """The folder of the block markers of a local work directory."""
        return Path(self.markers)

    def load(self) -> Manifest | None:
        """The manifest as stored in ``manifest.json`` (read now), or None when there is none."""
        path = storage.join(self.path, MANIFEST)
        try:
            text = storage.read_text(path)  # a binary file in its place: UnicodeDecodeError below
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ResumeError(
                f"{path} cannot be read ({type(exc).__name__}: {exc.strerror}); remove the work "
                "directory to start over"
            ) from None
        except ValueError as exc:
            raise _unreadable(path, exc) from None
        try:
            return Manifest.from_json(text)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise _unreadable(path, exc) from None

    def save(self, manifest: Manifest) -> None:
        """Write ``manifest.json`` atomically; it becomes the manifest held in memory."""
        storage.write_text(storage.join(self.path, MANIFEST), manifest.to_json())
        self._held.manifest = manifest

    def record_stage(self, name: str, seconds: float) -> Manifest:
        """Record stage ``name`` as finished in the stored manifest; returns the new manifest."""
        manifest = self.require().with_stage(name, seconds)
        self.save(manifest)
        return manifest

    def require(self) -> Manifest:
        """The manifest, which must exist during a run: the copy held in memory, once loaded."""
        if self._held.manifest is not None:
            return self._held.manifest
        manifest = self.load()
        if manifest is None:
            raise ResumeError(f"the work directory {self.path} lost its manifest during the run")
        self._held.manifest = manifest
        return manifest

    def open(self, fresh: Manifest, *, resume: bool) -> tuple[Manifest, WorkState]:
        """Open the folder for the run described by ``fresh``; returns (manifest, state).

        Empty or missing: a new run. A finished run with the same label key (a work directory
        kept with ``--keep-workdir``): reused, only the export runs again. An unfinished run with
        the same key: resumed with ``resume``, else refused (its work is never wiped). Another
        key: refused, naming every difference.
        """
        self._held.manifest = None  # what is on disk decides, whatever this process held
        stored = self.load()
        if stored is None:
            storage.makedirs(self.path)
            self.clear_done()
            self.save(fresh)
            return fresh, WorkState.NEW
        diffs = fresh.key.differences(stored.key)
        if diffs:
            verb = "cannot --resume in" if resume else "refusing to reuse"
            raise ResumeError(
                f"{verb} {self.path}: " + "; ".join(diffs) + ". It holds labels of another run: "
                "remove the work directory (or choose another --workdir) to start over"
            )
        if not stored.segmented and not resume:
            raise ResumeError(
                f"work directory {self.path} holds an unfinished run for {stored.key.input.path};"
                " pass --resume to continue it, or remove the directory to start over"
            )
        manifest = replace(stored, export=fresh.export, output=fresh.output)
        self.save(manifest)
        return manifest, WorkState.FINISHED if stored.segmented else WorkState.RESUMED

    def mark_done(self, record: BlockRecord) -> None:
        """Record ``record.block_id`` as finished (call only after its chunks are written)."""
        storage.write_once(storage.join(self.markers, record.block_id), record.to_json())

    def done_blocks(self) -> dict[str, BlockRecord]:
        """The finished blocks by id (markers that cannot be read do not count).

        Every record at once: for a test or a small run. The driver streams them with
        :meth:`finished` instead.
        """
        return {record.block_id: record for record in self.finished()}

    def done_ids(self) -> set[str]:
        """The ids of the finished blocks (markers read one row of blocks at a time)."""
        return {record.block_id for record in self.finished()}

    def finished(self) -> Iterator[BlockRecord]:
        """The finished blocks in raster order (block row by block row), read lazily.

        The markers of one row of blocks at a time are in memory, never all of them, so the
        report's memory does not grow with the number of blocks (an object store's are fetched
        a row at a time, concurrently). Markers that cannot be read, or whose name is no block
        id, do not count.
        """
        names = _marker_names(self.markers)
        pool = ThreadPoolExecutor(MARKER_READERS) if storage.is_url(self.markers) else None
        read = pool.map if pool is not None else map
        try:
            for _, row in groupby(sorted(names), key=lambda index: index[0]):
                paths = [storage.join(self.markers, names[index]) for index in row]
                for text in read(_text_or_none, paths):
                    record = _record_or_none(text)
                    if record is not None:
                        yield record
        finally:
            if pool is not None:
                pool.shutdown()

    def clear_done(self) -> None:
        """Forget every finished block."""
        storage.remove_tree(self.markers)

    def remove(self) -> None:
        """Delete the whole folder (and forget the manifest held in memory)."""
        self._held.manifest = None
        storage.remove_tree(self.path)


def _marker_names(folder: str) -> dict[tuple[int, int], str]:
    """The names of the markers directly in ``folder`` by block index; nothing is read."""
    out: dict[tuple[int, int], str] = {}
    for name in storage.list_names(folder):
        index = block_index(name)
        if index is not None:
            out[index] = name
    return out


def block_index(name: str) -> tuple[int, int] | None:
    """The block index a marker is named by (``<row>_<col>``), or None for another name."""
    row, _, col = name.partition("_")
    return (int(row), int(col)) if row.isdigit() and col.isdigit() else None


def _text_or_none(path: str) -> str | None:
    try:
        return storage.read_text(path)
    except (OSError, ValueError):
        return None


def _record_or_none(text: str | None) -> BlockRecord | None:
    if text is None:
        return None
    try:
        return BlockRecord.from_json(text)
    except (ValueError, TypeError, KeyError):
        return None


def _unreadable(path: str, exc: Exception) -> ResumeError:
    return ResumeError(
        f"{path} is not a manifest this segpipe can read ({type(exc).__name__}: {exc}); "
        "remove the work directory to start over"
    )
