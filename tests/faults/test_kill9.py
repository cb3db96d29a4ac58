"""``kill -9`` of the whole process tree at six points (ingest, segment ×3, export ×2), then
``--resume``: the labels equal an uninterrupted run's, byte for byte, and no block is redone.

Each attempt resumes the one before, and is killed where it was meant to be: an injected pause
holds the run at a chosen zarr chunk write (the copy: each Dask worker's N-th image chunk;
segment: each Dask worker's N-th label chunk, so exactly 2 × (N − 1) blocks are done), at the
export's N-th read of a label chunk (GDAL's COG copy reads the store), or right after the COG
copy into the output's partial folder; the test waits for that state in the work directory,
then kills the process group.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segpipe.pipeline.workdir import WorkDir
from tests.faults.conftest import (
    BLOCKS,
    TILE_ARGS,
    assert_same_as_reference,
    chunk_files,
    fault_env,
    kill_group,
    markers,
    partials,
    segpipe_cmd,
    stages,
    start,
    wait_for,
)


@pytest.mark.slow
def test_kill_9_at_six_points_over_ingest_segment_and_export_then_resume_is_identical(
    prefect_api, fault_assets, tmp_path
):
    """kill -9 of the tree in ingest, segment ×3 and export ×2, resumed: identical, none redone."""
    out = tmp_path / "labels.tif"
    workdir = WorkDir(str(tmp_path / ".labels.tif.segpipe"))
    image = Path(workdir.image)
    base = segpipe_cmd("run", "--input", fault_assets["scene"], "--output", out, "--model",
                       fault_assets["model"], *TILE_ARGS, "--workers", "2", "--quiet")
    snapshots: list[dict] = []

    def attempt(name: str, reached, resume: bool = True, **faults) -> None:
        proc = start(base + (["--resume"] if resume else []), fault_env(prefect_api, **faults),
                     tmp_path / f"{name}.log")
        wait_for(lambda: reached() or proc.poll() is not None, 240, name)
        kill_group(proc)  # SIGKILL to the driver, its Dask nanny and workers, all at once
        log = (tmp_path / f"{name}.log").read_text()
        assert proc.returncode == -9, f"{name}: the run ended before the kill\n{log}"
        assert not out.exists(), f"{name}: a file stands at the output path"
        snapshot = markers(workdir)
        if snapshots:  # what was finished before stays finished, untouched
            assert {k: snapshot[k] for k in snapshots[-1]} == snapshots[-1], name
        snapshots.append(snapshot)

    # 1. the input's copy (made block by block by the workers' feed tasks, one chunk a block):
    # each worker waits before its 2nd image chunk, so 2 blocks are fed and none can run yet
    # (block 0_0 reads the copies of four blocks through its halo)
    attempt("ingest", lambda: chunk_files(image) >= 2, resume=False,
            pause_chunk="image.zarr:2")
    assert "segment" not in stages(workdir) and chunk_files(image) < BLOCKS
    assert not snapshots[-1]
    # 2.-4. segment: both workers wait before their N-th label chunk: 2 (N - 1) blocks done
    for name, before, n in (("segment-early", 0, 2), ("segment-half", 2, 16),
                            ("segment-late", 32, 12)):
        expected = before + 2 * (n - 1)
        attempt(name, lambda e=expected: len(workdir.done_blocks()) >= e,
                pause_chunk=f"labels.zarr:{n}")
        assert len(snapshots[-1]) == expected, name  # the pause holds both workers there
        assert "segment" not in stages(workdir)
    # 5. export: GDAL's COG copy reads the label store (no staging file): the driver waits
    # before its 3rd read of a label chunk, the COG half written in its partial folder
    attempt("export-copy", lambda: "segment" in stages(workdir)
            and any(out.parent.glob(".labels.tif.*.partial")),
            pause_chunk_read="labels.zarr:3")
    assert "export" not in stages(workdir)
    # 6. export: the finished COG in its hidden partial folder beside the output, not renamed
    attempt("export-rename", lambda: any(out.parent.glob(".labels.tif.*.partial/labels.tif")),
            pause_after_copy="labels.tif")
    assert partials(out.parent) and "export" not in stages(workdir)

    final = start([*base, "--resume", "--keep-workdir", "--summary", tmp_path / "s.json"],
                  fault_env(prefect_api), tmp_path / "final.log")
    assert final.wait(timeout=300) == 0, (tmp_path / "final.log").read_text()
    log = (tmp_path / "final.log").read_text()
    assert "took over the lock" in log  # the killed attempt's lock, said so
    assert_same_as_reference(out, fault_assets["reference"])
    summary = json.loads((tmp_path / "s.json").read_text())
    # the export-copy attempt segmented the last 10 blocks; the final one computed none
    assert [len(s) for s in snapshots] == [0, 2, 32, 54, BLOCKS, BLOCKS]
    assert summary["blocks_reused"] == BLOCKS and summary["blocks_computed"] == 0
    assert markers(workdir) == snapshots[-1]  # not one finished block was recomputed
    # four attempts computed blocks: the three killed in segment and the export-copy one
    assert len({run_id for run_id, _, _ in snapshots[-1].values()}) == 4
    assert not partials(out.parent) and not (out.parent / ".segpipe.lock").exists()
