"""Small parts: manifest keys and markers, progress and stall reports, cluster layout."""

from __future__ import annotations

import io
import os
import time
from types import SimpleNamespace

import pytest

from segpipe.flows.cluster import LocalLayout
from segpipe.flows.execution import Execution
from segpipe.flows.inputs import expand_inputs, output_name
from segpipe.flows.progress import Progress
from segpipe.flows.workerplugin import TorchThreads
from segpipe.models.foundation import InputError, ResumeError, write_text_atomic
from segpipe.pipeline.hostthreads import host_threads
from segpipe.pipeline.keys import InputIdentity, LabelKey
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.workdir import BlockRecord, Manifest, WorkDir, WorkState


def test_input_identity_sees_a_rewrite_with_the_same_size_and_mtime(tmp_path):
    f = tmp_path / "a.tif"
    f.write_bytes(b"x" * 5000)
    before = InputIdentity.of(f)
    st = f.stat()
    f.write_bytes(b"y" * 5000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = InputIdentity.of(f)
    assert (after.size, after.mtime_ns) == (before.size, before.mtime_ns)
    assert after.sample_sha256 != before.sample_sha256
    diffs = LabelKey(after, "m").differences(LabelKey(before, "m"))
    assert diffs == [f"the input {after.path} changed (content)"]


def test_label_key_names_every_difference():
    ident = InputIdentity("/a.tif", 1, 2, "h")
    old = LabelKey(ident, "a" * 64, {"tile": 32, "bands": None})
    new = LabelKey(ident, "b" * 64, {"tile": 64, "bands": (1,)})
    diffs = new.differences(old)
    assert any("model changed" in d for d in diffs)
    assert "--tile 32 → 64" in diffs and "--bands None → [1]" in diffs
    assert not old.differences(LabelKey.from_dict(old.to_dict()))  # survives JSON


def record(block_id: str, run_id: str, worker: str = "w") -> BlockRecord:
    return BlockRecord(block_id, 4, {0: 3, 255: 1}, 0.1, worker, 1, run_id)


def test_workdir_refuses_without_resume_and_drops_stale_markers(tmp_path):
    key = LabelKey(InputIdentity("/a.tif", 1, 2, "h"), "m", {"tile": 32})
    workdir = WorkDir(str(tmp_path / "w"))
    workdir.mark_done(record("0_0", "old"))  # no manifest vouches for it
    _, state = workdir.open(Manifest(key, "o.tif"), resume=False)
    assert state is WorkState.NEW and workdir.done_blocks() == {}
    workdir.mark_done(record("0_1", "r1"))
    with pytest.raises(ResumeError, match="--resume"):
        workdir.open(Manifest(key, "o.tif"), resume=False)
    other = LabelKey(key.input, "m", {"tile": 64})
    with pytest.raises(ResumeError, match="--tile 32 → 64"):
        workdir.open(Manifest(other, "o.tif"), resume=True)
    _, state = workdir.open(Manifest(key, "o.tif"), resume=True)
    assert state is WorkState.RESUMED and list(workdir.done_blocks()) == ["0_1"]


def test_a_finished_workdir_is_reused_with_the_new_export_key(tmp_path):
    key = LabelKey(InputIdentity("/a.tif", 1, 2, "h"), "m", {"tile": 32})
    workdir = WorkDir(str(tmp_path / "w"))
    workdir.open(Manifest(key, "o.tif", export={"ngff_version": "0.4"}), resume=False)
    workdir.record_stage("segment", 1.0)
    manifest, state = workdir.open(
        Manifest(key, "o.tif", export={"ngff_version": "0.5"}), resume=False
    )
    assert state is WorkState.FINISHED and manifest.export == {"ngff_version": "0.5"}
    assert workdir.require().export == {"ngff_version": "0.5"}


def test_markers_are_atomic_and_unreadable_ones_do_not_count(tmp_path):
    write_text_atomic(tmp_path / "f.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
    workdir = WorkDir(str(tmp_path))
    workdir.mark_done(record("1_2", "r", worker="tcp://w"))
    (tmp_path / "done" / "3_3").write_text('{"block_id": "3_')  # a torn write
    (tmp_path / "done" / ".3_4.99.partial").mkdir()
    assert list(workdir.done_blocks()) == ["1_2"]
    assert workdir.done_blocks()["1_2"].worker == "tcp://w"
    assert workdir.done_blocks()["1_2"].counts == {0: 3, 255: 1}  # label keys survive JSON


def test_progress_reports_rate_eta_and_a_stall_once():
    stream = io.StringIO()
    p = Progress(4, 4.0, stream=stream, interval=0, stall_after=0.05, label="segment x")
    p.advance(pixels=1_000_000)
    assert "1/4 blocks (25%)" in p.line() and "MP/s" in p.line() and "ETA" in p.line()
    time.sleep(0.06)
    assert p.check_stall() and p.check_stall()
    assert stream.getvalue().count("no block finished") == 1
    p.advance(failed=True)
    assert not p.stalled and "1 failed" in p.line()
    quiet = io.StringIO()
    Progress(2, 1.0, stream=quiet, quiet=True).advance(2)
    assert quiet.getvalue() == ""


def test_local_layout_shares_cores_and_gives_one_worker_per_gpu(monkeypatch):
    import segpipe.flows.cluster as cluster

    monkeypatch.setattr(cluster, "available_cores", lambda: 16)
    monkeypatch.setattr(cluster, "gpu_count", lambda: 0)
    assert LocalLayout.for_machine() == LocalLayout(4, 4, 0)
    assert LocalLayout.for_machine(2) == LocalLayout(2, 8, 0)
    monkeypatch.setattr(cluster, "gpu_count", lambda: 2)
    # a worker per GPU, each fed by 4 host threads (its GPU resource), 2 torch threads each
    assert LocalLayout.for_machine() == LocalLayout(2, 2, 2, 4)
    monkeypatch.setattr(cluster, "available_cores", lambda: 4)
    assert LocalLayout.for_machine() == LocalLayout(2, 1, 2, 2)
    assert host_threads("cpu") == 1  # on the CPU blocks run in turn, torch takes the cores
    monkeypatch.setattr(cluster, "available_cores", lambda: 2)
    monkeypatch.setattr(cluster, "gpu_count", lambda: 0)
    assert LocalLayout.for_machine() == LocalLayout(2, 1, 0)


def test_torch_threads_plugin_divides_the_host_cores(monkeypatch):
    import torch

    import segpipe.flows.workerplugin as workerplugin

    monkeypatch.setattr(workerplugin, "available_cores", lambda: 8)
    before = torch.get_num_threads()
    worker = SimpleNamespace(address="tcp://10.0.0.5:4000", name="w",
                             state=SimpleNamespace(nthreads=1))
    try:
        # the client counts threads per host as the scheduler names hosts: no protocol, no port
        TorchThreads(threads_on_host={"10.0.0.5": 4}).setup(worker)
        assert torch.get_num_threads() == 2
        TorchThreads().setup(worker)  # a host the client did not know: own threads only
        assert torch.get_num_threads() == 8
    finally:
        torch.set_num_threads(before)


def test_execution_refuses_bad_combinations():
    with pytest.raises(InputError, match="--workers"):
        Execution(workers=-1)
    with pytest.raises(InputError, match="--scheduler"):
        Execution(scheduler="tcp://h:1", workers=2)
    assert Execution(workers=0).cluster_spec().in_process


def test_inputs_from_paths_directories_and_globs(tmp_path):
    for name in ("a.tif", "b.ome.tif", ".hidden.tif", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "store.zarr").mkdir()
    (tmp_path / "store.zarr" / "zarr.json").write_text("{}")
    opts = RunOptions("", "")
    jobs = expand_inputs([str(tmp_path)], str(tmp_path / "out"), opts)
    names = [os.path.basename(j.input) for j in jobs]
    assert names == ["a.tif", "b.ome.tif", "store.zarr"]
    assert [os.path.basename(j.output) for j in jobs] == [
        "a.labels.tif", "b.labels.tif", "store.labels.tif"]
    assert all(j.output.startswith(str(tmp_path / "out")) for j in jobs)
    (single,) = expand_inputs([str(tmp_path / "a.tif")], None, opts)
    assert single.output == str(tmp_path / "a.labels.tif")
    globbed = expand_inputs([str(tmp_path / "*.tif")], None, opts)
    assert [os.path.basename(j.input) for j in globbed] == ["a.tif", "b.ome.tif"]
    with pytest.raises(InputError, match="not found"):
        expand_inputs([str(tmp_path / "nope.tif")], None, opts)
    with pytest.raises(InputError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.svs")], None, opts)
    assert output_name("scan.svs") == "scan.labels.tif"


def test_stages_are_retried_on_io_errors_only():
    from prefect.states import Failed

    from segpipe.flows.flow import retry_on_io_error
    from segpipe.models.foundation import RasterError

    assert retry_on_io_error(None, None, Failed(data=OSError("disk hiccup")))
    assert not retry_on_io_error(None, None, Failed(data=RasterError("not a raster")))
    assert not retry_on_io_error(None, None, Failed(data=ValueError("bug")))
