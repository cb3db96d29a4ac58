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
    assert "landcover_bgrn" in result.stdout and "nuclei" in result.stdout
    assert "landcover_rgb" not in result.stdout  # never shown on a scene with water
    assert " ha" in result.stdout  # land-cover class areas in hectares
    assert "open water found" in result.stdout  # the held-out accuracy beside the areas
    with rasterio.open(dest / "sentinel2_landcover.tif") as ds, rasterio.open(
        samples / "s2_t33uuu_b02.jp2"
    ) as src:
        assert ds.crs == src.crs and ds.transform == src.transform and ds.shape == src.shape
        labels = ds.read(1)
    water_ha = next(float(line.split()[1]) for line in result.stdout.splitlines()
                    if line.strip().startswith("water:"))
    assert water_ha > 100  # the Havel lakes come out as water in the area table
    assert (labels == 5).sum() * 0.01 == pytest.approx(water_ha, rel=0.01)
    with tifffile.TiffFile(dest / "nuclei.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].shape[-2:] == (512, 128)
    nodes = list(Reader(parse_url(str(dest / "nuclei_ngff.ome.zarr")))())
    assert nodes and any("image-label" in str(n.metadata) or n.specs for n in nodes)
    for name in ("sentinel2_landcover", "nuclei", "nuclei_ngff"):
        assert (dest / f"{name}.quicklook.png").is_file()
