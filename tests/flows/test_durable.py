"""Durable on power loss: what a run publishes reaches the disk before the name that vouches for it.

The write path of a small in-process run is traced: every ``os.fsync`` (with the path of its
file descriptor, read from ``/proc/self/fd``), every ``os.replace`` and ``os.mkdir``, in order.
A block's label chunks must be fsynced before its marker appears (and its copy of the input
before its feed marker), and every folder on a chunk's
path fsynced into its parent before the chunk is written; every file published by a rename (the
output, its sidecar, the manifest, the markers) must be fsynced before the rename and its
folder after. The chunk files are found on the disk at the end (the oracle), not from
segpipe's own list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from segpipe.flows.cli import main
from tests.flows.conftest import SMALL, SMALL_ARGS, read_labels


@dataclass(frozen=True)
class Event:
    """An fsync of ``path``, a rename of ``source`` to ``path``, or the creation of a folder."""

    kind: str
    path: str
    source: str = ""


class Trace:
    """Records fsyncs, renames and new folders in order (installed with monkeypatch)."""

    def __init__(self, monkeypatch) -> None:
        self.events: list[Event] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            self.events.append(Event("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def replace(src, dst, **kw) -> None:
            real_replace(src, dst, **kw)
            self.events.append(Event("replace", os.path.realpath(dst), os.path.realpath(src)))

        def mkdir(path, *args, **kw) -> None:
            real_mkdir(path, *args, **kw)
            self.events.append(Event("mkdir", os.path.realpath(path)))

        real_mkdir = os.mkdir
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "mkdir", mkdir)

    def fsyncs(self, path: str | Path) -> list[int]:
        """Positions of the fsyncs of ``path``."""
        target = os.path.realpath(path)
        return [i for i, e in enumerate(self.events) if e.kind == "fsync" and e.path == target]

    def made(self, path: str | Path) -> int:
        """Position of the (last) creation of the folder ``path``."""
        target = os.path.realpath(path)
        found = [i for i, e in enumerate(self.events) if e.kind == "mkdir" and e.path == target]
        assert found, f"{path} was never created"
        return found[-1]

    def renamed_to(self, path: str | Path) -> int:
        """Position of the (last) rename onto ``path``."""
        target = os.path.realpath(path)
        found = [i for i, e in enumerate(self.events) if e.kind == "replace" and e.path == target]
        assert found, f"{path} was never renamed into place"
        return found[-1]


def published(trace: Trace) -> list[tuple[int, Event]]:
    """The renames of segpipe's atomic outputs (out of a hidden ``.NAME.*.partial`` folder)."""
    return [(i, e) for i, e in enumerate(trace.events) if e.kind == "replace"
            and Path(e.source).parent.name.endswith(".partial")]


def test_chunks_reach_the_disk_before_markers_and_renames_are_fsynced(
    prefect_api, assets, tmp_path, monkeypatch, capsys
):
    """Power loss: chunks fsynced before their marker; each publish fsynced, then its folder."""
    out = tmp_path / "labels.tif"
    workdir = tmp_path / "work"
    trace = Trace(monkeypatch)
    code = main(["run", "--input", str(assets["small"]), "--output", str(out), "--model",
                 str(assets["model"]), *SMALL_ARGS, "--workers", "0", "--quiet",
                 "--workdir", str(workdir), "--keep-workdir"])
    assert code == 0, capsys.readouterr().err
    monkeypatch.undo()

    # every chunk file of the label store (one block of one tile = one chunk c/<i>/<j>) was
    # fsynced, and its folder after its rename, before the block's marker appeared; the
    # folders above it were made durable before any block ran (created with the array)
    chunks = sorted((workdir / "labels.zarr" / "c").glob("*/*"))
    rows, cols = -(-SMALL[1] // 32), -(-SMALL[2] // 32)
    assert len(chunks) == rows * cols  # no block of this input is all nodata
    for chunk in chunks:
        marker = trace.renamed_to(workdir / "done" / f"{chunk.parent.name}_{chunk.name}")
        written = trace.renamed_to(chunk)  # Zarr writes a temporary file and renames it
        assert any(written < i < marker for i in trace.fsyncs(chunk)), chunk
        assert any(written < i < marker for i in trace.fsyncs(chunk.parent)), chunk
        for folder in (chunk.parent, chunk.parent.parent, workdir / "labels.zarr"):
            made = trace.made(folder)
            assert any(made < i < written for i in trace.fsyncs(folder.parent)), (chunk, folder)

    # the input's copy, made block by block ahead of the blocks: each block's image chunk
    # (c/<band chunk>/<i>/<j>, all bands in one) fsynced before the block's feed marker
    copied = sorted(p for p in (workdir / "image.zarr" / "c").rglob("*") if p.is_file())
    assert len(copied) == rows * cols
    for chunk in copied:
        marker = trace.renamed_to(workdir / "fed" / f"{chunk.parent.name}_{chunk.name}")
        written = trace.renamed_to(chunk)
        assert any(written < i < marker for i in trace.fsyncs(chunk)), chunk

    # every published file was fsynced before its rename, and its folder after it
    renames = published(trace)
    names = {Path(e.path).relative_to(os.path.realpath(tmp_path)).as_posix() for _, e in renames}
    assert {"labels.tif", ".labels.tif.segpipe.json", "work/manifest.json"} <= names
    assert sum(n.startswith("work/done/") for n in names) == rows * cols
    for at, event in renames:
        assert any(i < at for i in trace.fsyncs(event.source)), event
        assert any(i > at for i in trace.fsyncs(Path(event.path).parent)), event
    # the published output holds the labels of the chunks (read back with zarr)
    np.testing.assert_array_equal(read_labels(out), zarr.open_array(workdir / "labels.zarr")[:])
