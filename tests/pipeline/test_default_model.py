"""With no ``--model``, segpipe picks the bundled model whose card fits the input.

The zoo here is a temporary folder of tiny checkpoints with the cards the real bundled models
will carry: a 4-band (blue, green, red, NIR) and a 3-band (visible) land-cover model for
georeferenced rasters at 10–60 m, and a 1-channel (DAPI) nuclei model for microscopy at
0.1–2 µm. Expected choices are written out by hand, from what each input is.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from segpipe.flows.cli import main
from segpipe.models import create_model, default_card, save_checkpoint
from segpipe.models.foundation import InputError
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.plan import plan_run
from segpipe.pipeline.stages import run_one
from tests.conftest import UTM_21N, smooth_image, write_geotiff
from tests.io.iohelpers import write_ome_tiff

ZOO = {
    "landcover-bgrn": dict(bands=4, band_names=("blue", "green", "red", "nir"), domain="geo",
                           pixel_size_range=(10.0, 60.0), pixel_size_unit="m"),
    "landcover-rgb": dict(bands=3, band_names=("red", "green", "blue"), domain="geo",
                          pixel_size_range=(10.0, 60.0), pixel_size_unit="m"),
    "nuclei": dict(bands=1, band_names=("DAPI",), domain="microscopy",
                   pixel_size_range=(0.1, 2.0), pixel_size_unit="µm"),
}


@pytest.fixture(scope="module")
def zoo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo")
    for name, fields in ZOO.items():
        torch.manual_seed(len(name))
        config = dict(in_channels=fields["bands"], num_classes=2, depth=1, base_width=2,
                      padding="same")
        card = replace(default_card("unet", **config), name=name,
                       description=f"test {name}", **{k: v for k, v in fields.items()
                                                       if k != "bands"})
        save_checkpoint(create_model("unet", **config), folder / f"{name}.pt",
                        architecture="unet", config=config, card=card)
    return folder


@pytest.fixture
def zoo(zoo_folder, monkeypatch):
    monkeypatch.setattr("segpipe.models.bundled.ZOO", zoo_folder)
    return zoo_folder


def landsat(path, bands: int, *, pixel: float = 30.0, crs=UTM_21N, names=None):
    """A uint16 GeoTIFF like a Landsat scene: UTM, ``pixel`` metres, no band names by default."""
    transform = Affine(pixel, 0, 300000.0, 0, -pixel, 5000000.0)
    write_geotiff(path, smooth_image((bands, 40, 40), "uint16"), crs=crs, transform=transform)
    if names:
        with rasterio.open(path, "r+") as ds:
            for i, name in enumerate(names, start=1):
                ds.set_band_description(i, name)
    return path


def plan_for(src, tmp_path, **kw):
    return plan_run(RunOptions.of(str(src), str(tmp_path / "out.tif"), device="cpu", **kw))


def chosen(plan) -> str:
    return plan.options.inference.model.rsplit("/", 1)[-1]


def reason(plan) -> str:
    (line,) = [w for w in plan.warnings if w.startswith("no --model given")]
    return line


def test_a_4_band_landsat_scene_gets_the_4_band_land_cover_model(tmp_path, zoo):
    plan = plan_for(landsat(tmp_path / "l8.tif", 4), tmp_path)
    assert chosen(plan) == "landcover-bgrn.pt"
    assert plan.bands == (0, 1, 2, 3)
    line = reason(plan)
    assert "band order is blue,green,red,nir" in line  # count only: no band names in the file
    assert "pixel size 30 m within 10 m–60 m" in line


def test_a_3_band_landsat_scene_gets_the_visible_land_cover_model(tmp_path, zoo):
    plan = plan_for(landsat(tmp_path / "rgb.tif", 3), tmp_path)
    assert chosen(plan) == "landcover-rgb.pt"


def test_band_names_pick_and_order_the_bands(tmp_path, zoo):
    src = landsat(tmp_path / "named.tif", 5, names=["nir", "swir", "red", "green", "blue"])
    plan = plan_for(src, tmp_path)
    assert chosen(plan) == "landcover-bgrn.pt"
    assert plan.bands == (4, 3, 2, 0)  # blue, green, red, nir, by the names in the file
    assert "bands matched by name: blue,green,red,nir" in reason(plan)


def test_a_fluorescence_ome_tiff_gets_the_nuclei_model_end_to_end(tmp_path, zoo):
    data = smooth_image((1, 48, 40), "uint16", seed=2)[0]
    src = write_ome_tiff(tmp_path / "dapi.ome.tif", data, "YX", pixel_size=(0.5, 0.5),
                         channel_names=["DAPI"])
    out = tmp_path / "dapi.labels.ome.tif"
    plan = plan_run(RunOptions.of(str(src), str(out), device="cpu"))
    assert chosen(plan) == "nuclei.pt"
    line = reason(plan)
    assert "bands matched by name: DAPI" in line and "input without a CRS" in line
    assert "pixel size 0.5 µm within 0.1 µm–2 µm" in line

    summary = run_one(RunOptions.of(str(src), str(out), device="cpu", tile=16))
    digest = hashlib.sha256((zoo / "nuclei.pt").read_bytes()).hexdigest()
    assert summary["model"]["sha256"] == digest
    import tifffile

    assert tifffile.imread(out).shape == data.shape


def test_an_input_without_pixel_size_is_not_refused_for_it(tmp_path, zoo):
    data = smooth_image((1, 32, 32), "uint16")[0]
    src = write_ome_tiff(tmp_path / "nosize.ome.tif", data, "YX", channel_names=["DAPI"])
    plan = plan_for(src, tmp_path)
    assert chosen(plan) == "nuclei.pt"
    assert "pixel size is unknown: the scale could not be checked" in reason(plan)


def test_a_3_band_image_without_crs_never_gets_a_land_cover_model(tmp_path, zoo):
    src = landsat(tmp_path / "photo.tif", 3, crs=None)
    with pytest.raises(InputError) as err:
        plan_for(src, tmp_path)
    assert "landcover-rgb (a georeferenced (geo) model: the input has no CRS)" in str(err.value)


def test_a_scene_at_the_wrong_scale_is_refused(tmp_path, zoo):
    with pytest.raises(InputError, match=r"landcover-bgrn \(made for 10 m–60 m pixels, the "
                                         r"input's are 300 m\)"):
        plan_for(landsat(tmp_path / "coarse.tif", 4, pixel=300.0), tmp_path)


def test_a_7_band_input_is_refused_with_the_list_of_bundled_models(tmp_path, zoo, capsys):
    src = landsat(tmp_path / "seven.tif", 7)
    out = tmp_path / "out.tif"
    code = main(["run", "--input", str(src), "--output", str(out), "--device", "cpu",
                 "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for name in ZOO:
        assert name in lines[0], lines[0]
    assert "7 bands, georeferenced" in lines[0] and "--model PATH" in lines[0]
    assert not out.exists()


def test_an_empty_zoo_says_how_to_pass_a_model(tmp_path, monkeypatch):
    monkeypatch.setattr("segpipe.models.bundled.ZOO", tmp_path / "empty")
    with pytest.raises(InputError, match=r"no bundled models installed.*--model PATH"):
        plan_for(landsat(tmp_path / "l8.tif", 4), tmp_path)


def test_a_zoo_entry_is_a_checkpoint_with_its_card(zoo):
    from segpipe.models.bundled import bundled_models

    models = bundled_models()
    assert [m.name for m in models] == sorted(ZOO)
    for m in models:
        assert m.card.band_names == ZOO[m.name]["band_names"]
        assert m.card.domain == ZOO[m.name]["domain"]
    assert np.all([m.path.parent == zoo for m in models])
