"""SIGTERM (a supervisor's stop) and SIGINT (Ctrl-C, sent to the whole foreground group) stop a
run on a LocalCluster cleanly: exit 130 within seconds, one ``error: interrupted`` line, no
process of the run left (Dask workers, nannies), and ``--resume`` finishes it identically.

The signal lands mid-segment: both workers are held before their 9th label chunk (so exactly
16 of 64 blocks are done), and the test waits for those 16 markers before signalling.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from segpipe.flows import interrupt
from segpipe.pipeline.workdir import WorkDir
from tests.faults.conftest import (
    BLOCKS,
    TILE_ARGS,
    all_gone,
    assert_same_as_reference,
    fault_env,
    group_gone,
    markers,
    partials,
    segpipe_cmd,
    tree,
    wait_for,
)

STOP_SECONDS = 60  # the bound on a clean stop; measured: a few seconds


def interrupt_and_resume(
    prefect_api, fault_assets, tmp_path, send, stop_seconds: float = STOP_SECONDS,
    **faults: str,
) -> float:
    """Start a run, signal it with ``send(proc)`` at 16 of 64 blocks, check the stop, resume.

    ``faults``: more injected faults for the run. Returns the seconds from the signal to the
    driver's exit.
    """
    out = tmp_path / "labels.tif"
    workdir = WorkDir(str(tmp_path / ".labels.tif.segpipe"))
    base = segpipe_cmd("run", "--input", fault_assets["scene"], "--output", out, "--model",
                       fault_assets["model"], *TILE_ARGS, "--workers", "2", "--quiet")
    env = fault_env(prefect_api, pause_chunk="labels.zarr:9", **faults)
    proc = subprocess.Popen(base, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for(lambda: len(workdir.done_blocks()) >= 16 or proc.poll() is not None, 240,
             "16 blocks done")
    processes = tree(proc.pid)
    assert len(processes) >= 3, "expected the driver and two Dask worker processes"
    sent = time.monotonic()
    send(proc)
    _, err = proc.communicate(timeout=stop_seconds)
    seconds = time.monotonic() - sent
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == ["error: interrupted; rerun with --resume to continue"], err
    assert "Traceback" not in err
    # every process of the run is gone: Dask workers, nannies, anything in its group
    wait_for(lambda: all_gone(processes) and group_gone(proc.pid), 30, "the run's processes")
    done = markers(workdir)
    assert len(done) == 16 and not out.exists()
    assert not (out.parent / ".segpipe.lock").exists()  # released on the way out

    final = subprocess.run([*base, "--resume", "--keep-workdir"], env=fault_env(prefect_api),
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert_same_as_reference(out, fault_assets["reference"])
    now = markers(workdir)
    assert len(now) == BLOCKS and {k: now[k] for k in done} == done  # none redone
    assert not partials(out.parent)
    return seconds


def test_sigterm_to_the_driver_stops_cleanly_with_130_and_resumes_identically(
    prefect_api, fault_assets, tmp_path
):
    """SIGTERM mid-segment: exit 130 in seconds, no worker left, lock freed; resume is identical."""
    seconds = interrupt_and_resume(prefect_api, fault_assets, tmp_path,
                                   lambda p: os.kill(p.pid, signal.SIGTERM))
    print(f"SIGTERM: stopped {seconds:.1f} s after the signal")


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_stops_cleanly_with_130_and_resumes_identically(
    prefect_api, fault_assets, tmp_path
):
    """Ctrl-C (SIGINT to the process group) mid-segment: exit 130, no worker left; resume exact."""
    seconds = interrupt_and_resume(prefect_api, fault_assets, tmp_path,
                                   lambda p: os.killpg(p.pid, signal.SIGINT))
    print(f"SIGINT: stopped {seconds:.1f} s after the signal")


@pytest.mark.slow
def test_an_interrupt_that_is_swallowed_still_stops_the_run_within_the_bound(
    prefect_api, fault_assets, tmp_path
):
    """The KeyboardInterrupt is lost on its way (as in a library's catch-all wait): the run
    waits on, and the interrupt's watchdog stops it after STOP_SECONDS with the same exit,
    line, cleanup (workers killed, lock file removed) and an identical resume."""
    log = tmp_path / "faults.log"
    seconds = interrupt_and_resume(
        prefect_api, fault_assets, tmp_path, lambda p: os.killpg(p.pid, signal.SIGINT),
        swallow_interrupt="1", log=str(log),
    )
    assert "swallowed-interrupt" in log.read_text()  # the fault fired: the watchdog stopped it
    assert interrupt.STOP_SECONDS - 1 <= seconds <= STOP_SECONDS
