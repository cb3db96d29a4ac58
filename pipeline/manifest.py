"""The work directory's manifest: what a run is, how far it got, and whether it may be resumed.

A work directory holds one run: the ingested image, the label array, ``manifest.json`` and one
marker file per finished block (``done/<block id>``). The manifest is keyed by a
:class:`RunKey`: the input's identity (size, mtime and a hash of sampled bytes), the model's
sha256 and the parameters that shape the labels. It is written atomically (a temporary file
renamed over it) and only by the driver; block markers are written by whichever worker wrote the
block's chunks, after the write, one file per block, so there is no shared file to race on and a
crash (even ``kill -9``) leaves either a marker for a complete block or none.

Resuming recomputes exactly the blocks without a marker; a key that differs from the stored one
refuses with :class:`ResumeError` instead of mixing results of two different runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from segpipe.models.errors import ResumeError

MANIFEST = "manifest.json"
DONE_DIR = "done"
FORMAT = 1
# bytes hashed at each of the start, middle and end of an input file
SAMPLE_BYTES = 1 << 20


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new content, never a part.

    The text goes to a unique temporary file in the same directory, is flushed to disk, and is
    renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class InputIdentity:
    """Who an input is: path, size, modification time and a hash of sampled bytes.

    For a file the hash covers ``SAMPLE_BYTES`` at its start, middle and end (cheap on a
    terabyte, and it catches a file rewritten with the same size and mtime in practice). For a
    directory (a Zarr store) it covers the names and sizes of its top-level entries and the
    contents of its top-level metadata files. URLs are identified by their text only.
    """

    path: str
    size: int | None
    mtime_ns: int | None
    sample_sha256: str | None

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> InputIdentity:
        """The identity of the input at ``path`` now."""
        text = os.fspath(path)
        if "://" in text:
            return cls(text, None, None, None)
        p = Path(text)
        st = p.stat()
        if p.is_dir():
            return cls(str(p.resolve()), None, st.st_mtime_ns, _directory_digest(p))
        return cls(str(p.resolve()), st.st_size, st.st_mtime_ns, _file_digest(p, st.st_size))


def _file_digest(path: Path, size: int) -> str:
    digest = hashlib.sha256(str(size).encode())
    starts = sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)})
    with path.open("rb") as handle:
        for start in starts:
            handle.seek(start)
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def _directory_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for entry in sorted(path.iterdir()):
        st = entry.stat()
        digest.update(f"{entry.name}|{entry.is_dir()}|{st.st_size}|".encode())
        if entry.is_file() and entry.suffix in ("", ".json") and st.st_size <= SAMPLE_BYTES:
            digest.update(entry.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class RunKey:
    """What makes two runs the same run: input identity, model hash, label-shaping parameters."""

    input: InputIdentity
    model_sha256: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "input": asdict(self.input),
            "model_sha256": self.model_sha256,
            "params": _jsonable(dict(self.params)),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunKey:
        """Inverse of :meth:`to_dict`."""
        return cls(InputIdentity(**d["input"]), d["model_sha256"], dict(d["params"]))

    def differences(self, other: RunKey) -> list[str]:
        """Human-readable differences from ``other`` (the stored key), empty when the same."""
        out = []
        a, b = other.input, self.input
        if a.path != b.path:
            out.append(f"the input is {b.path}, the work directory was made for {a.path}")
        elif (a.size, a.mtime_ns, a.sample_sha256) != (b.size, b.mtime_ns, b.sample_sha256):
            what = [
                name for name, x, y in (
                    ("size", a.size, b.size), ("modification time", a.mtime_ns, b.mtime_ns),
                    ("content", a.sample_sha256, b.sample_sha256),
                ) if x != y
            ]
            out.append(f"the input {b.path} changed ({', '.join(what)})")
        if other.model_sha256 != self.model_sha256:
            out.append(
                f"the model changed (sha256 {other.model_sha256[:12]}… → "
                f"{self.model_sha256[:12]}…)"
            )
        mine, theirs = self.to_dict()["params"], other.to_dict()["params"]
        for name in sorted(set(mine) | set(theirs)):
            if mine.get(name) != theirs.get(name):
                out.append(f"--{name.replace('_', '-')} {theirs.get(name)} → {mine.get(name)}")
        return out


def _jsonable(value: Any) -> Any:
    """Plain JSON values (tuples become lists, enums their values) so keys compare after a load."""
    return json.loads(json.dumps(value, default=str))


@dataclass(frozen=True)
class Manifest:
    """The contents of ``manifest.json``.

    ``stages`` maps finished stages (``ingest``, ``stats``, ``export``) to their seconds;
    ``normalizer`` holds the statistics computed once and reused on resume; ``plan`` is kept for
    people reading the directory.
    """

    key: RunKey
    output: str
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
        return json.dumps(_jsonable(d), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        d["key"] = RunKey.from_dict(d["key"])
        return cls(**d)

    def with_stage(self, name: str, seconds: float) -> Manifest:
        """The manifest with stage ``name`` recorded as finished."""
        return replace(self, stages={**self.stages, name: seconds})

    def save(self, workdir: str | os.PathLike[str]) -> None:
        """Write ``manifest.json`` atomically."""
        write_atomic(Path(workdir) / MANIFEST, self.to_json())

    @classmethod
    def load(cls, workdir: str | os.PathLike[str]) -> Manifest | None:
        """The manifest of ``workdir``, or None when it has none."""
        path = Path(workdir) / MANIFEST
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return cls.from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise ResumeError(
                f"{path} is not a segpipe manifest ({type(exc).__name__}: {exc}); remove the work "
                "directory to start over"
            ) from None


def open_workdir(
    workdir: str | os.PathLike[str], fresh: Manifest, *, resume: bool
) -> tuple[Manifest, bool]:
    """Open ``workdir`` for the run described by ``fresh``; returns (manifest, resumed).

    Without ``resume`` a directory that already holds a manifest is refused (its finished work is
    never wiped); with ``resume`` the stored key must equal ``fresh.key``, else
    :class:`ResumeError` names every difference. A directory without a manifest starts a new run
    (stale block markers in it are removed, since nothing vouches for them).
    """
    workdir = Path(workdir)
    stored = Manifest.load(workdir)
    if stored is not None:
        if not resume:
            raise ResumeError(
                f"work directory {workdir} holds an unfinished run for {stored.key.input.path}; "
                "pass --resume to continue it, or remove the directory to start over"
            )
        diffs = fresh.key.differences(stored.key)
        if diffs:
            raise ResumeError(
                f"cannot --resume in {workdir}: " + "; ".join(diffs)
                + ". Resuming would mix labels of two different runs: remove the work directory "
                "(or choose another --workdir) to start over"
            )
        return stored, True
    workdir.mkdir(parents=True, exist_ok=True)
    clear_done(workdir)
    fresh.save(workdir)
    return fresh, False


@dataclass(frozen=True)
class BlockRecord:
    """A finished block, as written in its marker: where, when, how long, by which run."""

    block_id: str
    pixels: int
    nodata_pixels: int
    seconds: float
    worker: str
    pid: int
    run_id: str
    finished: float = field(default_factory=time.time)


def done_dir(workdir: str | os.PathLike[str]) -> Path:
    """Where the block markers are."""
    return Path(workdir) / DONE_DIR


def mark_done(workdir: str | os.PathLike[str], record: BlockRecord) -> None:
    """Record ``record.block_id`` as finished (call only after its chunks are written)."""
    folder = done_dir(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / record.block_id, json.dumps(asdict(record)))


def done_blocks(workdir: str | os.PathLike[str]) -> dict[str, BlockRecord]:
    """The finished blocks of ``workdir`` by id (markers that cannot be read do not count)."""
    folder = done_dir(workdir)
    out: dict[str, BlockRecord] = {}
    if not folder.is_dir():
        return out
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        try:
            record = BlockRecord(**json.loads(Path(entry.path).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue
        out[record.block_id] = record
    return out


def clear_done(workdir: str | os.PathLike[str], block_ids: Iterable[str] | None = None) -> None:
    """Forget finished blocks: those named, or all of them."""
    folder = done_dir(workdir)
    if block_ids is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for block_id in block_ids:
        with contextlib.suppress(FileNotFoundError):
            (folder / block_id).unlink()
