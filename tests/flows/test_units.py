"""Small parts: manifest keys and markers, progress and stall reports, cluster layout."""

from __future__ import annotations

import io
import os
import time
from types import SimpleNamespace

import pytest

from segpipe.flows.cluster import ClusterSpec, LocalLayout, TorchThreads
from segpipe.flows.flow import expand_inputs, output_name
from segpipe.flows.progress import Progress
from segpipe.models.errors import InputError, ResumeError
from segpipe.pipeline.manifest import (
    BlockRecord,
    InputIdentity,
    Manifest,
    RunKey,
    done_blocks,
    mark_done,
    open_workdir,
    write_atomic,
)
from segpipe.pipeline.run import RunOptions


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
    diffs = RunKey(after, "m").differences(RunKey(before, "m"))
    assert diffs == [f"the input {after.path} changed (content)"]


def test_run_key_names_every_difference():
    ident = InputIdentity("/a.tif", 1, 2, "h")
    old = RunKey(ident, "a" * 64, RunOptions("i", "o", tile=32).parameters())
    new = RunKey(ident, "b" * 64, RunOptions("i", "o", tile=64, bands=(1,)).parameters())
    diffs = new.differences(old)
    assert any("model changed" in d for d in diffs)
    assert "--tile 32 → 64" in diffs and "--bands None → [1]" in diffs
    assert not old.differences(RunKey.from_dict(old.to_dict()))  # survives JSON


def test_workdir_is_refused_without_resume_and_stale_markers_are_dropped(tmp_path):
    key = RunKey(InputIdentity("/a.tif", 1, 2, "h"), "m", {"tile": 32})
    workdir = tmp_path / "w"
    workdir.mkdir()
    mark_done(workdir, BlockRecord("0_0", 1, 0, 0.1, "w", 1, "old"))  # no manifest vouches
    _, resumed = open_workdir(workdir, Manifest(key, "o.tif"), resume=False)
    assert not resumed and done_blocks(workdir) == {}
    mark_done(workdir, BlockRecord("0_1", 1, 0, 0.1, "w", 1, "r1"))
    with pytest.raises(ResumeError, match="--resume"):
        open_workdir(workdir, Manifest(key, "o.tif"), resume=False)
    other = RunKey(key.input, "m", {"tile": 64})
    with pytest.raises(ResumeError, match="--tile 32 → 64"):
        open_workdir(workdir, Manifest(other, "o.tif"), resume=True)
    _, resumed = open_workdir(workdir, Manifest(key, "o.tif"), resume=True)
    assert resumed and list(done_blocks(workdir)) == ["0_1"]


def test_markers_are_atomic_and_unreadable_ones_do_not_count(tmp_path):
    write_atomic(tmp_path / "f.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
    mark_done(tmp_path, BlockRecord("1_2", 10, 0, 0.5, "tcp://w", 7, "r"))
    (tmp_path / "done" / "3_3").write_text('{"block_id": "3_')  # a torn write
    (tmp_path / "done" / ".3_4.99.tmp").write_text("")
    assert list(done_blocks(tmp_path)) == ["1_2"]
    assert done_blocks(tmp_path)["1_2"].worker == "tcp://w"


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
    assert LocalLayout.for_machine() == LocalLayout(2, 8, 2)
    monkeypatch.setattr(cluster, "available_cores", lambda: 2)
    monkeypatch.setattr(cluster, "gpu_count", lambda: 0)
    assert LocalLayout.for_machine() == LocalLayout(2, 1, 0)


def test_torch_threads_plugin_divides_the_host_cores(monkeypatch):
    import torch

    import segpipe.flows.cluster as cluster

    monkeypatch.setattr(cluster, "available_cores", lambda: 8)
    before = torch.get_num_threads()
    worker = SimpleNamespace(address="tcp://10.0.0.5:4000", name="w",
                             state=SimpleNamespace(nthreads=1))
    try:
        TorchThreads(threads_on_host={"tcp://10.0.0.5": 4}).setup(worker)
        assert torch.get_num_threads() == 2
        TorchThreads().setup(worker)  # a host the client did not know: own threads only
        assert torch.get_num_threads() == 8
    finally:
        torch.set_num_threads(before)


def test_cluster_spec_refuses_bad_combinations():
    with pytest.raises(InputError, match="--workers"):
        ClusterSpec(workers=-1)
    with pytest.raises(InputError, match="--scheduler"):
        ClusterSpec(scheduler="tcp://h:1", workers=2)
    assert ClusterSpec(workers=0).in_process


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
    from segpipe.models.errors import RasterError

    assert retry_on_io_error(None, None, Failed(data=OSError("disk hiccup")))
    assert not retry_on_io_error(None, None, Failed(data=RasterError("not a raster")))
    assert not retry_on_io_error(None, None, Failed(data=ValueError("bug")))
