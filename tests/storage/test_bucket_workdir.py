"""The work directory and outputs as objects: markers written once, resume lists them, overwrite."""

from __future__ import annotations

from segpipe.pipeline.outputs import output_exists
from segpipe.pipeline.workdir import BlockRecord, WorkDir
from tests.storage.conftest import segpipe


def _record(block_id: str, worker: str) -> BlockRecord:
    return BlockRecord(block_id=block_id, pixels=4, counts={0: 3, 1: 1}, seconds=0.1,
                       worker=worker, pid=1, run_id="r1")


def test_block_markers_are_objects_written_once_and_listed_on_resume(s3, s3_env):
    s3.bucket("markers")
    fs = s3.fs()
    work = WorkDir("s3://markers/runs/a")
    first = _record("0_0", "first")
    work.mark_done(first)
    work.mark_done(_record("0_1", "first"))
    work.mark_done(_record("0_0", "second"))  # a block recomputed after its result was lost
    assert sorted(fs.find("markers/runs/a/done")) == ["markers/runs/a/done/0_0",
                                                      "markers/runs/a/done/0_1"]
    assert fs.cat_file("markers/runs/a/done/0_0") == first.to_json().encode()
    done = work.done_blocks()
    assert set(done) == {"0_0", "0_1"} and done["0_0"].worker == "first"
    fs.pipe_file("markers/runs/a/done/0_2", b"{not json")  # unreadable markers do not count
    assert set(work.done_blocks()) == {"0_0", "0_1"}
    work.clear_done()
    assert work.done_blocks() == {} and not fs.find("markers/runs/a/done")


def test_an_unpublished_ome_zarr_prefix_is_no_output_but_a_published_one_is(s3, s3_env):
    s3.bucket("outs")
    fs = s3.fs()
    fs.pipe_file("outs/half.ome.zarr/0/c/0/0/0", b"leftover chunk")
    fs.pipe_file("outs/done.ome.zarr/zarr.json", b"{}")
    fs.pipe_file("outs/mask.tif", b"II*\x00")
    assert not output_exists("s3://outs/half.ome.zarr")
    assert output_exists("s3://outs/done.ome.zarr")
    assert output_exists("s3://outs/mask.tif") and not output_exists("s3://outs/other.tif")


def test_an_existing_output_key_is_refused_without_overwrite(s3, remote_assets, tmp_path):
    fs = s3.fs()
    fs.pipe_file("scenes/taken/mask.tif", b"someone else's file")
    env = s3.env(tmp_path / "home")
    result = segpipe(["run", "--input", remote_assets["scene_url"], "--output",
                      "s3://scenes/taken/mask.tif", "--model", remote_assets["model_url"],
                      "--workers", "0", "--quiet", "--device", "cpu"], env, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --output s3://scenes/taken/mask.tif")
    assert "--overwrite" in lines[0]
    assert fs.cat_file("scenes/taken/mask.tif") == b"someone else's file"
    assert fs.find("scenes/taken") == ["scenes/taken/mask.tif"]  # no work directory, no probe


def test_a_failed_upload_leaves_no_object_at_the_key(s3, s3_env):
    from segpipe.pipeline.storage import publish

    s3.bucket("uploads")
    fs = s3.fs()
    with publish("s3://uploads/out/mask.tif") as local:
        local.write_bytes(b"complete")
        assert not fs.exists("uploads/out/mask.tif")  # nothing there until the body returns
    assert fs.cat_file("uploads/out/mask.tif") == b"complete"
    try:
        with publish("s3://uploads/out/other.tif") as local:
            local.write_bytes(b"half")
            raise OSError("disk full")
    except OSError:
        pass
    assert not fs.exists("uploads/out/other.tif")
