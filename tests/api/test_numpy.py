"""segpipe.segment on NumPy arrays: the CLI's labels, the whole-image oracle's labels."""

from __future__ import annotations

import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
import torch

import segpipe
from segpipe.models import create_model, default_card, save_checkpoint
from segpipe.models.foundation import InputError
from tests.api.helpers import cli_labels, read_image, summary_normalizer
from tests.conftest import write_geotiff
from tests.pipeline.oracles import assert_labels_match, whole_image_logits
from tests.pipeline.test_exactness import oracle_labels, spread_weights, tiny_unet


@pytest.mark.parametrize(
    ("shape", "dtype", "tile", "padding", "halo"),
    [
        ((3, 75, 101), "uint8", 32, "valid", None),  # ragged last row and column of tiles
        ((1, 70, 45), "uint16", 16, "same", 44),     # 1 band, a halo above the margin
    ],
)
def test_numpy_labels_equal_the_cli_run(tmp_path, geotiff, shape, dtype, tile, padding, halo):
    src = geotiff(shape, dtype, seed=sum(shape))
    model = tiny_unet(tmp_path / "unet.pt", shape[0], padding)
    options = dict(tile=tile, halo=halo, normalize="meanstd", block_pixels=2 * tile)
    expected, summary = cli_labels(src, model, tmp_path / "cli.tif", **options)
    image = read_image(src)

    labels = segpipe.segment(image, str(model), device="cpu", **options)

    assert isinstance(labels, np.ndarray) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected)
    _, logits, _ = oracle_labels(model, image, summary["halo"], summary_normalizer(summary))
    assert_labels_match(labels, logits)
    assert len(np.unique(labels)) > 1  # a non-trivial segmentation


def test_two_dimensional_array_is_one_band(tmp_path, geotiff):
    src = geotiff((1, 40, 52), "uint8", seed=4)
    model = tiny_unet(tmp_path / "unet.pt", 1, "valid")
    image = read_image(src)
    both = [segpipe.segment(a, str(model), tile=16, normalize="meanstd", device="cpu")
            for a in (image, image[0])]
    np.testing.assert_array_equal(both[0], both[1])
    assert both[1].shape == image.shape[1:]


def test_module_and_its_saved_file_give_identical_labels(tmp_path, geotiff):
    config = dict(in_channels=3, num_classes=3, depth=2, base_width=4, padding="valid")
    net = create_model("unet", **config)
    spread_weights(net)
    card = default_card("unet", **config)
    path = tmp_path / "net.pt"
    save_checkpoint(net, path, architecture="unet", config=config, card=card)
    image = read_image(geotiff((3, 64, 80), "uint8", seed=9))
    options = dict(tile=32, normalize="meanstd", device="cpu", block_pixels=32)

    from_module = segpipe.segment(image, net, card=card, **options)
    from_file = segpipe.segment(image, str(path), **options)

    np.testing.assert_array_equal(from_module, from_file)
    assert len(np.unique(from_file)) > 1


def test_any_module_is_segmented_as_its_whole_image_forward_pass(geotiff):
    torch.manual_seed(1)
    net = torch.nn.Sequential(  # no card, not a built-in network: saved as a program
        torch.nn.Conv2d(2, 6, 3), torch.nn.ReLU(), torch.nn.Conv2d(6, 6, 3), torch.nn.ReLU(),
        torch.nn.Conv2d(6, 3, 1),
    )
    image = read_image(geotiff((2, 45, 58), "float32", seed=6))

    labels = segpipe.segment(image, net, tile=16, device="cpu", block_pixels=32)

    logits = whole_image_logits(net.eval(), image, margin=2, period=1)  # raw float32 pixels
    assert_labels_match(labels, logits)
    assert len(np.unique(labels)) > 1


def test_constant_band_under_meanstd_is_refused_as_by_the_cli(tmp_path, geotiff):
    image = read_image(geotiff((2, 40, 40), "uint8", seed=8))
    image[1] = 7
    model = tiny_unet(tmp_path / "unet.pt", 2, "valid")
    src = write_geotiff(tmp_path / "constant.tif", image)
    with pytest.raises(InputError, match=r"band 2 .*is constant") as cli:
        cli_labels(src, model, tmp_path / "cli.tif", normalize="meanstd")
    with pytest.raises(InputError, match="band 2 of the array is constant"):
        segpipe.segment(image, str(model), normalize="meanstd", device="cpu")
    assert "every valid pixel is 7" in str(cli.value)
    lazy = segpipe.segment(da.from_array(image, chunks=(2, 20, 20)), str(model),
                           normalize="meanstd", device="cpu")  # the statistics are a task
    with pytest.raises(InputError, match="band 2 of the array is constant"):
        lazy.compute(scheduler="sync")


def test_bare_array_without_model_is_refused():
    with pytest.raises(InputError, match="model="):
        segpipe.segment(np.zeros((3, 8, 8), np.uint8))


def test_bad_option_is_refused_as_on_the_command_line(tmp_path):
    with pytest.raises(InputError, match="--blend"):
        segpipe.segment(np.zeros((1, 8, 8), np.uint8), str(tmp_path / "m.pt"), blend="soft")


def test_import_segpipe_loads_neither_torch_nor_prefect(tmp_path):
    code = ("import sys, segpipe; segpipe.RunOptions; "
            "print(sorted(m for m in ('torch', 'prefect') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
