"""The disk under the work directory fills up: one clear ``error:`` line saying so (where, how
much is free there, how much the work directory holds), exit 1, nothing at the output path,
and a work directory that ``--resume`` finishes with the labels of a clean run once space is
freed.

Mid-segment, on a real small filesystem where the machine lets the test mount one (a 16 MiB
tmpfs, as root): the run is held once 6 blocks are done, a ballast file fills the filesystem to
the last byte, and the run goes on into a full disk. Where mounting is not permitted, the same
moment is made by an injected ``OSError(ENOSPC)`` from each worker's 4th label-chunk write.
During ingest, in the driver, the ENOSPC is injected into the image copy's 10th chunk write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest

from segpipe.pipeline.workdir import WorkDir
from tests.faults.conftest import (
    TILE_ARGS,
    assert_same_as_reference,
    fault_env,
    markers,
    partials,
    segpipe_cmd,
    stages,
    start,
    wait_for,
)

MIB = 1 << 20


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs at ``tmp_path/small-disk`` when mounting is permitted, else a plain folder.

    Yields ``(folder, mounted)``.
    """
    folder = tmp_path / "small-disk"
    folder.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)],
                              capture_output=True, timeout=30)
        mounted = done.returncode == 0
    except OSError:  # no mount command
        mounted = False
    yield folder, mounted
    if mounted:
        subprocess.run(["umount", "-l", str(folder)], check=True, timeout=30)


def fill(folder: Path) -> Path:
    """Write a ballast file into ``folder`` until its filesystem has no byte left."""
    ballast = folder / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (MIB, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\xff" * size):
                    pass
    finally:
        os.close(fd)
    with open(ballast, "ab", buffering=0) as handle, pytest.raises(OSError) as full:
        handle.write(b"x")
    assert full.value.errno == errno.ENOSPC  # not one byte more fits
    return ballast


def the_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.slow
def test_disk_full_mid_segment_is_one_clear_error_and_the_run_resumes_identically(
    prefect_api, fault_assets, small_disk, tmp_path
):
    """Disk full mid-segment (real tmpfs, else ENOSPC): one error line, exit 1; resume identical."""
    disk, mounted = small_disk
    out = tmp_path / "labels.tif"
    workdir = WorkDir(str(disk / "work"))
    base = segpipe_cmd("run", "--input", fault_assets["scene"], "--output", out, "--model",
                       fault_assets["model"], *TILE_ARGS, "--workers", "2", "--workdir",
                       workdir.path, "--quiet")
    release = tmp_path / "release"
    faults = ({"pause_chunk": "labels.zarr:4", "release": release} if mounted
              else {"enospc_chunk": "labels.zarr:4"})
    proc = start(base, fault_env(prefect_api, **faults), tmp_path / "run.log")
    ballast = None
    if mounted:  # both workers wait before their 4th label chunk: 6 blocks are done
        wait_for(lambda: len(workdir.done_blocks()) >= 6 or proc.poll() is not None, 240,
                 "6 blocks done")
        ballast = fill(disk)
        release.touch()
    assert proc.wait(timeout=300) == 1, (tmp_path / "run.log").read_text()
    error = the_error((tmp_path / "run.log").read_text())
    assert error.startswith("error: the disk is full: no space left on the device under "
                            f"{workdir.path} ("), error
    assert "free there; the work directory holds " in error and "--resume" in error
    if mounted:
        assert "(0 bytes free there;" in error
    assert not out.exists() and not partials(out.parent)
    assert "ingest" in stages(workdir) and "segment" not in stages(workdir)
    kept = markers(workdir)
    assert len(kept) >= 6

    if ballast is not None:
        ballast.unlink()  # space is freed
    resumed = subprocess.run([*base, "--resume", "--keep-workdir"], env=fault_env(prefect_api),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_as_reference(out, fault_assets["reference"])
    now = markers(workdir)
    assert {k: now[k] for k in kept} == kept  # what was done before the disk filled is kept


def test_disk_full_during_ingest_in_the_driver_is_one_clear_error_and_resumable(
    prefect_api, fault_assets, tmp_path
):
    """ENOSPC while the input is copied: one 'the disk is full' line, exit 1; resume is identical.

    The copy is made block by block by the feed thread, ahead of the blocks (segment stage).
    """
    out = tmp_path / "labels.tif"
    workdir = WorkDir(str(tmp_path / ".labels.tif.segpipe"))
    base = segpipe_cmd("run", "--input", fault_assets["scene"], "--output", out, "--model",
                       fault_assets["model"], *TILE_ARGS, "--workers", "0", "--quiet")
    failed = subprocess.run(base, env=fault_env(prefect_api, enospc_chunk="image.zarr:10"),
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1, failed.stderr
    error = the_error(failed.stderr)
    assert error.startswith(f"error: the disk is full: no space left on the device under "
                            f"{workdir.path} ("), error
    assert not out.exists() and stages(workdir) == {"ingest", "stats"}  # the copy failed after
    resumed = subprocess.run([*base, "--resume"], env=fault_env(prefect_api),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_as_reference(out, fault_assets["reference"])
    with contextlib.suppress(FileNotFoundError):
        assert not list(Path(workdir.path).iterdir())  # removed after success
