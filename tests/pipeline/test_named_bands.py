"""``--bands`` by band or channel name: OME channel names and GDAL band descriptions."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import rasterio
import tifffile
import torch

from segpipe.flows.cli import main
from segpipe.models import (
    Normalization,
    NormMethod,
    create_model,
    default_card,
    save_checkpoint,
)
from segpipe.models.foundation import InputError
from segpipe.pipeline.options import RunOptions, SourceOptions
from segpipe.pipeline.plan import plan_run
from tests.conftest import smooth_image, write_geotiff
from tests.io.iohelpers import write_ome_tiff
from tests.pipeline.oracles import (
    assert_labels_match,
    forward_side,
    whole_image_logits,
)
from tests.pipeline.test_exactness import spread_weights

CHANNELS = ["DAPI", "GFP", "RFP"]


def raw_checkpoint(path, channels: int, seed: int = 2):
    """A depth-2 valid U-Net checkpoint whose card asks for raw pixels (and gives the stride)."""
    torch.manual_seed(seed)
    config = dict(in_channels=channels, num_classes=3, depth=2, base_width=4)
    net = create_model("unet", **config).eval()
    spread_weights(net)
    card = replace(default_card("unet", **config), normalization=Normalization(NormMethod.NONE))
    save_checkpoint(net, path, architecture="unet", config=config, card=card)
    return net, path


@pytest.fixture(scope="module")
def one_channel_net(tmp_path_factory):
    return raw_checkpoint(tmp_path_factory.mktemp("net") / "one.pt", 1)


@pytest.fixture
def fluorescence(tmp_path):
    data = np.stack([smooth_image((1, 45, 52), "uint16", seed=s)[0] // 1024 for s in range(3)])
    return write_ome_tiff(tmp_path / "cells.ome.tif", data, "CYX", pixel_size=(0.5, 0.5),
                          channel_names=CHANNELS)


def test_a_channel_name_selects_that_channel(tmp_path, one_channel_net, fluorescence, capsys):
    net, model = one_channel_net
    out = tmp_path / "gfp.ome.tif"
    code = main(["run", "--input", str(fluorescence), "--output", str(out), "--model", str(model),
                 "--bands", "gfp", "--tile", "16", "--device", "cpu", "--workers", "0",
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    labels = tifffile.imread(out)
    with tifffile.TiffFile(fluorescence) as tif:
        gfp = tif.asarray()[CHANNELS.index("GFP")]  # the channel named GFP, read back
    margin = (68 - forward_side(net, 1, 68)) // 2
    assert_labels_match(labels, whole_image_logits(net, gfp[None].astype(np.float32), margin, 4))
    assert len(np.unique(labels)) > 1


def test_band_descriptions_and_numbers_mix(tmp_path):
    src = write_geotiff(tmp_path / "s2.tif", smooth_image((4, 24, 24), "uint16"))
    with rasterio.open(src, "r+") as ds:
        for i, name in enumerate(["nir", "red", "green", "blue"], start=1):
            ds.set_band_description(i, name)
    _, model = raw_checkpoint(tmp_path / "three.pt", 3)
    for bands, expected in [(("Red", "green", "BLUE"), (1, 2, 3)), ((1, "blue", 2), (0, 3, 1))]:
        plan = plan_run(RunOptions.of(str(src), str(tmp_path / "o.tif"), model=str(model),
                                      bands=bands, device="cpu"))
        assert plan.bands == expected


def test_an_unknown_name_lists_the_names(tmp_path, one_channel_net, fluorescence, capsys):
    _, model = one_channel_net
    out = tmp_path / "x.ome.tif"
    code = main(["run", "--input", str(fluorescence), "--output", str(out), "--model", str(model),
                 "--bands", "Cy5", "--device", "cpu", "--workers", "0", "--quiet"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: --bands Cy5") and "DAPI, GFP, RFP" in lines[0]
    assert not out.exists()


def test_band_options_are_checked():
    assert SourceOptions(bands=(1, "red")).bands == (1, "red")
    for bad in [(0,), ("",), (True,), ()]:
        with pytest.raises(InputError, match="--bands"):
            SourceOptions(bands=bad)
