"""``segpipe run`` as a Prefect flow on Dask: stage tasks, equality with in-process, reports,
batches, refusals and failed blocks."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from segpipe.flows.cli import main
from segpipe.pipeline.outputs import default_workdir, sidecar_path
from segpipe.pipeline.report import artifact_key
from segpipe.pipeline.workdir import WorkDir
from tests.conftest import smooth_image, write_geotiff
from tests.flows.conftest import SMALL, SMALL_ARGS, read_labels, wait_for
from tests.pipeline.test_exactness import tiny_unet

STAGES = {"plan", "ingest", "stats", "segment", "export", "report"}


def cli(capsys, *args):
    code = main(["run", *map(str, args)])
    return code, capsys.readouterr().err


def prefect_query(method: str, **kw):
    """Call a read method of Prefect's (async) client against the test server."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def call():
        async with get_client() as client:
            return await getattr(client, method)(**kw)

    return asyncio.run(call())


def flow_runs(name="segpipe-run"):
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    return prefect_query(
        "read_flow_runs", flow_filter=FlowFilter(name=FlowFilterName(any_=[name])),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200,
    )


def task_runs(flow_run_id):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    return prefect_query(
        "read_task_runs",
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=200,
    )


def artifacts(key):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import Artifact

    async def call():  # the client's read_artifacts sends nulls this server refuses
        async with get_client() as client:
            response = await client.request("POST", "/artifacts/filter", json={
                "artifacts": {"key": {"any_": [key]}}, "flow_runs": {}, "task_runs": {},
                "sort": "UPDATED_DESC", "limit": 10, "offset": 0,
            })
            return [Artifact.model_validate(a) for a in response.json()]

    return asyncio.run(call())


def _completed_stages(run_id):
    """The run's task runs once every stage has a completed one, else None."""
    tasks = task_runs(run_id)
    done = [t for t in tasks if t.state and t.state.is_completed()]
    keys = {t.task_key.rsplit("-", 1)[0] for t in done}
    names = {t.name.split(" ")[0] for t in done}
    every = keys >= STAGES or names >= STAGES
    return tasks if every and len(done) == len(tasks) else None


def test_local_cluster_run_is_a_completed_flow_with_stage_tasks(
    prefect_api, assets, reference, tmp_path, capsys
):
    out = tmp_path / "labels.tif"
    before = {r.id for r in flow_runs()}
    code, err = cli(capsys, "--input", assets["small"], "--output", out, "--model",
                    assets["model"], *SMALL_ARGS, "--workers", "2", "--keep-workdir")
    assert code == 0, err
    # the default local cluster of two worker processes gives the in-process labels
    np.testing.assert_array_equal(read_labels(out), reference["small"])
    assert "wrote" in err and "15/15 blocks" in err  # one progress display for the run

    run = next(r for r in flow_runs() if r.id not in before)
    assert run.state.is_completed()
    # task-run states reach the server asynchronously (events): poll, don't read once
    tasks = wait_for(lambda: _completed_stages(run.id), 60, "completed stage task runs", 0.5)
    assert all(t.state.is_completed() for t in tasks)

    workdir = default_workdir(str(out))
    summary = json.loads((tmp_path / workdir.split("/")[-1] / "summary.json").read_text())
    assert summary["blocks"] == summary["blocks_computed"] == 15
    assert summary["blocks_reused"] == 0 and summary["failed_blocks"] == {}
    assert set(summary["stage_seconds"]) >= STAGES
    assert summary["megapixels_per_second"] > 0
    assert sum(c["pixels"] for c in summary["classes"]) == SMALL[1] * SMALL[2]
    assert all(c["area_unit"] == "m2" for c in summary["classes"])  # projected input
    # blocks ran on Dask worker processes, not in the driver
    assert all(w.startswith("tcp://") for w in summary["workers"])
    assert sum(summary["workers"].values()) == 15
    # the same summary beside the output, and as a Prefect markdown artifact
    assert json.loads(sidecar_path(str(out)).read_text())["summary"]["output"] == str(out)
    found = artifacts(artifact_key(str(assets["small"])))
    assert found and "| stage | seconds |" in found[0].data


def test_batch_of_a_directory_skips_up_to_date_outputs(prefect_api, assets, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        write_geotiff(src / f"scene{i}.tif", smooth_image(SMALL, "uint8", seed=10 + i))
    (src / "notes.txt").write_text("not a raster")
    outdir = tmp_path / "out"
    args = ["--input", src, "--output", outdir, "--model", assets["model"], *SMALL_ARGS,
            "--workers", "0"]
    code, err = cli(capsys, *args)
    assert code == 0, err
    made = sorted(p.name for p in outdir.glob("*.tif"))
    assert made == ["scene0.labels.tif", "scene1.labels.tif"]
    stamp = {p: p.stat().st_mtime_ns for p in outdir.glob("*.tif")}

    # a new file arrives: only it is segmented, the others are up to date
    write_geotiff(src / "scene2.tif", smooth_image(SMALL, "uint8", seed=12))
    code, err = cli(capsys, *args, "--summary", tmp_path / "s.json")
    assert code == 0, err
    assert err.count("up to date; skipped") == 2 and err.count("wrote") == 1
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())
    summaries = json.loads((tmp_path / "s.json").read_text())
    assert [s.get("skipped") for s in summaries] == ["up to date", "up to date", None]

    # other parameters make the outputs stale: refused without --overwrite, redone with it
    code, err = cli(capsys, *args[:-2], "--workers", "0", "--tile", "64", "--block-pixels", "64")
    assert code == 2 and "--overwrite" in err
    # a glob works like the directory
    code, err = cli(capsys, "--input", src / "scene*.tif", "--output", outdir, "--model",
                    assets["model"], *SMALL_ARGS, "--workers", "0")
    assert code == 0 and err.count("up to date; skipped") == 3


def test_existing_workdir_needs_resume_and_resume_refuses_a_changed_model(
    prefect_api, assets, tmp_path, capsys
):
    src = shutil.copy(assets["small"], tmp_path / "scene.tif")
    model = tiny_unet(tmp_path / "m.pt", 1, "valid")
    out = tmp_path / "labels.tif"
    workdir = WorkDir(str(tmp_path / ".labels.tif.segpipe"))
    args = ["--input", src, "--output", out, "--model", model, *SMALL_ARGS, "--workers", "0"]
    _interrupted_run(tmp_path, src, model, out, SMALL_ARGS, blocks=4)

    code, err = cli(capsys, *args)
    assert code == 2 and "--resume" in err and workdir.path in err
    assert len(workdir.done_blocks()) == 4  # nothing wiped

    tiny_unet(model, 1, "valid", seed=7)  # the model file changes
    code, err = cli(capsys, *args, "--resume")
    assert code == 2, err
    assert "error: cannot --resume" in err and "model changed" in err and "Traceback" not in err
    assert len(workdir.done_blocks()) == 4 and not out.exists()

    tiny_unet(model, 1, "valid", seed=0)  # the same bytes again: resuming is allowed
    code, err = cli(capsys, *args, "--resume", "--tile", "64", "--block-pixels", "64")
    assert code == 2 and "--tile 32 → 64" in err
    code, err = cli(capsys, *args, "--resume")
    assert code == 0, err
    assert not os.path.exists(workdir.path) and out.exists()


def _interrupted_run(tmp_path, src, model, out, args, blocks: int):
    """A run that stopped after ``blocks`` blocks: the library's stages, cut short.

    The input's copy is complete (every block fed), as when a run dies after its feed tasks.
    """
    from segpipe.pipeline.feed import feed_block
    from segpipe.pipeline.segment import segment_and_record
    from segpipe.pipeline.stages import ingest_stage, plan_stage, stats_stage
    from tests.flows.conftest import options_for

    plan = plan_stage(options_for(src, out, model, args))
    ingest_stage(plan)
    plan = stats_stage(plan)
    for index in plan.tiles.block_indices():
        feed_block(plan.feed(), plan.tiles, index)
    for index in list(plan.tiles.block_indices())[:blocks]:
        segment_and_record(plan.job(), index, "first")
    return plan


def test_a_block_that_keeps_failing_is_nodata_reported_and_resumable(
    prefect_api, assets, reference, tmp_path, capsys
):
    src = shutil.copy(assets["small"], tmp_path / "scene.tif")
    out = tmp_path / "labels.tif"
    plan = _interrupted_run(tmp_path, src, assets["model"], out, SMALL_ARGS, blocks=0)
    # damage the ingested pixels of block 1_2 (one chunk): reading it fails on every attempt
    chunk = next(p for p in (tmp_path / ".labels.tif.segpipe" / "image.zarr").rglob("*")
                 if p.is_file() and p.parts[-3:] == ("0", "1", "2"))
    good = chunk.read_bytes()
    chunk.write_bytes(b"\x00garbage" * 4)
    args = ["--input", src, "--output", out, "--model", assets["model"], *SMALL_ARGS,
            "--workers", "1", "--resume"]
    code, err = cli(capsys, *args)
    assert code == 1
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "blocks of" in lines[0] and "1_2" in lines[0] and "--resume" in lines[0]
    assert not out.exists()  # no output from an incomplete run
    summary = json.loads((tmp_path / ".labels.tif.segpipe" / "summary.json").read_text())
    failed = set(summary["failed_blocks"])  # the blocks whose (halo) reads touch the chunk
    assert "1_2" in failed and len(failed) < 15 and f"{len(failed)} of 15 blocks" in lines[0]
    from segpipe.pipeline.io.zarrstore import open_array

    labels = np.asarray(open_array(plan.workdir.labels, mode="r")[:])
    nodata = np.zeros(labels.shape, bool)
    for b in failed:
        rows, cols = plan.tiles.block_core(*map(int, b.split("_"))).slices
        nodata[rows, cols] = True
    assert (labels[nodata] == 255).all() and (labels[~nodata] != 255).all()  # written as nodata
    every = {f"{i}_{j}" for i in range(3) for j in range(5)}
    assert set(plan.workdir.done_blocks()) == every - failed

    chunk.write_bytes(good)  # the cause is fixed: --resume recomputes only the failed block
    code, err = cli(capsys, *args[:-3], "--workers", "0", "--resume", "--summary",
                    tmp_path / "s.json")
    assert code == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["blocks_computed"] == len(failed)
    assert summary["blocks_reused"] == 15 - len(failed)
    np.testing.assert_array_equal(read_labels(out), reference["small"])


def test_manifest_is_keyed_and_written_atomically(assets, tmp_path):
    plan = _interrupted_run(tmp_path, assets["small"], assets["model"], tmp_path / "o.tif",
                            SMALL_ARGS, blocks=2)
    manifest = plan.workdir.require()
    assert manifest.key == plan.label_key()
    assert list(manifest.stages) == ["ingest", "stats"] and manifest.normalizer
    assert not [p for p in (tmp_path / ".o.tif.segpipe").iterdir() if p.name.startswith(".")]
    records = plan.workdir.done_blocks()
    assert sorted(records) == ["0_0", "0_1"] and records["0_0"].run_id == "first"


@pytest.mark.parametrize("bad", [["--workers", "-1"], ["--workers", "2", "--scheduler", "tcp://x:1"]])
def test_bad_execution_options_exit_2(assets, tmp_path, capsys, bad):
    code, err = cli(capsys, "--input", assets["small"], "--output", tmp_path / "o.tif", *bad)
    assert code == 2 and err.startswith("error: --workers")


def test_kept_workdir_reexports_output_option_changes_without_the_model(
    prefect_api, assets, tmp_path, capsys
):
    src = shutil.copy(assets["small"], tmp_path / "scene.tif")
    out = tmp_path / "labels.ome.zarr"
    workdir = WorkDir(str(tmp_path / ".labels.ome.zarr.segpipe"))
    args = ["--input", src, "--output", out, "--model", assets["model"], *SMALL_ARGS,
            "--workers", "0", "--keep-workdir"]
    code, err = cli(capsys, *args)
    assert code == 0, err
    markers = {p.name: p.stat().st_mtime_ns for p in workdir.done_dir.iterdir()}
    assert len(markers) == 15
    assert json.loads((out / ".zattrs").read_text())["multiscales"][0]["version"] == "0.4"

    code, err = cli(capsys, *args, "--ngff-version", "0.5", "--overwrite", "--summary",
                    tmp_path / "s.json")
    assert code == 0, err
    # re-exported as NGFF 0.5 from the kept label array: no block was segmented again
    assert json.loads((out / "zarr.json").read_text())["attributes"]["ome"]["version"] == "0.5"
    assert {p.name: p.stat().st_mtime_ns for p in workdir.done_dir.iterdir()} == markers
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["blocks_computed"] == 0 and summary["blocks_reused"] == 15
    assert sum(c["pixels"] for c in summary["classes"]) == SMALL[1] * SMALL[2]


def test_resume_with_another_batch_size_is_identical_and_probabilities_are_refused(
    prefect_api, assets, reference, tmp_path, capsys
):
    src = shutil.copy(assets["small"], tmp_path / "scene.tif")
    out = tmp_path / "labels.tif"
    args = ["--input", src, "--output", out, "--model", assets["model"], *SMALL_ARGS,
            "--workers", "0", "--resume"]
    _interrupted_run(tmp_path, src, assets["model"], out, SMALL_ARGS, blocks=5)
    code, err = cli(capsys, *args, "--probabilities")
    assert code == 2 and "--probabilities False → True" in err, err
    assert not out.exists()
    code, err = cli(capsys, *args, "--batch-size", "1", "--summary", tmp_path / "s.json")
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["blocks_reused"] == 5
    assert out.read_bytes() == reference["small_file"].read_bytes()
