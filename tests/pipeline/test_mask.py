"""``--mask`` and nodata blocks: outside is nodata, inside equals the unmasked run, and blocks
with nothing to segment never reach the model.

Oracles: numpy nearest-neighbour upsampling of the mask raster, shapely point-in-polygon tests
on pixel centres, the unmasked run's labels, and a count of the tiles the model was given.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import Affine

from segpipe.models.foundation import InputError
from segpipe.models.loading import LoadedModel
from segpipe.pipeline.mask import otsu_threshold
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.conftest import UTM_21N, smooth_image, write_geotiff
from tests.pipeline.test_exactness import tiny_unet

H, W, TILE = 192, 160, 32
TRANSFORM = Affine(30.0, 0, 300000.0, 0, -30.0, 5000000.0)


@pytest.fixture
def scene(tmp_path):
    src = write_geotiff(tmp_path / "scene.tif", smooth_image((3, H, W), "uint8", seed=7),
                        transform=TRANSFORM)
    model = tiny_unet(tmp_path / "m.pt", 3, "same")
    return src, model


@pytest.fixture
def tiles_run(monkeypatch):
    """Counts the tiles given to the model (every forward pass goes through predict_tensor)."""
    seen = []
    real = LoadedModel.predict_tensor

    def counting(self, x, **kw):
        seen.append(int(x.shape[0]))
        return real(self, x, **kw)

    monkeypatch.setattr(LoadedModel, "predict_tensor", counting)
    return seen


def run(tmp_path, src, model, name, **kw):
    out = tmp_path / f"{name}.tif"
    summary = run_one(RunOptions.of(str(src), str(out), model=str(model), tile=TILE, halo=20,
                                    block_pixels=TILE, device="cpu", **kw))
    with rasterio.open(out) as ds:
        return ds.read(1), summary


def blocks_meeting(inside: np.ndarray) -> int:
    """How many TILE × TILE blocks have at least one pixel inside."""
    return sum(bool(inside[r : r + TILE, c : c + TILE].any())
               for r in range(0, H, TILE) for c in range(0, W, TILE))


def test_mask_raster_at_another_resolution(tmp_path, scene, tiles_run):
    src, model = scene
    plain, _ = run(tmp_path, src, model, "plain")
    low = np.zeros((H // 4, W // 4), np.uint8)  # a quarter-resolution mask: a rectangle
    low[5:20, 8:30] = 1
    mask_path = write_geotiff(tmp_path / "mask.tif", low[None], crs=UTM_21N,
                              transform=TRANSFORM @ Affine.scale(4))
    tiles_run.clear()
    labels, summary = run(tmp_path, src, model, "masked", mask=str(mask_path))
    inside = np.repeat(np.repeat(low, 4, axis=0), 4, axis=1).astype(bool)  # nearest, by hand
    assert (labels[~inside] == 255).all()
    np.testing.assert_array_equal(labels[inside], plain[inside])
    meeting = blocks_meeting(inside)
    assert summary["blocks_skipped"] == summary["blocks"] - meeting > 0
    assert sum(tiles_run) == meeting  # one tile per block here: skipped ones never ran


def test_mask_polygons_in_the_raster_crs(tmp_path, scene):
    src, model = scene
    plain, _ = run(tmp_path, src, model, "plain")
    x0, y0 = TRANSFORM @ (20, 30)
    x1, y1 = TRANSFORM @ (120, 150)
    poly = shapely.Polygon([(x0, y0), (x1, y0 + 500), (x1 - 300, y1), (x0, y1)])
    gj = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {
        "name": "urn:ogc:def:crs:EPSG::32621"}},
        "features": [{"type": "Feature", "properties": {},
                      "geometry": shapely.geometry.mapping(poly)}]}
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps(gj))
    labels, summary = run(tmp_path, src, model, "aoi", mask=str(path))
    cols, rows = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    xs, ys = TRANSFORM @ (cols, rows)
    inside = shapely.contains_xy(poly, xs, ys)
    edge = shapely.distance(poly.boundary, shapely.points(xs, ys)) < 30  # one pixel of slack
    assert (labels[~inside & ~edge] == 255).all()
    np.testing.assert_array_equal(labels[inside & ~edge], plain[inside & ~edge])
    assert summary["blocks_skipped"] > 0


def test_tissue_mask_skips_the_glass(tmp_path, tiles_run):
    rng = np.random.default_rng(3)
    h, w = 256, 320
    glass = np.full((3, h, w), 236, np.float32) + rng.normal(0, 3, (3, h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    blob = (yy - 90) ** 2 / 60**2 + (xx - 110) ** 2 / 80**2 < 1
    stain = np.array([200, 90, 160], np.float32)[:, None, None] + rng.normal(0, 12, (3, h, w))
    img = np.where(blob, stain, glass).clip(0, 255).astype(np.uint8)
    src = write_geotiff(tmp_path / "slide.tif", img, crs=None, transform=Affine.identity())
    model = tiny_unet(tmp_path / "m.pt", 3, "same")
    plain, _ = run(tmp_path, src, model, "plain")
    tiles_run.clear()
    labels, summary = run(tmp_path, src, model, "tissue", mask="tissue")
    np.testing.assert_array_equal(labels[blob], plain[blob])  # all tissue is segmented
    far = ((yy - 90) ** 2 / 60**2 + (xx - 110) ** 2 / 80**2) > 2.5
    assert (labels[far] == 255).all()  # glass far from the tissue is nodata
    assert summary["blocks_skipped"] >= 40  # of 80 blocks: the glass costs nothing
    assert sum(tiles_run) == summary["blocks"] - summary["blocks_skipped"]


def test_blocks_of_nodata_never_reach_the_model(tmp_path, tiles_run):
    img = smooth_image((1, H, W), "uint16", seed=2)
    img[:, 96:, :] = 0  # the lower half is nodata: its blocks (and their halos) read only 0
    src = write_geotiff(tmp_path / "in_nodata.tif", img, nodata=0)
    model = tiny_unet(tmp_path / "m.pt", 1, "same")
    labels, summary = run(tmp_path, src, model, "nd")
    assert (labels[96:] == 255).all() and (labels[:96] != 255).any()
    # blocks of rows 128..191 read rows ≥ 108 only: all nodata, skipped
    assert summary["blocks_skipped"] == 2 * (W // TILE)
    assert sum(tiles_run) == summary["blocks"] - summary["blocks_skipped"]


def test_mask_errors_name_the_problem(tmp_path, scene):
    src, model = scene
    with pytest.raises(InputError, match=r"--mask .*not found"):
        run(tmp_path, src, model, "x", mask=str(tmp_path / "nope.tif"))
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"not a raster")
    with pytest.raises(InputError, match=r"--mask .*neither a raster"):
        run(tmp_path, src, model, "y", mask=str(bad))


def test_otsu_threshold_separates_two_modes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(20, 3, 5000), rng.normal(80, 5, 2000)])
    t = otsu_threshold(values)
    assert (values[:5000] <= t).mean() > 0.99 and (values[5000:] > t).all()


def test_cli_refuses_a_missing_mask_before_anything_starts(tmp_path, scene):
    from tests.test_cli_contract import assert_rejected, run_segpipe, snapshot

    src, model = scene
    out = tmp_path / "out.tif"
    before = snapshot(tmp_path)
    result = run_segpipe(["run", "--input", src, "--output", out, "--model", model,
                          "--mask", tmp_path / "aoi.gpkg"], tmp_path)
    assert_rejected(result, tmp_path, before, out)
    assert "--mask" in result.stderr
