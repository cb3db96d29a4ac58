"""What the corpus cases are made of, made by code: small rasters and tiny models.

Rasters are 64 × 64 px, 3 bands, seeded. Models are tiny U-Nets (depth 2, 4 channels: stride 4,
a valid one with a margin of 20 px), made once per test process and copied into each case's
folder, so every path a case names is relative to its folder.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

SHAPE = (3, 64, 64)
CRS_UTM_33N = CRS.from_epsg(32633)
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)  # 10 m pixels
SEED = 20240613
#: The mtime given to an existing output (2001-09-09): a rewrite cannot keep it by chance.
OLD_MTIME_NS = 1_000_000_000 * 10**9
#: The tiny U-Nets' stride (2 ** depth) and the valid one's margin.
TINY_STRIDE = 4
TINY_MARGIN = 20


def pixels(shape: tuple[int, int, int] = SHAPE, dtype: str = "uint8") -> np.ndarray:
    """Seeded pixels of ``dtype`` (integers over the type's range, floats in [0, 255))."""
    rng = np.random.default_rng(SEED)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return (rng.random(shape) * 255).astype(dtype)


def geotiff(path: Path, data: np.ndarray | None = None, *, nodata: float | None = None,
            **profile: object) -> Path:
    """Write ``data`` (bands, h, w; default :func:`pixels`) as a GeoTIFF in UTM 33N."""
    data = pixels() if data is None else data
    bands, h, w = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", count=bands, height=h, width=w, dtype=str(data.dtype),
        crs=CRS_UTM_33N, transform=TRANSFORM, nodata=nodata, **profile,
    ) as dst:
        dst.write(data)
    return path


def gcp_geotiff(path: Path, data: np.ndarray | None = None) -> Path:
    """:func:`pixels` georeferenced by four corner GCPs in UTM 33N only (no geotransform)."""
    from rasterio.control import GroundControlPoint

    data = pixels() if data is None else data
    bands, h, w = data.shape
    gcps = [GroundControlPoint(r, c, *(TRANSFORM @ (c, r)), z=0.0)
            for r, c in ((0, 0), (0, w), (h, 0), (h, w))]
    with rasterio.open(
        path, "w", driver="GTiff", count=bands, height=h, width=w, dtype=str(data.dtype),
        gcps=gcps, crs=CRS_UTM_33N,
    ) as dst:
        dst.write(data)
    return path


def scene(folder: Path, name: str = "scene.tif") -> Path:
    """The case's valid input: a seeded 3-band uint8 GeoTIFF."""
    return geotiff(folder / name)


@functools.cache
def scratch() -> Path:
    """A folder for what the cases share (models), made once per process, removed at its exit."""
    folder = Path(tempfile.mkdtemp(prefix="segpipe-corpus-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def _models() -> dict[str, Path]:
    """Tiny checkpoints, made once per process: valid and same padding, 3 bands, 3 classes."""
    from tests.pipeline.test_exactness import tiny_unet

    return {
        "valid": tiny_unet(scratch() / "tiny.pt", 3, "valid"),
        "same": tiny_unet(scratch() / "same.pt", 3, "same"),
    }


def tiny_model(folder: Path, padding: str = "valid", name: str = "tiny.pt") -> str:
    """A tiny U-Net checkpoint (valid or same padding) copied into ``folder``; its name."""
    shutil.copyfile(_models()[padding], folder / name)
    return name

