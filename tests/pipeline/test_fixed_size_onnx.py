"""An ONNX graph whose input is fixed (N = 1, H = W = 68) runs at that size, or is refused.

The file is written by segpipe's dynamic exporter and then fixed with the ``onnx`` library, as a
user's static export would be. segpipe chooses the tile so that tile + 2·halo fits 68 and says
so; the labels are compared with the eager network on the whole mirror-extended image.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
import rasterio
import torch

from segpipe.flows.cli import main
from segpipe.models import (
    Normalization,
    NormMethod,
    create_model,
    default_card,
    export_onnx,
)
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.plan import plan_run
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.oracles import forward_side, whole_image_labels
from tests.pipeline.test_exactness import spread_weights

FIXED = 68  # a side the depth-2 valid U-Net takes (68 → 28)
CONFIG = dict(in_channels=3, num_classes=3, depth=2, base_width=4, padding="valid")


@pytest.fixture(scope="module")
def fixed_onnx(tmp_path_factory):
    torch.manual_seed(5)
    net = create_model("unet", **CONFIG).eval()
    spread_weights(net)
    card = replace(default_card("unet", **CONFIG), normalization=Normalization(NormMethod.NONE))
    folder = tmp_path_factory.mktemp("onnx")
    export_onnx(net, folder / "dynamic.onnx", card=card, in_channels=3)
    graph = onnx.load(folder / "dynamic.onnx")
    for dim, size in zip(graph.graph.input[0].type.tensor_type.shape.dim, (1, 3, FIXED, FIXED)):
        dim.Clear()
        dim.dim_value = size
    onnx.save(graph, folder / "fixed.onnx")
    reread = onnx.load(folder / "fixed.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in reread] == [1, 3, FIXED, FIXED]
    return net, folder / "fixed.onnx"


def test_fixed_size_onnx_runs_at_its_size(tmp_path, fixed_onnx, capsys):
    net, path = fixed_onnx
    image = smooth_image((3, 61, 75), "float32", seed=8)
    src = write_geotiff(tmp_path / "in.tif", image)
    out = tmp_path / "out.tif"
    plan = plan_run(RunOptions.of(str(src), str(out), model=str(path), device="cpu"))
    told = [w for w in plan.warnings if "68×68" in w]  # logged as a warning by the plan stage
    assert told and "tiles of 28 px with a halo of 20 px" in told[0], plan.warnings
    code = main(["run", "--input", str(src), "--output", str(out), "--model", str(path),
                 "--device", "cpu", "--workers", "0", "--quiet"])
    assert code == 0, capsys.readouterr().err

    side = forward_side(net, 3, FIXED)
    margin = (FIXED - side) // 2
    with rasterio.open(out) as ds:
        labels = ds.read(1)
        assert ds.tags()["SEGPIPE_TILE"] == str(FIXED - 2 * margin)
    with rasterio.open(src) as ds:
        pixels = ds.read().astype(np.float32)
    expected = whole_image_labels(net, pixels, margin, 4)
    # onnxruntime's kernels may round differently from torch's in the last bit
    assert (labels == expected).mean() > 0.999
    assert len(np.unique(labels)) > 1


def test_a_tile_that_does_not_fit_the_fixed_size_is_refused(tmp_path, fixed_onnx, capsys):
    _, path = fixed_onnx
    src = write_geotiff(tmp_path / "in.tif", smooth_image((3, 40, 40), "float32"))
    out = tmp_path / "out.tif"
    code = main(["run", "--input", str(src), "--output", str(out), "--model", str(path),
                 "--tile", "64", "--device", "cpu", "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: --tile 64") and "68×68" in lines[0], err
    assert "--tile 28" in lines[0], err
    assert not out.exists()
    assert not list(tmp_path.glob(".*segpipe*"))
