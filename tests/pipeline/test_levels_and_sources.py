"""Choosing the pyramid level (by index, pixel size or the card) and segmenting Zarr in place."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
import torch
import zarr
from ome_types import from_xml
from rasterio.errors import NotGeoreferencedWarning

from segpipe.models import create_model, default_card, save_checkpoint
from segpipe.pipeline.normalize import Normalizer
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.conftest import ome_zarr_label_node, smooth_image, write_geotiff
from tests.io.iohelpers import write_ome_tiff
from tests.pipeline.oracles import EPS32, FLOAT16_ULPS, assert_labels_match
from tests.pipeline.test_exactness import oracle_labels, tiny_unet


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pyr")
    data = smooth_image((3, 256, 192), "uint8", seed=3)
    return write_ome_tiff(d / "slide.ome.tif", data, "CYX", pixel_size=(0.5, 0.5),
                          sublevels=2)


def ome_pixels(path):
    with tifffile.TiffFile(path) as tif:
        return from_xml(tif.ome_metadata, validate=True).images[0].pixels


@pytest.mark.parametrize(("args", "shape", "size"), [
    ({}, (256, 192), 0.5),
    ({"level": 1}, (128, 96), 1.0),
    ({"pixel_size": 1.9}, (64, 48), 2.0),
])
def test_level_by_index_or_pixel_size(tmp_path, pyramid, args, shape, size):
    model = tiny_unet(tmp_path / "m.pt", 3, "valid")
    out = tmp_path / "out.ome.tif"
    run_one(RunOptions.of(input=str(pyramid), output=str(out), model=str(model), tile=32,
                         device="cpu", **args))
    pixels = ome_pixels(out)
    assert (pixels.size_y, pixels.size_x) == shape
    assert pixels.physical_size_x == pytest.approx(size)


def test_level_from_the_model_card_pixel_size(tmp_path, pyramid):
    torch.manual_seed(0)
    config = dict(in_channels=3, num_classes=3, depth=2, base_width=4)
    net = create_model("unet", **config)
    card = replace(default_card("unet", **config), pixel_size=0.001, pixel_size_unit="mm")
    save_checkpoint(net, tmp_path / "m.pt", architecture="unet", config=config, card=card)
    out = tmp_path / "out.ome.tif"
    run_one(RunOptions.of(input=str(pyramid), output=str(out), model=str(tmp_path / "m.pt"),
                         tile=32, device="cpu"))
    pixels = ome_pixels(out)  # 1 µm per pixel: level 1
    assert (pixels.size_y, pixels.size_x) == (128, 96)


def test_zarr_input_is_segmented_in_place_with_the_same_labels(tmp_path):
    data = smooth_image((3, 150, 130), "uint16", seed=8)
    model = tiny_unet(tmp_path / "m.pt", 3, "valid")
    src_tif = write_geotiff(tmp_path / "in.tif", data, crs=None)
    store = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=data.shape,
                              chunks=(3, 64, 64), dtype="uint16")
    store[:] = data
    outs, normalizers = {}, {}
    for name, src in [("tif", src_tif), ("zarr", tmp_path / "in.zarr")]:
        out = tmp_path / f"{name}.tif"
        work = tmp_path / f"work_{name}"
        summary = run_one(RunOptions.of(input=str(src), output=str(out), model=str(model),
                                       tile=32, device="cpu", workdir=str(work),
                                       keep_workdir=True))
        with warnings.catch_warnings():  # the Zarr input has no georeferencing, so neither
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # has its output
            with rasterio.open(out) as ds:
                outs[name] = ds.read(1)
        normalizers[name], halo = summary["normalizer"], summary["halo"]
        assert (work / "image.zarr").exists() == (name == "tif"), summary
    assert normalizers["zarr"] == normalizers["tif"]  # the same statistics from both sources
    # both equal the whole image's labels (ties aside: their blocks may batch tiles otherwise)
    _, logits, _ = oracle_labels(model, data, halo, Normalizer.from_dict(normalizers["tif"]))
    for name in outs:
        assert_labels_match(outs[name], logits)


def test_probabilities_agree_with_labels_and_ngff_05_is_written(tmp_path):
    src = write_geotiff(tmp_path / "in.tif", smooth_image((3, 70, 90), "uint8", seed=2))
    model = tiny_unet(tmp_path / "m.pt", 3, "valid")
    out = tmp_path / "mask.tif"
    run_one(RunOptions.of(input=str(src), output=str(out), model=str(model), tile=32,
                         device="cpu", probabilities=True))
    with rasterio.open(out) as a, rasterio.open(tmp_path / "mask.probabilities.tif") as p:
        labels, probs = a.read(1), p.read()
        assert p.crs == a.crs and p.transform == a.transform
    assert probs.shape == (3, 70, 90)
    # three probabilities, each rounded to float16 in the work directory
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=2 * FLOAT16_ULPS * EPS32)
    # the softmax of the labels' logits: its argmax is theirs, except where float16 rounding
    # makes the top two probabilities equal (a tie) and numpy's argmax takes the other one
    assert_labels_match(labels, probs, ulps=FLOAT16_ULPS)

    zout = tmp_path / "mask.ome.zarr"
    run_one(RunOptions.of(input=str(src), output=str(zout), model=str(model), tile=32,
                         device="cpu", ngff_version="0.5"))
    assert (zout / "zarr.json").is_file()  # NGFF 0.5 is Zarr v3
    node = ome_zarr_label_node(zout)
    assert node.metadata["properties"][0] == {"class": "class_0"}
    np.testing.assert_array_equal(np.asarray(node.data[0]).squeeze(), labels)
