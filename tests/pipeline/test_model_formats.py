"""One model, four file formats: ``segpipe run`` gives the same labels and reads each card."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from segpipe.flows.cli import main
from segpipe.models import (
    ClassInfo,
    create_model,
    default_card,
    export_onnx,
    export_program,
    export_torchscript,
    save_checkpoint,
)
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.test_exactness import spread_weights

CLASSES = (ClassInfo("water", (0, 0, 255)), ClassInfo("forest", (0, 128, 0)),
           ClassInfo("urban", (200, 0, 0)))


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    torch.manual_seed(1)
    config = dict(in_channels=3, num_classes=3, depth=2, base_width=4, padding="valid")
    net = create_model("unet", **config).eval()
    spread_weights(net)
    from dataclasses import replace

    card = replace(default_card("unet", **config), name="landcover-test", classes=CLASSES)
    return net, config, card


def write_format(fmt: str, net, config, card, folder):
    if fmt == "checkpoint":
        path = folder / "m.pt"
        save_checkpoint(net, path, architecture="unet", config=config, card=card)
    elif fmt == "exported":
        path = folder / "m.pt2"
        export_program(net, path, card=card, in_channels=3)
    elif fmt == "torchscript":
        path = folder / "m.ts"
        export_torchscript(net, path, card=card)
    else:
        path = folder / "m.onnx"
        export_onnx(net, path, card=card, in_channels=3)
    return path


@pytest.mark.parametrize("fmt", ["checkpoint", "exported", "torchscript", "onnx"])
def test_every_format_gives_the_eager_labels(tmp_path, eager, fmt):
    net, config, card = eager
    image = smooth_image((3, 83, 77), "uint8", seed=4)
    src = write_geotiff(tmp_path / "in.tif", image)
    model_path = write_format(fmt, net, config, card, tmp_path)
    out = tmp_path / "out.tif"
    code = main(["run", "--input", str(src), "--output", str(out), "--model", str(model_path),
                 "--tile", "32", "--device", "cpu", "--quiet"])
    assert code == 0
    with rasterio.open(out) as ds:
        labels = ds.read(1)
        assert ds.tags(1)["CLASS_0"] == "water"  # the card travelled with the file
        assert ds.colormap(1)[2][:3] == (200, 0, 0)
    # the oracle: the eager net on the whole mirror-extended image (card: scale by 1/255)
    from segpipe.models import probe_geometry

    g = probe_geometry(net, 3, stride=4)
    x = image.astype(np.float32) * np.float32(1 / 255)
    bottom, right = g.fit(83 + 2 * g.margin) - 83, g.fit(77 + 2 * g.margin) - 77
    ext = np.pad(x, ((0, 0), (g.margin, bottom - g.margin), (g.margin, right - g.margin)),
                 mode="symmetric")
    with torch.inference_mode():
        expected = net(torch.from_numpy(ext[None]))[0, :, :83, :77].argmax(0).numpy()
    agree = (labels == expected).mean()
    if fmt == "onnx":  # a different runtime: kernels may round differently in the last bit
        assert agree > 0.999
    else:
        assert agree == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["fcn_resnet50", "lraspp_mobilenet_v3_large"])
def test_torchvision_models_run_and_their_stride_is_enforced(tmp_path, arch, capsys):
    torch.manual_seed(0)
    config = dict(in_channels=3, num_classes=4)
    net = create_model(arch, **config)
    path = tmp_path / f"{arch}.pt"
    save_checkpoint(net, path, architecture=arch, config=config, card=default_card(arch, **config))
    src = write_geotiff(tmp_path / "in.tif", smooth_image((3, 70, 90), "uint8"))
    stride = net.stride
    out = tmp_path / "out.tif"
    bad = main(["run", "--input", str(src), "--output", str(out), "--model", str(path),
                "--tile", str(stride * 4 + 2), "--device", "cpu", "--quiet"])
    assert bad == 2 and f"stride {stride}" in capsys.readouterr().err
    assert not out.exists()
    code = main(["run", "--input", str(src), "--output", str(out), "--model", str(path),
                 "--tile", str(stride * 4), "--halo", str(stride * 2), "--device", "cpu",
                 "--quiet"])
    assert code == 0
    with rasterio.open(out) as ds:
        labels = ds.read(1)
    assert labels.shape == (70, 90) and labels.max() < 4
