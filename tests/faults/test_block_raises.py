"""A block whose forward pass raises: retried by Dask, then nodata; the run exits 1 naming it,
and ``--resume`` recomputes that block only, giving the labels of a clean run.

The fault is keyed on the block's content: the scene is at most 250 except a 2 × 2 patch of 255
in the middle of block (1, 2)'s core, 32 px from its edges, farther than the 20 px that
neighbouring blocks read into it. With ``--normalize scale`` the patch is the only place the
model's input reaches 1.0, and the injected hook raises for any input holding it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from segpipe.pipeline.io.zarrstore import open_array
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from segpipe.pipeline.workdir import WorkDir
from tests.conftest import smooth_image, write_geotiff
from tests.faults.conftest import (
    TILE_ARGS,
    assert_same_as_reference,
    fault_env,
    markers,
    segpipe_cmd,
)

SHAPE = (1, 256, 256)  # 4 × 4 blocks of 64 px
BAD = (1, 2)
ATTEMPTS = 3  # the first try and Dask's two retries (flows/cluster.py RETRIES)


@pytest.fixture(scope="module")
def marked_scene(tmp_path_factory, fault_assets):
    d = tmp_path_factory.mktemp("marked")
    image = smooth_image(SHAPE, "uint8", seed=11)
    image = np.minimum(image, 250).astype(np.uint8)
    r, c = BAD[0] * 64 + 31, BAD[1] * 64 + 31
    image[0, r : r + 2, c : c + 2] = 255
    src = write_geotiff(d / "marked.tif", image)
    reference = d / "reference.tif"
    run_one(RunOptions.of(str(src), str(reference), model=str(fault_assets["model"]), tile=64,
                          block_pixels=64, batch_size=1, device="cpu", normalize="scale"))
    return {"src": src, "reference": reference}


def test_a_block_that_raises_is_retried_then_nodata_exit_1_and_resume_redoes_only_it(
    prefect_api, fault_assets, marked_scene, tmp_path
):
    """A block whose model raises: 3 tries, then nodata, exit 1 naming it; resume redoes just it."""
    out = tmp_path / "labels.tif"
    workdir = WorkDir(str(tmp_path / ".labels.tif.segpipe"))
    log = tmp_path / "faults.log"
    base = segpipe_cmd("run", "--input", marked_scene["src"], "--output", out, "--model",
                       fault_assets["model"], *TILE_ARGS, "--normalize", "scale",
                       "--workers", "2", "--quiet")
    failed = subprocess.run(base, env=fault_env(prefect_api, forward_raise=4, log=log),
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1, failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 of 16 blocks" in errors[0] and "(1_2;" in errors[0], errors
    assert "--resume" in errors[0] and "Traceback" not in failed.stderr
    assert log.read_text().split().count("raise-forward") == ATTEMPTS
    assert not out.exists()
    summary = json.loads((Path(workdir.path) / "summary.json").read_text())
    assert list(summary["failed_blocks"]) == ["1_2"]
    assert "injected fault" in summary["failed_blocks"]["1_2"]
    before = markers(workdir)
    assert sorted(before) == sorted(f"{i}_{j}" for i in range(4) for j in range(4)
                                    if (i, j) != BAD)
    core = open_array(workdir.labels)[64:128, 128:192]
    assert (np.asarray(core) == 255).all()  # the failed block is nodata, not a made-up class

    resumed = subprocess.run([*base, "--resume", "--keep-workdir"], env=fault_env(prefect_api),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_as_reference(out, marked_scene["reference"])
    after = markers(workdir)
    assert {k: after[k] for k in before} == before  # the 15 good blocks were not touched
    assert after["1_2"][0] not in {run_id for run_id, _, _ in before.values()}


def test_the_next_served_run_resumes_an_input_whose_block_raised(
    prefect_api, fault_assets, marked_scene, tmp_path
):
    """A run left a failed block; the next served run resumes it: only that block, identical."""
    from segpipe.flows.execution import Execution
    from segpipe.flows.serve import watch_folder

    watch = tmp_path / "scans"
    watch.mkdir()
    src = watch / "marked.tif"
    src.write_bytes(marked_scene["src"].read_bytes())
    out = watch / "marked.labels.tif"
    workdir = WorkDir(str(watch / ".marked.labels.tif.segpipe"))
    failed = subprocess.run(
        segpipe_cmd("run", "--input", src, "--model", fault_assets["model"], *TILE_ARGS,
                    "--normalize", "scale", "--workers", "0", "--quiet"),
        env=fault_env(prefect_api, forward_raise=4), capture_output=True, text=True,
        timeout=300)
    assert failed.returncode == 1 and not out.exists(), failed.stderr
    before = markers(workdir)
    assert len(before) == 15

    options = RunOptions.of(str(src), str(out), model=str(fault_assets["model"]), tile=64,
                            block_pixels=64, batch_size=1, device="cpu", normalize="scale",
                            keep_workdir=True)
    (summary,) = watch_folder(str(watch), "*.tif", None, options, Execution(workers=0, quiet=True),
                              settle=0)
    assert summary["blocks_reused"] == 15 and summary["blocks_computed"] == 1
    assert_same_as_reference(out, marked_scene["reference"])
    after = markers(workdir)
    assert {k: after[k] for k in before} == before and "1_2" in after
