"""``make demo``'s script on the fetched real samples: outputs a user can open, areas printed."""

from __future__ import annotations

import subprocess
import sys

import pytest
import rasterio
import tifffile
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from tests.conftest import REPO


@pytest.mark.slow
def test_demo_segments_the_real_samples(samples, tmp_path):
    dest = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), str(samples), str(dest)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert "landcover_rgb" in result.stdout and "nuclei" in result.stdout
    assert " ha" in result.stdout  # land-cover class areas in hectares
    with rasterio.open(dest / "landsat8_landcover.tif") as ds, rasterio.open(
        samples / "landsat8_epsg32621.tif"
    ) as src:
        assert ds.crs == src.crs and ds.transform == src.transform and ds.shape == src.shape
    with tifffile.TiffFile(dest / "nuclei.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].shape[-2:] == (512, 128)
    nodes = list(Reader(parse_url(str(dest / "nuclei_ngff.ome.zarr")))())
    assert nodes and any("image-label" in str(n.metadata) or n.specs for n in nodes)
    for name in ("landsat8_landcover", "nuclei", "nuclei_ngff"):
        assert (dest / f"{name}.quicklook.png").is_file()
