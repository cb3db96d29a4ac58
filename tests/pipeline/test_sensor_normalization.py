"""Land-cover models scale pixels by fixed per-sensor maps from their card, never by statistics
of the scene: the same surface gets the same model inputs in any scene.

The model here is the bundled ``landcover_bgrn`` with its card's normalization set, in the test,
to the per-sensor table ``scripts/train_zoo.py`` writes: the normalization is tested on its own,
whatever the shipped card says (tests/models/test_zoo.py checks the shipped cards)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from segpipe.models.bundled import bundled_models
from segpipe.models.card import ModelCard, Normalization, NormMethod
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.plan import plan_run
from segpipe.pipeline.sensor import detect_sensor
from segpipe.pipeline.stages import image_statistics

SEGPIPE = str(Path(sys.executable).parent / "segpipe")
CROP = (slice(40, 104), slice(60, 124))  # a 64 x 64 crop of land in the Landsat 7 scene
REPO = Path(__file__).resolve().parents[2]


def _train_zoo():
    spec = importlib.util.spec_from_file_location("train_zoo", REPO / "scripts" / "train_zoo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_zoo"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sensor_model(tmp_path_factory) -> Path:
    """landcover_bgrn's weights with the per-sensor card normalization train_zoo writes."""
    shipped = next(m for m in bundled_models() if m.name == "landcover_bgrn").path
    payload = torch.load(shipped, map_location="cpu", weights_only=True)
    payload["card"] = {**payload["card"],
                       "normalization": _train_zoo().sensor_normalization(4)}
    path = tmp_path_factory.mktemp("model") / "landcover_bgrn.pt"
    torch.save(payload, path)
    return path


def _write(path: Path, image: np.ndarray) -> Path:
    profile = {"driver": "GTiff", "count": image.shape[0], "dtype": "float32", "crs": "EPSG:32119",
               "transform": Affine(28.5, 0, 630534.0, 0, -28.5, 228114.0),
               "height": image.shape[1], "width": image.shape[2], "nodata": -99999.0}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image.astype(np.float32))
        for i, name in enumerate(("blue", "green", "red", "nir"), start=1):
            dst.set_band_description(i, name)
    return path


def _scene(samples: Path) -> np.ndarray:
    bands = []
    for b in (1, 2, 3, 4):
        with rasterio.open(samples / f"lsat7_2000_b{b}.tif") as ds:
            bands.append(ds.read(1))
    return np.stack(bands)


def _inputs(model: Path, path: Path, window: tuple[slice, slice], *extra: str) -> np.ndarray:
    """The model inputs of ``window`` as segpipe run computes them (plan + stats stage)."""
    options = RunOptions.of(str(path), str(path.with_suffix(".out.tif")), device="cpu",
                            model=str(model), **dict(zip(extra[::2], extra[1::2])))
    plan = plan_run(options)
    assert plan.card.name == "landcover_bgrn"
    normalizer = image_statistics(plan)
    with rasterio.open(path) as ds:
        pixels = ds.read()[:, window[0], window[1]]
    return normalizer.apply(pixels[list(plan.bands)], plan.info.nodata)[0]


@pytest.fixture(scope="module")
def two_scenes(samples, tmp_path_factory):
    """The crop alone, and the same crop inside a 512 x 512 scene that is 98 % water."""
    d = tmp_path_factory.mktemp("scenes")
    scene = _scene(samples)
    crop = scene[:, CROP[0], CROP[1]]
    with rasterio.open(samples / "lsat7_2000_strata.tif") as ds:
        water = ds.read(1) == 6
    rng = np.random.default_rng(0)
    typical = np.median(scene[:, water], axis=1)[:, None, None]
    lake = typical + rng.normal(0, 1.0, (4, 512, 512))
    lake[:, 200:264, 300:364] = crop
    return _write(d / "crop.tif", crop), _write(d / "lake.tif", lake)


def test_same_surface_same_inputs_alone_or_inside_a_lake(two_scenes, sensor_model):
    crop, lake = two_scenes
    alone = _inputs(sensor_model, crop, (slice(None), slice(None)), "sensor", "landsat7")
    inside = _inputs(sensor_model, lake, (slice(200, 264), slice(300, 364)),
                     "sensor", "landsat7")
    np.testing.assert_array_equal(alone, inside)
    # independent oracle: the card's landsat7 map applied with numpy
    saved = torch.load(sensor_model, weights_only=True, map_location="cpu")
    card = ModelCard.from_dict(saved["card"])
    assert card.normalization.method is NormMethod.SENSOR
    landsat7 = next(s for s in card.normalization.sensors or () if s.name == "landsat7")
    with rasterio.open(crop) as ds:
        raw = ds.read().astype(np.float64)
    offset = np.asarray(landsat7.offset)[:, None, None]
    scale = np.asarray(landsat7.scale)[:, None, None]
    np.testing.assert_allclose(alone, (raw - offset) * scale, rtol=1e-5, atol=1e-6)


def test_the_shipped_land_cover_cards_carry_the_same_sensor_table():
    """What the tests above check is what the bundled models use."""
    zoo = _train_zoo()
    for name, bands in (("landcover_bgrn", 4), ("landcover_rgb", 3)):
        card = next(m.card for m in bundled_models() if m.name == name)
        assert card.normalization == Normalization.from_dict(zoo.sensor_normalization(bands))


def test_per_image_statistics_would_not_give_the_same_inputs(two_scenes, sensor_model):
    """The failure the fixed map removes: percentile statistics differ between the scenes."""
    crop, lake = two_scenes
    alone = _inputs(sensor_model, crop, (slice(None), slice(None)), "normalize", "percentile")
    inside = _inputs(sensor_model, lake, (slice(200, 264), slice(300, 364)),
                     "normalize", "percentile")
    assert np.abs(alone - inside).max() > 0.1


def test_sensor_is_read_from_landsat_and_sentinel2_product_names():
    assert detect_sensor("/d/LC08_L1TP_224078_20200518_20200518_01_RT.TIF") == "landsat8"
    assert detect_sensor("LE07_L1TP_016035_20000331_20200918_02_T1_B1.TIF") == "landsat7"
    assert detect_sensor("T33UUU_20170216T102101_B02.jp2") == "sentinel2"
    assert detect_sensor("LC08_L2SP_224078_20200127_02_T1.tif") is None  # surface reflectance
    assert detect_sensor("scene.tif") is None


def test_sensor_table_validates_and_maps_like_meanstd():
    norm = Normalization.from_dict({"method": "sensor", "sensors": {
        "landsat8": {"offset": [5000, 5000], "scale": [1e-4, 2e-4]}}})
    fixed = norm.for_sensor("landsat8")
    assert fixed.method is NormMethod.MEANSTD
    assert fixed.mean == (5000.0, 5000.0) and fixed.std == pytest.approx((1e4, 5e3))
    assert Normalization.from_dict(norm.to_dict()) == norm
    with pytest.raises(Exception, match="sensors"):
        Normalization.from_dict({"method": "sensor"})
    with pytest.raises(Exception, match="scale"):
        Normalization.from_dict({"method": "sensor", "sensors": {"x": {"offset": [0],
                                                                         "scale": [0]}}})


def test_without_sensor_a_per_sensor_model_refuses_naming_sensor(two_scenes, sensor_model,
                                                                 tmp_path):
    _, lake = two_scenes
    out = tmp_path / "out.tif"
    result = subprocess.run([SEGPIPE, "run", "--input", str(lake), "--output", str(out),
                             "--device", "cpu", "--workers", "0", "--model", str(sensor_model)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "--sensor" in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()
    bad = subprocess.run([SEGPIPE, "run", "--input", str(lake), "--output", str(out),
                          "--device", "cpu", "--workers", "0", "--model", str(sensor_model),
                          "--sensor", "modis"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--sensor modis" in bad.stderr and not out.exists()
