"""The manifest is held in memory on the driver: one run reads ``manifest.json`` once and writes
it once at open plus once per stage it records.

Oracle: the file-level reads and writes of ``manifest.json`` (counted by wrapping the storage
functions every file access goes through), against the stages the manifest on disk lists after
the run, read back with ``json``, and the difference between consecutive written manifests.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from segpipe.pipeline import storage
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from segpipe.pipeline.workdir import MANIFEST, WorkDir
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.test_exactness import tiny_unet


class ManifestIO:
    """Every read and write of a ``manifest.json`` in this process, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        self.writes: list[dict] = []
        read, write = storage.read_text, storage.write_text

        def counted_read(path: str) -> str:
            self.reads += path.endswith(MANIFEST)
            return read(path)

        def counted_write(path: str, text: str) -> None:
            if path.endswith(MANIFEST):
                self.writes.append(json.loads(text))
            write(path, text)

        monkeypatch.setattr(storage, "read_text", counted_read)
        monkeypatch.setattr(storage, "write_text", counted_write)


def one_stage_apart(before: dict, after: dict) -> bool:
    """Whether ``after`` is ``before`` with exactly one stage recorded (added or re-timed), and
    nothing else changed but what the stats stage keeps (the normalizer, with that stage)."""
    changed = {k for k in after["stages"] if before["stages"].get(k) != after["stages"][k]}
    own = {"stages"} | ({"normalizer"} if changed == {"stats"} else set())
    rest = ({k: v for k, v in d.items() if k not in own} for d in (before, after))
    return len(changed) == 1 and set(before["stages"]) <= set(after["stages"]) and (
        next(rest) == next(rest)
    )


@pytest.fixture()
def job(tmp_path: Path) -> RunOptions:
    src = write_geotiff(tmp_path / "in.tif", smooth_image((3, 96, 80), "uint8"))
    model = tiny_unet(tmp_path / "unet.pt", 3, "same")
    return RunOptions.of(str(src), str(tmp_path / "out.tif"), model=str(model), tile=32,
                         block_pixels=64, device="cpu", workdir=str(tmp_path / "wd"),
                         keep_workdir=True)


def test_a_run_reads_the_manifest_once_and_writes_it_once_per_stage(job, monkeypatch):
    io = ManifestIO(monkeypatch)
    run_one(job)
    monkeypatch.undo()
    stored = json.loads((Path(job.workdir) / MANIFEST).read_text())
    assert set(stored["stages"]) == {"ingest", "stats", "segment", "export"}
    assert io.reads == 1
    assert len(io.writes) == 1 + len(stored["stages"])  # open, then one per stage
    assert io.writes[0]["stages"] == {}
    assert all(one_stage_apart(a, b) for a, b in zip(io.writes, io.writes[1:], strict=False))
    assert io.writes[-1] == stored


def test_a_kept_run_reopened_reads_once_and_writes_only_the_stages_it_reruns(job, monkeypatch):
    run_one(job)
    first = json.loads((Path(job.workdir) / MANIFEST).read_text())
    io = ManifestIO(monkeypatch)
    other = Path(job.output).with_name("again.tif")
    run_one(RunOptions.of(job.input, str(other), **_same_run(job)))
    monkeypatch.undo()
    stored = json.loads((Path(job.workdir) / MANIFEST).read_text())
    assert io.reads == 1
    assert io.writes[0]["stages"] == first["stages"]  # open: the finished run, new output
    rerun = {k for k in stored["stages"] if stored["stages"][k] != first["stages"][k]}
    assert rerun == {"segment", "export"}  # ingest and stats are reused
    assert len(io.writes) == 1 + len(rerun)
    assert all(one_stage_apart(a, b) for a, b in zip(io.writes, io.writes[1:], strict=False))
    assert io.writes[-1] == stored and other.exists()


def _same_run(job: RunOptions) -> dict:
    return dict(model=job.inference.model, tile=32, block_pixels=64, device="cpu",
                workdir=job.workdir, keep_workdir=True)


def test_a_pickled_work_directory_carries_its_path_and_not_the_manifest(job, monkeypatch):
    run_one(job)
    workdir = WorkDir(job.workdir)
    workdir.require()
    data = pickle.dumps(workdir)
    assert b"Manifest" not in data and b"segpipe_version" not in data
    copy = pickle.loads(data)
    assert copy == workdir and hash(copy) == hash(workdir)
    io = ManifestIO(monkeypatch)
    assert copy.require().stages.keys() == workdir.require().stages.keys()
    assert io.reads == 1  # the copy reads the file; the original answers from memory
