"""A small labelled scene: smooth blobs of three classes told apart by their band values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from scipy.ndimage import gaussian_filter

from tests.conftest import write_geotiff

# Mean band values per class (2 bands): the class is visible in the pixels, through noise.
MEANS = np.array([[60, 60], [170, 70], [80, 180]], np.float64)


def blob_scene(size: int = 192, seed: int = 0, noise: float = 35.0):
    """(image uint8 (2, size, size), classes uint8 (size, size)) with smooth class blobs."""
    rng = np.random.default_rng(seed)
    fields = [gaussian_filter(rng.standard_normal((size, size)), 8) for _ in range(2)]
    fields = [f / f.std() for f in fields]
    classes = np.zeros((size, size), np.uint8)
    classes[fields[0] > 0.5] = 1
    classes[(fields[1] > 0.5) & (classes == 0)] = 2
    image = MEANS[classes].transpose(2, 0, 1) + noise * rng.standard_normal((2, size, size))
    return np.clip(image, 0, 255).round().astype(np.uint8), classes


def write_scene(folder: Path, size: int = 192, seed: int = 0, nodata: int | None = 255):
    """Write the scene as image.tif and labels.tif (class names and colours in the labels)."""
    image, classes = blob_scene(size, seed)
    img = write_geotiff(folder / "image.tif", image)
    with rasterio.open(img, "r+") as ds:
        ds.set_band_description(1, "red")
        ds.set_band_description(2, "nir")
    lab = write_geotiff(folder / "labels.tif", classes[None], nodata=nodata)
    with rasterio.open(lab, "r+") as ds:
        ds.update_tags(1, CLASS_0="soil", CLASS_1="crop", CLASS_2="water")
        ds.write_colormap(1, {0: (120, 80, 40, 255), 1: (0, 160, 0, 255), 2: (0, 0, 255, 255)})
    return img, lab, image, classes
