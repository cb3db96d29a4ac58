"""Faults injected from outside segpipe, and what every fault test needs.

Faults come from ``tests/faults/inject/sitecustomize.py`` (on ``PYTHONPATH`` of the ``segpipe``
subprocess: it wraps zarr, rasterio or torch functions, never segpipe's), from signals sent to
the process tree, or from a size-limited filesystem. Kills land where they are meant to: the
tests wait for block markers, stage entries in ``manifest.json`` or files in the work directory,
and a pause in the injected code holds the run there until the kill; nothing sleeps for a
guessed time.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import psutil
import pytest

from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from segpipe.pipeline.workdir import WorkDir
from tests.conftest import smooth_image, write_geotiff
from tests.flows.conftest import (  # noqa: F401  (prefect_api is a fixture)
    cli_env,
    group_gone,
    kill_group,
    prefect_api,
    read_labels,
    segpipe_cmd,
    wait_for,
)
from tests.pipeline.test_exactness import tiny_unet

INJECT = Path(__file__).parent / "inject"
#: 8 × 8 blocks of one 64 px tile (one label chunk per block); the valid U-Net's margin is 20
SHAPE = (1, 512, 512)
TILE_ARGS = ("--tile", "64", "--block-pixels", "64", "--batch-size", "1", "--device", "cpu")
BLOCKS = 64


def fault_env(api_url: str, **faults: str | int) -> dict[str, str]:
    """Environment of a ``segpipe`` subprocess with the injected faults ``FAULT_<NAME>``."""
    env = cli_env(api_url)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(INJECT), env.get("PYTHONPATH")]))
    env.update({f"FAULT_{k.upper()}": str(v) for k, v in faults.items()})
    return env


def start(args: list, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``segpipe`` in its own process group (so its whole tree can be signalled)."""
    handle = open(log, "w")  # noqa: SIM115 (closed by the child's exit; read back by the test)
    return subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def markers(workdir: WorkDir) -> dict[str, tuple[str, int, int]]:
    """Block id → (run id, pid, marker mtime) of every finished block."""
    out = {}
    for block_id, record in workdir.done_blocks().items():
        stat = (workdir.done_dir / block_id).stat()
        out[block_id] = (record.run_id, record.pid, stat.st_mtime_ns)
    return out


def stages(workdir: WorkDir) -> set[str]:
    """The stages recorded as finished in ``manifest.json`` (empty before it exists)."""
    path = Path(workdir.path) / "manifest.json"
    try:
        return set(json.loads(path.read_text())["stages"])
    except (FileNotFoundError, ValueError):
        return set()


def chunk_files(store: Path) -> int:
    """Chunk files written into a Zarr v3 store (zarr writes each atomically)."""
    folder = store / "c"
    return sum(1 for p in folder.rglob("*") if p.is_file() and ".partial" not in p.name) \
        if folder.is_dir() else 0


def tree(pid: int) -> list[psutil.Process]:
    """Process ``pid`` and all its descendants."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def all_gone(processes: list[psutil.Process]) -> bool:
    """Whether none of ``processes`` is still running (zombies count as gone)."""
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def partials(folder: Path) -> list[str]:
    """Hidden ``.partial`` entries (unpublished outputs) in ``folder``."""
    return sorted(p.name for p in folder.glob(".*.partial"))


@pytest.fixture(scope="session")
def fault_assets(tmp_path_factory):
    """A 512 × 512 scene, the tiny valid U-Net, and the scene's labels made in-process."""
    d = tmp_path_factory.mktemp("fault-assets")
    scene = write_geotiff(d / "scene.tif", smooth_image(SHAPE, "uint8", seed=7))
    model = tiny_unet(d / "unet.pt", 1, "valid")
    reference = d / "reference.tif"
    kw = dict(zip(TILE_ARGS[::2], TILE_ARGS[1::2]))
    run_one(RunOptions.of(
        str(scene), str(reference), model=str(model), tile=int(kw["--tile"]),
        block_pixels=int(kw["--block-pixels"]), batch_size=1, device="cpu",
    ))
    return {"scene": scene, "model": model, "reference": reference,
            "labels": read_labels(reference)}


def assert_same_as_reference(out: Path, reference: Path) -> None:
    """Label pixels (read by rasterio) and file bytes equal the in-process reference's."""
    np.testing.assert_array_equal(read_labels(out), read_labels(reference))
    assert out.read_bytes() == reference.read_bytes()  # a COG holds no time stamp
