"""STAC items as input: per-band COGs of different resolutions stacked by band common name.

The oracle is the same bands stacked by hand with rasterio (``read(out_shape=...,
resampling=...)`` per band onto the 10 m grid, or :func:`rasterio.warp.reproject` onto the
20 m grid of bands asked without the 10 m ones), written as a GeoTIFF and segmented like any
raster; the item's run must give the same labels. The assets live on a moto S3 server,
addressed from an item in the bucket (relative hrefs) and from a local item (``s3://`` hrefs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.warp import reproject

from segpipe.models.foundation import InputError, ResumeError
from segpipe.pipeline.io.base import open_raster
from segpipe.pipeline.io.readeroptions import ReaderOptions
from segpipe.pipeline.io.stac import StacReader, is_stac_item
from segpipe.pipeline.keys import InputIdentity
from segpipe.pipeline.outputs import sidecar_path
from segpipe.pipeline.tiling import Window
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.test_exactness import tiny_unet
from tests.storage.conftest import (  # noqa: F401  (prefect_api, s3, s3_env: fixtures)
    CountingProxy,
    prefect_api,
    s3,
    s3_env,
    segpipe,
)

ARGS = ("--tile", "32", "--device", "cpu", "--workers", "0", "--quiet")
ORIGIN = (300000.0, 5000000.0)
#: asset key → (common name, pixel size in m, side in px, seed)
BANDS = {
    "B02": ("blue", 10.0, 256, 1),
    "B03": ("green", 10.0, 256, 2),
    "B04": ("red", 10.0, 256, 3),
    "B8A": ("nir", 20.0, 128, 4),
    "B12": ("swir22", 20.0, 128, 5),
    "B01": ("coastal", 40.0, 64, 6),
}
CHOSEN = ("nir", "green", "blue")  # not the item's order, and red left out
#: 20 m and 40 m bands only: their stack lies on the 20 m grid, not on the item's 10 m one
COARSE = ("swir22", "coastal", "nir")
GRID_20M = Affine(20.0, 0, ORIGIN[0], 0, -20.0, ORIGIN[1])


def write_band_cog(folder: Path, key: str, scale: int = 1) -> Path:
    """One band as a COG (128 px tiles) on its own grid (``scale`` times the side); all grids
    share the origin."""
    _, res, side, seed = BANDS[key]
    staging = write_geotiff(folder / f"{key}.staging.tif",
                            smooth_image((1, side * scale, side * scale), "uint16", seed=seed),
                            transform=Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1]))
    path = folder / f"{key}.tif"
    rasterio.shutil.copy(staging, path, driver="COG", BLOCKSIZE="128", COMPRESS="DEFLATE")
    staging.unlink()
    return path


def item_json(hrefs: dict[str, str], *, stac_1_1: bool = False) -> dict:
    """A STAC item whose assets are the bands at ``hrefs`` (plus a thumbnail to be ignored)."""
    assets: dict[str, dict] = {}
    for key, href in hrefs.items():
        common = BANDS[key][0]
        bands = ({"bands": [{"name": key, "eo:common_name": common}]} if stac_1_1 else
                 {"eo:bands": [{"name": key, "common_name": common}]})
        assets[key] = {"href": href, "type": "image/tiff; application=geotiff; "
                       "profile=cloud-optimized", "roles": ["data"], **bands}
    assets["thumbnail"] = {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"],
                           "eo:bands": [{"name": "B04", "common_name": "red"}]}
    return {"type": "Feature", "stac_version": "1.1.0" if stac_1_1 else "1.0.0", "id": "scene",
            "geometry": None, "properties": {"datetime": "2024-06-01T10:00:00Z"},
            "links": [], "assets": assets}


def stacked_by_hand(folder: Path, names: tuple[str, ...], resampling: Resampling) -> np.ndarray:
    """The oracle: each named band read onto the 256 px (10 m) grid by rasterio alone."""
    keys = {common: key for key, (common, *_) in BANDS.items()}
    out = []
    for name in names:
        with rasterio.open(folder / f"{keys[name]}.tif") as ds:
            out.append(ds.read(1, out_shape=(256, 256), resampling=resampling))
    return np.stack(out)


def warped_by_hand(folder: Path, names: tuple[str, ...], resampling: Resampling) -> np.ndarray:
    """The oracle on the 20 m grid: each named band reprojected onto it by rasterio alone."""
    keys = {common: key for key, (common, *_) in BANDS.items()}
    out = np.zeros((len(names), 128, 128), "uint16")
    for band, name in zip(out, names, strict=True):
        with rasterio.open(folder / f"{keys[name]}.tif") as ds:
            reproject(rasterio.band(ds, 1), band, dst_transform=GRID_20M, dst_crs=ds.crs,
                      resampling=resampling)
    return out


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """The four band COGs and a local item with relative hrefs to them."""
    folder = tmp_path_factory.mktemp("stac-scene")
    for key in BANDS:
        write_band_cog(folder, key)
    (folder / "item.json").write_text(json.dumps(item_json({k: f"./{k}.tif" for k in BANDS})))
    return folder


@pytest.fixture(scope="module")
def bucket_scene(s3, scene, tmp_path_factory):  # noqa: F811
    """The COGs in the bucket ``stac`` with an item there (relative hrefs), and a local item
    naming them by ``s3://`` URL."""
    s3.bucket("stac")
    fs = s3.fs()
    for key in BANDS:
        fs.put_file(str(scene / f"{key}.tif"), f"stac/scene/{key}.tif")
    fs.put_file(str(scene / "item.json"), "stac/scene/item.json")
    local = tmp_path_factory.mktemp("stac-local") / "item.json"
    local.write_text(json.dumps(item_json({k: f"s3://stac/scene/{k}.tif" for k in BANDS})))
    model = tiny_unet(tmp_path_factory.mktemp("stac-model") / "unet.pt", 3, "valid")
    return {"item_url": "s3://stac/scene/item.json", "local_item": local, "model": model}


def _labels(path: Path) -> tuple[np.ndarray, object, Affine]:
    with rasterio.open(path) as ds:
        return ds.read(1), ds.crs, ds.transform


# ------------------------------------------------------------------ the reader, local files


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_the_bands_are_stacked_by_common_name_on_the_finest_grid(scene, resampling):
    with StacReader(str(scene / "item.json"),
                    options=ReaderOptions.of(CHOSEN, resampling)) as reader:
        info = reader.info
        whole = reader.read(info.window)
        window = reader.read(Window(37, 50, 100, 90))
    expected = stacked_by_hand(scene, CHOSEN, Resampling[resampling])
    np.testing.assert_array_equal(whole, expected)
    np.testing.assert_array_equal(window, expected[:, 37:137, 50:140])
    assert info.channel_names == CHOSEN and info.shape == (256, 256)
    assert info.path == str(scene / "item.json") and info.format == "stac"
    with rasterio.open(scene / "B02.tif") as ds:  # the 10 m asset's grid and CRS
        assert info.transform == tuple(ds.transform)[:6]
        assert rasterio.crs.CRS.from_wkt(info.crs_wkt) == ds.crs


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_the_grid_is_the_finest_of_the_asked_bands_not_of_the_item(scene, resampling):
    options = ReaderOptions.of(COARSE, resampling)
    with open_raster(scene / "item.json", options=options) as reader:
        info = reader.info
        whole = reader.read(info.window)
        window = reader.read(Window(21, 37, 60, 50))
    expected = warped_by_hand(scene, COARSE, Resampling[resampling])
    assert info.shape == (128, 128) and info.channel_names == COARSE
    assert info.transform == tuple(GRID_20M)[:6]
    np.testing.assert_array_equal(whole, expected)
    np.testing.assert_array_equal(window, expected[:, 21:81, 37:87])


def test_by_default_every_band_is_stacked_in_wavelength_order(scene, tmp_path):
    # STAC 1.1 ``bands`` with ``eo:common_name``, assets listed out of order, a JPEG 2000 copy
    item = item_json({k: str(scene / f"{k}.tif") for k in ("B8A", "B04", "B02", "B03")},
                     stac_1_1=True)
    item["assets"]["B02-jp2"] = {**item["assets"]["B02"], "href": "B02.jp2",
                                 "type": "image/jp2"}
    (tmp_path / "item.json").write_text(json.dumps(item))
    with open_raster(tmp_path / "item.json") as reader:
        assert reader.info.channel_names == ("blue", "green", "red", "nir")
        pixels = reader.read(reader.info.window)
    np.testing.assert_array_equal(
        pixels, stacked_by_hand(scene, ("blue", "green", "red", "nir"), Resampling.nearest))


def test_only_stac_items_are_taken_for_one(scene, tmp_path):
    assert is_stac_item(str(scene / "item.json"))
    (tmp_path / "features.json").write_text(json.dumps({"type": "FeatureCollection",
                                                        "features": []}))
    (tmp_path / "plain.json").write_text(json.dumps({"type": "Feature", "properties": {}}))
    (tmp_path / "broken.json").write_text("{not json")
    for name in ("features.json", "plain.json", "broken.json"):
        assert not is_stac_item(str(tmp_path / name)), name
    assert not is_stac_item(str(scene / "B02.tif"))


def test_a_missing_band_is_named_with_those_available(scene):
    with pytest.raises(InputError) as caught:
        StacReader(str(scene / "item.json"),
                   options=ReaderOptions(bands=("blue", "swir16", "rededge")))
    message = str(caught.value)
    assert "\n" not in message
    assert "swir16, rededge" in message
    assert "coastal, blue, green, red, nir, swir22" in message


def test_the_input_identity_changes_with_an_asset_not_only_with_the_item(scene, tmp_path):
    for key in BANDS:
        (tmp_path / f"{key}.tif").write_bytes((scene / f"{key}.tif").read_bytes())
    item = tmp_path / "item.json"
    item.write_bytes((scene / "item.json").read_bytes())
    item_sha = hashlib.sha256(item.read_bytes()).hexdigest()
    before = InputIdentity.of(item)
    assert InputIdentity.of(item) == before  # stable while nothing changes
    write_geotiff(tmp_path / "B8A.tif", smooth_image((1, 128, 128), "uint16", seed=99),
                  transform=Affine(20.0, 0, ORIGIN[0], 0, -20.0, ORIGIN[1]))
    after = InputIdentity.of(item)
    assert hashlib.sha256(item.read_bytes()).hexdigest() == item_sha  # the item is untouched
    assert after != before and after.differences(before)


# ------------------------------------------------------------------ the command, on a bucket


@pytest.fixture(scope="module")
def oracle_labels(bucket_scene, scene, s3, prefect_api, tmp_path_factory):  # noqa: F811
    """Labels of ``segpipe run`` on the chosen bands stacked by hand into a GeoTIFF."""
    home = tmp_path_factory.mktemp("stac-oracle")
    stacked = write_geotiff(home / "stacked.tif",
                            stacked_by_hand(scene, CHOSEN, Resampling.nearest),
                            transform=Affine(10.0, 0, ORIGIN[0], 0, -10.0, ORIGIN[1]))
    env = {**s3.env(home), "PREFECT_API_URL": prefect_api}
    done = segpipe(["run", "--input", stacked, "--output", home / "oracle.tif", "--model",
                    bucket_scene["model"], *ARGS], env, home)
    assert done.returncode == 0, done.stderr
    return _labels(home / "oracle.tif")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["item_url", "local_item"])
def test_a_stac_item_gives_the_labels_of_its_bands_stacked_by_hand(
    bucket_scene, oracle_labels, s3, prefect_api, tmp_path, where  # noqa: F811
):
    env = {**s3.env(tmp_path / "home"), "PREFECT_API_URL": prefect_api}
    out = tmp_path / "labels.tif"
    done = segpipe(["run", "--input", bucket_scene[where], "--bands", ",".join(CHOSEN),
                    "--output", out, "--model", bucket_scene["model"], *ARGS], env, tmp_path)
    assert done.returncode == 0, done.stderr
    labels, crs, transform = _labels(out)
    expected, expected_crs, expected_transform = oracle_labels
    assert len(np.unique(expected)) > 1  # labels that tell band stacks apart
    np.testing.assert_array_equal(labels, expected)
    assert crs == expected_crs and transform == expected_transform


def test_an_item_without_the_asked_bands_is_refused_in_one_line(
    bucket_scene, s3, tmp_path  # noqa: F811
):
    env = s3.env(tmp_path / "home")
    out = tmp_path / "labels.tif"
    done = segpipe(["run", "--input", bucket_scene["item_url"], "--bands", "blue,swir16,red",
                    "--output", out, "--model", bucket_scene["model"], *ARGS], env, tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    assert "swir16" in lines[0] and "blue, green, red, nir" in lines[0], lines[0]
    assert not out.exists()


def test_a_window_of_an_item_in_a_bucket_costs_a_small_part_of_its_assets(
    s3, s3_env, tmp_path, monkeypatch  # noqa: F811
):
    for key in BANDS:  # 2048 px at 10 m, 1024 px at 20 m
        write_band_cog(tmp_path, key, scale=8)
    (tmp_path / "item.json").write_text(json.dumps(item_json({k: f"{k}.tif" for k in BANDS})))
    s3.bucket("stac-ranges")
    fs = s3.fs()
    for name in [*(f"{k}.tif" for k in BANDS), "item.json"]:
        fs.put_file(str(tmp_path / name), f"stac-ranges/big/{name}")
    total = sum((tmp_path / f"{k}.tif").stat().st_size for k in BANDS)
    proxy = CountingProxy(s3.endpoint)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)  # GDAL and s3fs go through it
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        options = ReaderOptions(bands=CHOSEN)
        with StacReader("s3://stac-ranges/big/item.json", options=options) as reader:
            assert reader.info.shape == (2048, 2048)
            pixels = reader.read(Window(1000, 1200, 64, 64))
        fetched = proxy.reset()
    finally:
        proxy.close()
    keys = {common: key for key, (common, *_) in BANDS.items()}
    for band, name in zip(pixels, CHOSEN, strict=True):  # the oracle: rasterio on local copies
        with rasterio.open(tmp_path / f"{keys[name]}.tif") as ds:
            whole = ds.read(1, out_shape=(2048, 2048), resampling=Resampling.nearest)
        np.testing.assert_array_equal(band, whole[1000:1064, 1200:1264])
    assert fetched > 0, "the reads did not go through the counting proxy"
    assert fetched < 0.1 * total, (fetched, total)  # headers and a tile or two of each asset


# ------------------------------------------------------------------ --resampling, in runs


def _run(source: object, output: Path, model: Path, **options: object):
    """``segpipe.run`` in this process: the run's stages, its work directory and its summary."""
    from segpipe.pipeline.options import RunOptions
    from segpipe.pipeline.stages import run_one

    return run_one(RunOptions.of(str(source), str(output), model=str(model), tile=32,
                                 device="cpu", **options))


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_a_run_on_coarse_bands_equals_them_reprojected_by_hand(
    bucket_scene, scene, s3_env, tmp_path, resampling  # noqa: F811
):
    stack = warped_by_hand(scene, COARSE, Resampling[resampling])
    other = {"nearest": Resampling.bilinear, "bilinear": Resampling.nearest}[resampling]
    assert (stack != warped_by_hand(scene, COARSE, other)).any()  # the choice shows in pixels
    stacked = write_geotiff(tmp_path / "stacked.tif", stack, transform=GRID_20M)
    _run(stacked, tmp_path / "oracle.tif", bucket_scene["model"])
    _run(bucket_scene["item_url"], tmp_path / "labels.tif", bucket_scene["model"],
         bands=COARSE, resampling=resampling)
    labels, crs, transform = _labels(tmp_path / "labels.tif")
    expected, expected_crs, expected_transform = _labels(tmp_path / "oracle.tif")
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(labels, expected)
    assert crs == expected_crs and transform == expected_transform == GRID_20M


def test_a_resume_with_another_resampling_is_refused(scene, bucket_scene, tmp_path):
    item, out, work = scene / "item.json", tmp_path / "labels.tif", tmp_path / "work"
    _run(item, out, bucket_scene["model"], bands=COARSE, resampling="bilinear",
         workdir=str(work), keep_workdir=True)
    out.unlink()  # the work directory holds every block, as a run killed before its export
    sidecar_path(out).unlink()
    with pytest.raises(ResumeError) as caught:
        _run(item, out, bucket_scene["model"], bands=COARSE, resampling="nearest",
             workdir=str(work), resume=True)
    assert "--resampling bilinear → nearest" in str(caught.value)
    assert not out.exists()
    _run(item, out, bucket_scene["model"], bands=COARSE, resampling="bilinear",
         workdir=str(work), resume=True)  # the same resampling: resumed, the output written
    assert out.exists()


def test_feed_tasks_in_other_processes_read_the_planned_stack(scene, bucket_scene, tmp_path):
    """As on Dask workers: the pickled Feed carries the reader options to the feed tasks."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import zarr

    from segpipe.pipeline.feed import feed_block
    from segpipe.pipeline.options import RunOptions
    from segpipe.pipeline.stages import ingest_stage, plan_stage

    plan = plan_stage(RunOptions.of(
        str(scene / "item.json"), str(tmp_path / "labels.tif"), model=str(bucket_scene["model"]),
        tile=32, block_pixels=64, device="cpu", bands=COARSE, resampling="bilinear"))
    assert plan is not None and plan.feed() is not None
    ingest_stage(plan)
    spawn = multiprocessing.get_context("spawn")  # nothing inherited: only what is pickled
    blocks = list(plan.tiles.block_indices())
    with ProcessPoolExecutor(2, mp_context=spawn) as pool:
        list(pool.map(feed_block, [plan.feed()] * len(blocks), [plan.tiles] * len(blocks),
                      blocks))
    copied = zarr.open_array(plan.workdir.image, mode="r")[:]
    np.testing.assert_array_equal(copied, warped_by_hand(scene, COARSE, Resampling.bilinear))


@pytest.mark.slow
def test_the_command_takes_resampling(
    bucket_scene, scene, s3, prefect_api, tmp_path  # noqa: F811
):
    stacked = write_geotiff(tmp_path / "stacked.tif",
                            warped_by_hand(scene, COARSE, Resampling.bilinear), transform=GRID_20M)
    _run(stacked, tmp_path / "oracle.tif", bucket_scene["model"])
    env = {**s3.env(tmp_path / "home"), "PREFECT_API_URL": prefect_api}
    out = tmp_path / "labels.tif"
    done = segpipe(["run", "--input", bucket_scene["item_url"], "--bands", ",".join(COARSE),
                    "--resampling", "bilinear", "--output", out, "--model",
                    bucket_scene["model"], *ARGS], env, tmp_path)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(_labels(out)[0], _labels(tmp_path / "oracle.tif")[0])
    summary = json.loads(sidecar_path(out).read_text())["summary"]
    assert summary["image"]["resampling"] == "bilinear"
    assert "resampling" not in json.loads(
        sidecar_path(tmp_path / "oracle.tif").read_text())["summary"]["image"]


def test_segpipe_open_stacks_the_asked_bands_with_the_asked_resampling(scene):
    from segpipe.files import open as open_input

    opened = open_input(str(scene / "item.json"), bands=COARSE, resampling="bilinear")
    assert tuple(opened["band"].values) == COARSE and opened.shape == (3, 128, 128)
    # pixel centres of the 20 m grid
    np.testing.assert_allclose(opened["x"].values, ORIGIN[0] + 10.0 + 20.0 * np.arange(128))
    np.testing.assert_allclose(opened["y"].values, ORIGIN[1] - 10.0 - 20.0 * np.arange(128))
    np.testing.assert_array_equal(opened.values,
                                  warped_by_hand(scene, COARSE, Resampling.bilinear))
