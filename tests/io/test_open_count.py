"""How many times a run opens its input file: planning and statistics, the feed, the quicklook.

Every call that can open the file is counted when its path is the input: ``rasterio.open``
(GDAL), and ``open`` / ``io.open`` (tifffile's and fsspec's file handles, the header checks).
Before this count was kept, a GeoTIFF was opened 23 times per run (the reader family decided
twice per open, GDAL's reader opening every file twice, one open per ingest thread plus one).
The copy into the work directory is now made block by block by a feeding thread that keeps its
reader open (``pipeline/feed.py``): one open for all its blocks, however many there are. The
driver opens the file twice in all: one read of the TIFF's header gives its reader family, its
integrity and the identity's sampled digest (``io/tiff.py``), and one GDAL dataset gives the
metadata and is held for the statistics' windows (``io/heldreader.py``).
"""

from __future__ import annotations

import builtins
import io
from collections import Counter

import pytest
import rasterio

from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.labelmodel import argmax_model

#: the driver's opens: the TIFF header (its reader family, the truncation check and the
#: identity's digest, one read), GDAL's dataset for the metadata and the statistics' windows
DRIVER = 2
#: ``--workers 0`` copies the blocks on one feeding thread
FEEDING_THREADS = 1


def counted_run(tmp_path, monkeypatch, src, tile: int) -> Counter[str]:
    """Run on ``src`` in process, counting every call that opens it."""
    model = argmax_model(tmp_path / "m.pt2", 3)
    opened: Counter[str] = Counter()

    def counting(name, real):
        def call(file, *args, **kwargs):
            if str(file) == str(src):
                opened[name] += 1
            return real(file, *args, **kwargs)
        return call

    monkeypatch.setattr(rasterio, "open", counting("rasterio.open", rasterio.open))
    monkeypatch.setattr(builtins, "open", counting("open", builtins.open))
    monkeypatch.setattr(io, "open", counting("io.open", io.open))
    run_one(RunOptions.of(str(src), str(tmp_path / "out.tif"), model=str(model), tile=tile,
                          device="cpu"))
    return opened


def test_a_run_opens_its_input_once_per_job(tmp_path, monkeypatch):
    image = smooth_image((3, 700, 600), "uint8", seed=9)
    src = write_geotiff(tmp_path / "in.tif", image)
    opened = counted_run(tmp_path, monkeypatch, src, tile=64)
    # 700 × 600 px in tiles of 64 and blocks of 4 tiles: 12 blocks, all fed by one thread; the
    # input has no pyramid: the quicklook takes the samples the feed kept and opens nothing
    assert sum(opened.values()) == DRIVER + FEEDING_THREADS, opened
    assert opened["rasterio.open"] == 1 + FEEDING_THREADS, opened


@pytest.mark.slow
def test_the_quicklook_opens_the_level_of_the_inputs_pyramid_it_reads(tmp_path, monkeypatch):
    image = smooth_image((3, 3200, 3100), "uint8", seed=4)
    src = write_geotiff(tmp_path / "in.tif", image)
    with rasterio.open(src, "r+") as ds:
        ds.build_overviews([2, 4])  # 1600 × 1550: the level the quicklook reads (≥ 1536 px)
    opened = counted_run(tmp_path, monkeypatch, src, tile=512)
    assert sum(opened.values()) == DRIVER + FEEDING_THREADS + 1, opened
    assert opened["rasterio.open"] == 1 + FEEDING_THREADS + 1, opened
