"""Memory does not grow with the image.

Two kinds of check. The fast ones bound the allocations directly: ``tracemalloc`` (which sees
every numpy buffer, on every thread) records the peak of each stage that handles pixels, and
what the report stage allocates on the driver, while the stage sequence segments noise images
16× apart in area in this process, with the same block function Dask workers run; a buffer that
grows with the image shows as megabytes, and planted ones are caught (the checks are shown to
fail). The labels of noise are noise-like (tiny components everywhere): the report's worst
case, since it joins the objects across block seams. The slow one runs ``segpipe run``
(driver, Dask workers, Prefect server) on 0.015 and 0.25 gigapixels (16× apart) and compares
the peak PSS of the whole process tree (benchmarks/memory.py). Two more slow ones run the same
pair on dense nuclei-like discs (a jittered hexagonal lattice, some touching) with every
instance output (``--instance-labels --measurements --detections``): the instance pass, the
block path and the report stay flat, and the measurements and detections grow with the width.
"""

from __future__ import annotations

import importlib.util
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine

from segpipe.pipeline import segment, stages
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from segpipe.pipeline.workdir import WorkDir
from tests.flows.conftest import cli_env

BENCHMARK = Path(__file__).parents[2] / "benchmarks" / "memory.py"
MIB = 1 << 20


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("segpipe_memory_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
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


def _nuclei_mask(side: int, seed: int) -> np.ndarray:
    """Dense nuclei-like discs: a jittered hexagonal lattice (17 px apart) of radius 5–8 px.

    About half the image is foreground; neighbours whose radii and jitter reach each other
    touch (clumps the watershed splits), none wider than ~60 px (under the default
    ``--instance-max-diameter`` of 64, so the pass is exact and no clump is clipped).
    """
    rng = np.random.default_rng(seed)
    pad = 2 * _R + 2  # discs centred up to a lattice step (and jitter) past either edge
    mask = np.zeros((side + 2 * pad + 2 * int(_SPACING),) * 2, bool)
    yy, xx = np.mgrid[-_R:_R + 1, -_R:_R + 1]
    for i, row in enumerate(np.arange(0, side + _DY, _DY)):
        for col in np.arange((i % 2) * _SPACING / 2, side + _SPACING, _SPACING):
            r, c = row + rng.uniform(-1.5, 1.5), col + rng.uniform(-1.5, 1.5)
            ri, ci = round(r), round(c)
            disc = (yy + ri - r) ** 2 + (xx + ci - c) ** 2 <= rng.uniform(5, 8) ** 2
            mask[pad + ri - _R:pad + ri + _R + 1, pad + ci - _R:pad + ci + _R + 1] |= disc
    return mask[pad:pad + side, pad:pad + side]


_SPACING, _R = 17.0, 9
_DY = _SPACING * np.sqrt(3) / 2


def _nuclei(path: Path, side: int) -> Path:
    """Dark nuclei (~50) on a bright background (~210) with noise, as H&E's haematoxylin: the
    1×1 model's class 1 is the pixels under half the range (``benchmarks/memory.py``)."""
    rng = np.random.default_rng(side)
    image = np.where(_nuclei_mask(side, side), 50.0, 210.0) + rng.normal(0, 15, (side, side))
    profile = dict(driver="GTiff", width=side, height=side, count=1, dtype="uint8", tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", crs="EPSG:32621",
                   transform=Affine(10.0, 0, 300000.0, 0, -10.0, 5000000.0))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.clip(image, 0, 255).astype(np.uint8)[None])
    return path


@dataclass(frozen=True)
class Peaks:
    """One run's peaks in MiB: the block path's, the export's and the report stage's own."""

    block_path: float
    export: float
    report: float
    objects: int  # the summary's objects: noise-like labels make many tiny ones
    instances: float = 0.0  # the instance pass's own (runs asking for instances)
    summary: dict | None = None  # the run's summary


def _peaks(folder: Path, side: int, model: Path, image: Callable[[Path, int], Path] = _image,
           **options: Any) -> Peaks:
    """Segment a ``side``² image (noise unless ``image`` draws another) and measure its stages.

    ``block_path``: the peak of traced memory during the stages that handle pixels (plan to
    segment). ``export``: what the export allocates above what is live when it starts (GDAL's
    COG copy reads the label store in full-width strips for the overviews, as GDAL does for
    any source: O(width), not O(area)).
    ``report``: what the report stage allocates above what is live when it starts
    (it reads the block markers and joins the objects across block seams; the labels of noise
    make a component of a few pixels everywhere, the worst case for the seams).
    ``instances``: what the instance pass allocates above what is live when it starts (with
    ``options`` asking for instances).
    """
    src = image(folder / f"in_{side}.tif", side)
    block: list[int] = []
    export: list[int] = []
    report: list[int] = []
    instances: list[int] = [0]

    def call(stage, fn, *args):
        live = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            return fn(*args)
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            if stage == stages.Stage.REPORT:
                report.append(peak - live)
            elif stage == stages.Stage.EXPORT:
                export.append(peak - live)
            elif stage == stages.Stage.INSTANCES:
                instances.append(peak - live)
            else:
                block.append(peak)

    tracemalloc.start()
    try:
        summary = run_one(RunOptions.of(str(src), str(folder / f"out_{side}.tif"),
                                        model=str(model), tile=256, block_pixels=256,
                                        device="cpu", **options),
                          stages.RunContext(call=call))
    finally:
        tracemalloc.stop()
    return Peaks(max(block) / MIB, max(export) / MIB, max(report) / MIB,
                 sum(c["objects"] for c in summary["classes"]), max(instances) / MIB, summary)


def _no_visuals(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quicklook reads up to 1536 px a side whatever the image (bounded, and tested on a
    20k × 20k input in tests/pipeline/test_quicklook.py): here only the block path and the
    report's tally are measured. So is the quicklook's preview kept by the ingest, or
    assembled by the segment stage from what the blocks' feed kept (io/preview.py: at most
    1536 px a side) left out."""
    monkeypatch.setattr(stages, "write_visuals", lambda plan, summary: [])
    for name in ("_preview", "_save_preview"):
        if hasattr(stages, name):
            monkeypatch.setattr(stages, name, lambda *args: None)


@pytest.fixture(scope="module")
def conv1x1(tmp_path_factory):
    return _benchmark_module().make_model(tmp_path_factory.mktemp("model") / "conv1x1.pt2")


def _pair(folder: Path, model: Path, image: Callable[[Path, int], Path] = _image,
          **options: Any) -> tuple[Peaks, Peaks]:
    small = _peaks(folder, 768, model, image, **options)  # 9 blocks
    large = _peaks(folder, 3072, model, image, **options)  # 144 blocks: 16× the area
    return small, large


def _flat(small: float, large: float) -> bool:
    # a uint8 buffer of the large image alone would be 9 MiB; per-block buffers are ~1 MiB
    return large < 1.2 * small + 2


@pytest.fixture(scope="module")
def clean(tmp_path_factory, conv1x1) -> tuple[Peaks, Peaks]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        _no_visuals(monkeypatch)
        return _pair(tmp_path_factory.mktemp("clean"), conv1x1)


def test_allocations_of_the_block_path_do_not_grow_with_the_image(clean):
    small, large = clean
    assert _flat(small.block_path, large.block_path), (small, large)


def test_the_export_grows_with_the_width_not_the_area(clean):
    """GDAL's overview pass asks the label store for full-width strips (a few per thread): 4×
    the width may cost 4× the strips, with room for GDAL's choice of strip height; a buffer of
    the large image's labels (9 MiB) on top would not fit."""
    small, large = clean
    assert large.export < 2 * (3072 / 768) * small.export, (small, large)
    assert large.export + 9 > 2 * (3072 / 768) * small.export  # the bound would catch one


def test_the_report_stage_does_not_grow_with_the_image_on_noise_like_labels(clean):
    """The report streams the markers a row of blocks at a time and joins the seams over the
    live frontier: it grows at most with the image's width (4× here), never with its area."""
    small, large = clean
    assert large.objects > 16 * 0.8 * small.objects > 0.01 * 768 * 768, (small, large)
    assert _flat(small.report, large.report), (small, large)


def test_the_allocation_checks_catch_a_buffer_that_grows_with_the_image(
    tmp_path, conv1x1, monkeypatch
):
    """A buffer per block planted in the block path, and one per block marker the report
    reads (as a report that kept every block's record, or re-read its labels, would): both
    checks above fail."""
    _no_visuals(monkeypatch)
    kept: list[np.ndarray] = []
    real_record, real_finished = segment.record_block, WorkDir.finished

    def leaky_record(job, index, result, *args, **kwargs):  # a buffer per block's labels
        kept.append(np.zeros(result.pixels, np.uint8))  # (every executor path records here)
        return real_record(job, index, result, *args, **kwargs)

    def leaky_finished(self):  # the report keeps a buffer per block it reads
        for record in real_finished(self):
            kept.append(np.zeros(record.pixels, np.uint8))
            yield record

    monkeypatch.setattr(segment, "record_block", leaky_record)
    monkeypatch.setattr(WorkDir, "finished", leaky_finished)
    small, large = _pair(tmp_path, conv1x1)
    assert not _flat(small.block_path, large.block_path), (small, large)
    assert not _flat(small.report, large.report), (small, large)


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory, conv1x1) -> tuple[Peaks, Peaks]:
    """The pair on dense nuclei-like discs, with every instance output (6–11 min on 2 busy
    cores, most of it the large image's measurements and detections under tracemalloc)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _no_visuals(monkeypatch)
        return _pair(tmp_path_factory.mktemp("nuclei"), conv1x1, _nuclei, instance_labels=True,
                     measurements=True, detections=True)


@pytest.mark.slow
def test_the_instance_pass_does_not_grow_with_the_image_on_dense_nuclei(nuclei):
    """38 000 touching nuclei-like instances at 3072², 16× the small image's, none clipped.

    The pass holds one block (core + halo) and 16 bytes per instance (their anchors and
    classes: 0.6 MiB here). Before, the canonical ids were rewritten by strips of full rows,
    whose ``np.unique`` sort grew with the width: the pass's peak went from 7.8 MiB to
    17.2 MiB, which this bound catches (7.8 and 8.6 MiB since it goes a block at a time).
    """
    small, large = nuclei
    for run in nuclei:
        found = run.summary["instances"]
        assert found["clipped"] == 0  # every clump fits the halo: the pass is exact
        components = run.summary["classes"][1]["objects"]  # the nuclei before separation
        assert found["total"] > 1.03 * components  # touching discs were split
    assert large.summary["instances"]["total"] > 16 * 0.9 * small.summary["instances"]["total"]
    assert large.summary["instances"]["total"] > 0.003 * 3072 * 3072  # dense: ~1 per 250 px
    assert _flat(small.block_path, large.block_path), (small, large)
    assert _flat(small.instances, large.instances), (small, large)
    assert _flat(small.report, large.report), (small, large)


@pytest.mark.slow
def test_the_instance_tables_grow_with_the_width_not_the_area(nuclei):
    """The measurements and detections hold one row of blocks' objects at a time (they are
    written in id order, and a block row's ids interleave its blocks): 4× the width may cost
    4× (twice, for the room the COG's strips need, as above); 16× the objects would not fit.

    Measured: 7.2 MiB at 768 px, 15.2 at 3072 (the instance COG alone 3.9 and 8.8). Before
    the row's GeoJSON features were held as JSON text, as dicts (~10 KB an object): 13.2 and
    46.2 MiB, within this bound too: the width's cost, not a leak."""
    small, large = nuclei
    assert large.export < 2 * (3072 / 768) * small.export, (small, large)


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
