"""Memory does not grow with the image.

Two checks. The fast one bounds the allocations of the block path directly: ``tracemalloc``
(which sees every numpy buffer, on every thread) records the peak of each stage that handles
pixels while the stage sequence segments images 16× apart in area in this process, with the
same block function Dask workers run; a buffer that grows with the image shows as megabytes,
and a planted one is caught (the check is shown to fail). The slow one runs ``segpipe run``
(driver, Dask workers, Prefect server) on 0.015 and 0.25 gigapixels (16× apart) and compares
the peak PSS of the whole process tree (benchmarks/memory.py).
"""

from __future__ import annotations

import importlib.util
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from segpipe.pipeline import segment, stages
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.flows.conftest import cli_env

BENCHMARK = Path(__file__).parents[2] / "benchmarks" / "memory.py"
MIB = 1 << 20


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("segpipe_memory_benchmark", BENCHMARK)
    memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(memory)
    return memory


def _image(path: Path, side: int) -> Path:
    profile = dict(driver="GTiff", width=side, height=side, count=1, dtype="uint8", tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", crs="EPSG:32621",
                   transform=Affine(10.0, 0, 300000.0, 0, -10.0, 5000000.0))
    rng = np.random.default_rng(side)
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, side, 256):
            dst.write(rng.integers(0, 255, (1, 256, side), dtype=np.uint8),
                      window=rasterio.windows.Window(0, r, side, 256))
    return path


def _peak_mib(folder: Path, side: int, model: Path) -> float:
    """The peak of the stages that handle pixels (plan to export), in MiB.

    The report stage is left out: it joins the objects across block seams, whose memory grows
    with the seam pixels (O(blocks × block perimeter), a few MiB here on noise), not with a
    buffer of the image; the slow test below bounds the whole process tree.
    """
    src = _image(folder / f"in_{side}.tif", side)
    peaks: list[int] = []

    def call(stage, fn, *args):
        tracemalloc.reset_peak()
        try:
            return fn(*args)
        finally:
            if stage != stages.Stage.REPORT:
                peaks.append(tracemalloc.get_traced_memory()[1])

    tracemalloc.start()
    try:
        run_one(RunOptions.of(str(src), str(folder / f"out_{side}.tif"), model=str(model),
                              tile=256, block_pixels=256, device="cpu"),
                stages.RunContext(call=call))
        return max(peaks) / MIB
    finally:
        tracemalloc.stop()


@pytest.fixture(autouse=True)
def _no_visuals(monkeypatch):
    """The quicklook reads up to 1536 px a side whatever the image (bounded, and tested on a
    20k × 20k input in tests/pipeline/test_quicklook.py): here only the block path is measured.
    So is the quicklook's preview the ingest keeps (io/preview.py: at most 1536 px a side)."""
    monkeypatch.setattr(stages, "write_visuals", lambda plan, summary: [])
    monkeypatch.setattr(stages, "_preview", lambda plan: None)


@pytest.fixture(scope="module")
def conv1x1(tmp_path_factory):
    return _benchmark_module().make_model(tmp_path_factory.mktemp("model") / "conv1x1.pt2")


def _flat(tmp_path, model) -> tuple[float, float]:
    small = _peak_mib(tmp_path, 768, model)  # 9 blocks
    large = _peak_mib(tmp_path, 3072, model)  # 144 blocks: 16× the area
    return small, large


def test_allocations_of_the_block_path_do_not_grow_with_the_image(tmp_path, conv1x1):
    small, large = _flat(tmp_path, conv1x1)
    # a uint8 buffer of the large image alone would be 9 MiB; per-block buffers are ~1 MiB
    assert large < 1.2 * small + 2, (small, large)


def test_the_allocation_check_catches_a_buffer_that_grows_with_the_image(
    tmp_path, conv1x1, monkeypatch
):
    kept: list[np.ndarray] = []
    real = segment.segment_block

    def leaky(job, index):  # keeps a copy of each block's labels: grows with the image
        result = real(job, index)
        kept.append(np.zeros(result.pixels, np.uint8))
        return result

    monkeypatch.setattr(segment, "segment_block", leaky)
    small, large = _flat(tmp_path, conv1x1)
    assert not large < 1.2 * small + 2, (small, large)  # the check above would fail


@pytest.mark.slow
def test_peak_memory_is_flat_from_0_015_to_0_25_gigapixels(prefect_api, tmp_path):
    memory = _benchmark_module()
    result = memory.benchmark(0.015, 0.25, tile=512, workdir=str(tmp_path),
                              extra_args=["--workers", "2"], env=cli_env(prefect_api))
    small, large = result["small"], result["large"]
    assert large["gigapixels"] >= 16 * small["gigapixels"] * 0.9
    # the driver and the Dask workers are all in the tree
    assert sum("dask-worker" in k for k in large["per_process_at_peak"]) >= 2
    assert large["peak_pss_bytes"] < memory.LIMIT_BYTES
    assert result["growth_ratio"] < memory.MAX_GROWTH, result
