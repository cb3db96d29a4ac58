"""``kill -9`` of the whole process tree in the instance pass, twice, and in the export, then
``--resume``: the instance labels, measurements and detections equal an uninterrupted run's,
byte for byte, and no block is segmented again.

Each attempt resumes the one before and is killed where it was meant to be by an injected pause
in the driver (which runs the instance pass): before its 12th, then its 300th chunk write into
``instances.zarr`` (a pass writes one chunk per block and window chunk, about 500 for this
scene, then rewrites each through the canonical ids); the test waits for the pause to be
logged, then kills the process group. A killed pass has left no ``instances.json``, so the
next run redoes the pass whole from the finished labels, without the model. The third kill
comes in the export, once the instance labels' COG is written and the labels' output already
published: an output without its sidecar, which ``--resume`` recognises as its own and writes
again (a plain rerun is refused with a line naming ``--resume``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from segpipe.pipeline.workdir import WorkDir
from tests.faults.conftest import (
    BLOCKS,
    TILE_ARGS,
    fault_env,
    kill_group,
    markers,
    partials,
    segpipe_cmd,
    stages,
    start,
    wait_for,
)

INSTANCE_ARGS = ("--instance-labels", "--measurements", "--detections",
                 "--instance-max-diameter", "32")
COMPANIONS = ("instances.tif", "measurements.csv", "detections.geojson")


@pytest.fixture(scope="module")
def reference(fault_assets, tmp_path_factory):
    """The labels and instance outputs of an uninterrupted in-process run, as bytes."""
    folder = tmp_path_factory.mktemp("instances-reference")
    kw = dict(zip(TILE_ARGS[::2], TILE_ARGS[1::2]))
    run_one(RunOptions.of(
        str(fault_assets["scene"]), str(folder / "reference.tif"),
        model=str(fault_assets["model"]), tile=int(kw["--tile"]),
        block_pixels=int(kw["--block-pixels"]), batch_size=1, device="cpu",
        instance_labels=True, measurements=True, detections=True, instance_max_diameter=32,
    ))
    return {name: (folder / f"reference.{name}").read_bytes() for name in ("tif", *COMPANIONS)}


@pytest.mark.slow
def test_kill_9_in_the_instance_pass_then_resume_is_identical(
    prefect_api, fault_assets, reference, tmp_path
):
    """kill -9 twice in the instance pass, resumed: instances, measurements and detections
    byte-identical to an uninterrupted run's, no block segmented again."""
    assert len(reference["measurements.csv"].splitlines()) > 2  # objects to measure
    out = tmp_path / "out.tif"
    workdir = WorkDir(str(tmp_path / ".out.tif.segpipe"))
    state = Path(workdir.path) / "instances.json"
    base = segpipe_cmd("run", "--input", fault_assets["scene"], "--output", out, "--model",
                       fault_assets["model"], *TILE_ARGS, "--workers", "0", "--quiet",
                       *INSTANCE_ARGS)
    done: list[dict] = []

    def attempt(name: str, resume: bool = True, published: bool = False, **faults) -> None:
        log = tmp_path / f"{name}.faults"
        proc = start(base + (["--resume"] if resume else []),
                     fault_env(prefect_api, log=log, **faults), tmp_path / f"{name}.log")
        wait_for(lambda: (log.exists() and "pause-" in log.read_text())
                 or proc.poll() is not None, 300, name)
        kill_group(proc)
        text = (tmp_path / f"{name}.log").read_text()
        assert proc.returncode == -9, f"{name}: the run ended before the kill\n{text}"
        assert out.exists() == published, f"{name}: the output path"
        assert not any((tmp_path / f"out.{c}").exists() for c in COMPANIONS), name
        done.append(markers(workdir))

    # every block segmented, the pass's state not written: killed inside the pass, twice
    attempt("instance-pass-early", resume=False, pause_chunk="instances.zarr:12")
    attempt("instance-pass-late", pause_chunk="instances.zarr:300")
    assert "segment" in stages(workdir) and len(done[-1]) == BLOCKS
    assert not state.exists() and "export" not in stages(workdir)
    attempt("export", published=True, pause_after_copy="out.instances.tif")
    plain = subprocess.run(base, env=fault_env(prefect_api), capture_output=True, text=True,
                           timeout=300)
    assert plain.returncode == 2 and "pass --resume" in plain.stderr, plain.stderr

    final = start([*base, "--resume"], fault_env(prefect_api), tmp_path / "final.log")
    assert final.wait(timeout=300) == 0, (tmp_path / "final.log").read_text()
    for name in ("tif", *COMPANIONS):  # the labels too
        assert (tmp_path / f"out.{name}").read_bytes() == reference[name], name
    assert all(snapshot == done[0] for snapshot in done)  # no block segmented twice
    assert not partials(tmp_path)
