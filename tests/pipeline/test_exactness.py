"""The overlap-tile contract: tiled labels equal one forward pass on the whole image.

The oracle pads the whole image with numpy's symmetric mode (halo on top/left, enough on the
bottom/right for a size the network accepts), runs the model once, and crops back: no tiling
code is involved. ``segpipe run`` must reproduce its labels on every CPU (the contract in
``oracles``: ties within ``LOGIT_ULPS`` float32 ulp aside, since a tile and the whole image may
run different kernels), on sizes that are not multiples of the tile, smaller than one tile, 1 and
3 bands, uint8/uint16/float32.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from segpipe.models import (
    NormMethod,
    create_model,
    default_card,
    load_model,
    probe_geometry,
    save_checkpoint,
)
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from segpipe.pipeline.stitch import Blend
from tests.pipeline.oracles import assert_labels_match, labels_of


def tiny_unet(path, channels: int, padding: str, classes: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    config = dict(in_channels=channels, num_classes=classes, depth=2, base_width=4,
                  padding=padding)
    net = create_model("unet", **config)
    spread_weights(net)
    card = default_card("unet", **config)
    save_checkpoint(net, path, architecture="unet", config=config, card=card)
    return path


def spread_weights(net: torch.nn.Module) -> None:
    """Re-initialise so an untrained net gives varied labels (default init is near-constant)."""
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.4 if p.ndim > 1 else 0.1)


def oracle_labels(model_path, image: np.ndarray, halo: int, normalizer, nodata=None):
    """One forward pass on the whole mirror-extended image, cropped back to the image.

    Returns the labels, the logits K×H×W they come from (for the tie-aware comparison of
    ``oracles.assert_labels_match``) and the probed geometry.
    """
    model = load_model(model_path)
    c, h, w = image.shape
    g = probe_geometry(model, c, stride=model.card.stride if model.card else None)
    x, _ = normalizer.apply(image, nodata)
    bottom = g.fit(h + 2 * halo) - h - halo
    right = g.fit(w + 2 * halo) - w - halo
    ext = np.pad(x, ((0, 0), (halo, bottom), (halo, right)), mode="symmetric")
    with torch.inference_mode():
        logits = model(torch.from_numpy(ext[None]))[0]
    top = halo - g.margin
    cropped = logits[:, top : top + h, top : top + w].numpy()
    return labels_of(cropped), cropped, g


def run_and_read(tmp_path, src, model, **kw):
    out = tmp_path / f"out_{src.stem}.tif"
    kw.setdefault("normalize", NormMethod.MEANSTD)
    summary = run_one(RunOptions.of(input=str(src), output=str(out), model=str(model),
                                   device="cpu", **kw))
    with rasterio.open(out) as ds:
        return ds.read(1), summary


@pytest.mark.parametrize(
    ("shape", "dtype", "tile"),
    [
        ((3, 75, 101), "uint8", 32),   # 3x4 tiles, ragged last row and column
        ((1, 70, 45), "uint16", 16),   # many tiles, 1 band
        ((3, 20, 13), "float32", 32),  # smaller than one tile
        ((1, 130, 67), "uint8", 24),   # blocks of several tiles, ragged
    ],
)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_tiled_equals_whole_image(tmp_path, geotiff, shape, dtype, tile, padding):
    src = geotiff(shape, dtype, seed=sum(shape))
    model = tiny_unet(tmp_path / "unet.pt", shape[0], padding)
    # valid: the margin is probed (no halo given); same: halo >= receptive-field radius
    halo = None if padding == "valid" else 44
    labels, summary = run_and_read(tmp_path, src, model, tile=tile, halo=halo)
    from segpipe.pipeline.normalize import Normalizer

    normalizer = Normalizer.from_dict(summary["normalizer"])
    with rasterio.open(src) as ds:
        image = ds.read()
    _, logits, g = oracle_labels(model, image, summary["halo"], normalizer)
    if padding == "valid":
        assert g.margin > 0 and summary["halo"] == g.margin == summary["margin"]
    assert labels.shape == image.shape[1:]
    assert_labels_match(labels, logits)
    assert len(np.unique(labels)) > 1  # a non-trivial segmentation


def wide_rf_model(path, channels: int = 1):
    """A same-padding net whose receptive field (radius ~26) is far larger than an 8 px halo."""
    torch.manual_seed(3)
    config = dict(in_channels=channels, num_classes=3, depth=2, base_width=4, padding="same")
    net = create_model("unet", **config)
    spread_weights(net)
    save_checkpoint(net, path, architecture="unet", config=config,
                    card=default_card("unet", **config))
    return path


def test_gaussian_blend_lowers_disagreement_with_whole_image(tmp_path, geotiff):
    src = geotiff((1, 128, 128), "uint8", seed=5)
    model = wide_rf_model(tmp_path / "wide.pt")
    disagreement = {}
    for blend in Blend:
        labels, summary = run_and_read(tmp_path, src, model, tile=16, halo=8, blend=blend,
                                       overwrite=True)
        from segpipe.pipeline.normalize import Normalizer

        with rasterio.open(src) as ds:
            image = ds.read()
        expected, _, _ = oracle_labels(model, image, 8,
                                       Normalizer.from_dict(summary["normalizer"]))
        disagreement[blend] = float((labels != expected).mean())
    assert disagreement[Blend.CROP] > 0  # the halo really is too small
    # measured here: crop 12.8 % of pixels differ, gaussian 11.2 % (seeded, deterministic)
    assert disagreement[Blend.GAUSSIAN] < 0.95 * disagreement[Blend.CROP], disagreement
