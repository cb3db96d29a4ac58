"""``make demo``'s script on the fetched real samples: outputs a user can open, areas printed.

The nuclei's instance outputs are read back by tifffile (ids), zarr (the OME-Zarr's label
image), csv and json, and must agree with each other: one row and one detection per id, the
areas counted from the id raster.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import tifffile
import zarr
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
    _check_instances(dest, result.stdout)


def _check_instances(dest: Path, stdout: str) -> None:
    """The nuclei run's instances: ids, measurements and detections, consistent."""
    ids = tifffile.imread(dest / "nuclei.instances.ome.tif")
    assert ids.dtype == np.uint32 and ids.shape == (512, 128)
    count = int(ids.max())
    assert count > 10 and set(np.unique(ids)) == set(range(count + 1))  # consecutive from 1
    printed = re.search(r"instances: (\d+) ", stdout)
    assert printed and int(printed.group(1)) == count, stdout
    ngff = zarr.open_group(str(dest / "nuclei_ngff.ome.zarr"), mode="r")
    label_image = np.asarray(ngff["labels/instances/0"])  # (c, y, x), as the labels
    assert label_image.shape == (1, *ids.shape)
    np.testing.assert_array_equal(label_image[0], ids)  # same input and settings, same ids
    pixels = np.bincount(ids.ravel().astype(np.int64), minlength=count + 1)
    with open(dest / "nuclei.measurements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["id"]) for r in rows] == list(range(1, count + 1))
    assert [int(r["area_pixels"]) for r in rows] == pixels[1:].tolist()
    features = json.loads((dest / "nuclei.detections.geojson").read_text())["features"]
    assert len(features) == count
    for feature in features:
        assert feature["properties"]["objectType"] == "detection"
        assert feature["properties"]["classification"]["name"] == "nucleus"
        gid = int(feature["properties"]["measurements"]["id"])
        assert shapely.geometry.shape(feature["geometry"]).area == pixels[gid]
    assert "F1 0.80" in stdout  # the card's held-out object F1 beside the counts
