"""The COG outputs are copied from the work arrays: the bytes of a staged copy, one encode a tile.

The oracle is the former export, spelled out here with rasterio: the same pixels and metadata
written into an uncompressed tiled GeoTIFF, then copied by GDAL's COG driver with the output's
options. The new output must hold the very same bytes.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import tifffile
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.rpc import RPC
from rasterio.windows import Window

from segpipe.pipeline.io import cogsource
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.writers import ExportJob
from segpipe.pipeline.io.writers import geotiff as geotiff_writer
from segpipe.pipeline.io.writers.common import probabilities_path
from segpipe.pipeline.io.zarrstore import create_array
from segpipe.pipeline.options import ExportOptions, ProbabilityDtype

H, W, T, K = 1100, 1300, 256, 3  # two overview levels at 512-pixel blocks
CLASSES = ("water", "forest", "urban")
COLORS = ((0, 0, 255), (0, 128, 0), (200, 0, 0))
TAGS = {"SEGPIPE_MODEL_SHA256": "abc123", "SEGPIPE_TILE": str(T)}
UTM = CRS.from_epsg(32633).to_wkt()
GEO = (10.0, 0.0, 400000.0, 0.0, -10.0, 6000000.0)
GCPS = ((0.0, 0.0, 12.0, 48.0, 0.0), (0.0, 1300.0, 12.2, 48.0, 0.0),
        (1100.0, 0.0, 12.0, 47.8, 0.0), (1100.0, 1300.0, 12.2, 47.8, 10.0))
RPCS = RPC(height_off=100.0, height_scale=500.0, lat_off=47.9, lat_scale=0.1,
           line_den_coeff=[1.0] + [0.0] * 19, line_num_coeff=[0.0, -1.0] + [0.0] * 18,
           line_off=550.0, line_scale=550.0, long_off=12.1, long_scale=0.1,
           samp_den_coeff=[1.0] + [0.0] * 19, samp_num_coeff=[0.0, 0.0, 1.0] + [0.0] * 17,
           samp_off=650.0, samp_scale=650.0).to_dict()
# today's COG options, spelled out independently of the writer
COG = {"driver": "COG", "COMPRESS": "DEFLATE", "NUM_THREADS": "ALL_CPUS", "BLOCKSIZE": "512",
       "BIGTIFF": "IF_SAFER", "OVERVIEWS": "AUTO"}


def _labels(dtype: str, nodata: int) -> np.ndarray:
    """Patches of classes with noise, a nodata corner: compressible like real label maps."""
    rng = np.random.default_rng(7)
    cells = rng.integers(0, K, (H // 50 + 1, W // 50 + 1))
    labels = np.repeat(np.repeat(cells, 50, 0), 50, 1)[:H, :W].astype(dtype)
    noise = rng.random((H, W)) < 0.1
    labels[noise] = rng.integers(0, K, int(noise.sum()))
    labels[:70, :90] = nodata
    return labels


def _info(georef: str) -> RasterInfo:
    base = {"path": "/data/in.tif", "format": "gdal", "height": H, "width": W, "bands": 3,
            "dtype": "uint8", "levels": ((H, W),)}
    if georef == "transform":
        return RasterInfo(**base, crs_wkt=UTM, transform=GEO)
    if georef == "gcps+rpcs":
        return RasterInfo(**base, gcps=GCPS, gcp_crs_wkt=CRS.from_epsg(4326).to_wkt(), rpcs=RPCS)
    return RasterInfo(**base)


def _oracle_georef(georef: str) -> dict:
    if georef == "transform":
        return {"crs": CRS.from_wkt(UTM), "transform": Affine(*GEO)}
    if georef == "gcps+rpcs":
        gcps = [GroundControlPoint(r, c, x, y, z, id=str(i + 1), info="")
                for i, (r, c, x, y, z) in enumerate(GCPS)]
        return {"gcps": gcps, "crs": CRS.from_epsg(4326), "rpcs": RPC(**RPCS)}
    return {}


def _oracle(path, pixels: np.ndarray, options: dict, describe, **profile) -> bytes:
    """The former export: an uncompressed tiled GeoTIFF, then a COG copy of it."""
    staging = path.with_suffix(".staging.tif")
    count = 1 if pixels.ndim == 2 else pixels.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(staging, "w", driver="GTiff", height=H, width=W, count=count,
                           dtype=pixels.dtype, tiled=True, blockxsize=512, blockysize=512,
                           compress="none", **profile) as dst:
            dst.write(pixels.reshape(count, H, W))
            describe(dst)
        rasterio.shutil.copy(staging, path, **COG, **options)
    return path.read_bytes()


def _job(tmp_path, info: RasterInfo, labels: str, **kw) -> ExportJob:
    return ExportJob(
        labels_path=labels, out=str(tmp_path / "out" / "mask.tif"), info=info,
        class_names=CLASSES, colors=COLORS, nodata=kw.pop("nodata", 255), tags=TAGS,
        **kw,
    )


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize(
    ("georef", "dtype", "resampling"),
    [("transform", "uint8", "nearest"), ("gcps+rpcs", "uint8", "mode"),
     ("none", "uint16", "nearest")],
)
def test_label_cog_has_the_bytes_of_a_staged_copy(tmp_path, georef, dtype, resampling):
    nodata = 255 if dtype == "uint8" else 65535
    labels = _labels(dtype, nodata)
    store = tmp_path / "labels.zarr"
    create_array(store, (H, W), (T, T), dtype, fill_value=nodata)[:] = labels
    (tmp_path / "out").mkdir()
    job = _job(tmp_path, _info(georef), str(store), nodata=nodata,
               options=ExportOptions(overview_resampling=resampling))
    out = geotiff_writer.write_labels(job)

    def describe(dst):
        if dtype == "uint8":
            dst.write_colormap(1, {i: (*c, 255) for i, c in enumerate(COLORS)})
        dst.set_band_description(1, "labels")
        dst.update_tags(**TAGS, CLASS_NAMES=json.dumps(list(CLASSES)))
        dst.update_tags(1, **{f"CLASS_{i}": n for i, n in enumerate(CLASSES)})

    expected = _oracle(tmp_path / "oracle.tif", labels, {"RESAMPLING": resampling.upper()},
                       describe, nodata=nodata, **_oracle_georef(georef))
    assert out.read_bytes() == expected
    with rasterio.open(out) as ds:  # and it holds the labels (the oracle could be wrong too)
        np.testing.assert_array_equal(ds.read(1), labels)
        assert ds.overviews(1) == [2, 4]


@pytest.mark.parametrize(
    ("dtype", "classes"),
    [(ProbabilityDtype.FLOAT, CLASSES), (ProbabilityDtype.UINT8, CLASSES),
     (ProbabilityDtype.UINT8, (*CLASSES, "cloud"))],  # GDAL colours 3 and 4 uint8 bands
)
def test_probability_cog_has_the_bytes_of_a_staged_copy(tmp_path, dtype, classes):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((len(classes), H, W)).astype(np.float32)
    probs = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float16)
    probs[:, 0, :4] = (0.5, 0.0, 1.0, 0.25)  # 0.5 * 255 = 127.5: both round it to 128
    store = tmp_path / "probs.zarr"
    create_array(store, probs.shape, (len(classes), T, T), "float16")[:] = probs
    labels = tmp_path / "labels.zarr"
    create_array(labels, (H, W), (T, T), "uint8")
    (tmp_path / "out").mkdir()
    job = _job(tmp_path, _info("transform"), str(labels), probabilities_path=str(store),
               probability_names=classes, options=ExportOptions(probabilities_dtype=dtype))
    out = geotiff_writer.write_probabilities(job)
    uint8 = dtype is ProbabilityDtype.UINT8
    pixels = (np.rint(np.clip(probs.astype(np.float32), 0, 1) * 255).astype(np.uint8) if uint8
              else probs.astype(np.float32))

    def describe(dst):
        for i, name in enumerate(classes, start=1):
            dst.set_band_description(i, name)
        dst.update_tags(CLASS_NAMES=json.dumps(list(classes)), SCALE="1/255" if uint8 else "1")

    expected = _oracle(tmp_path / "oracle.tif", pixels,
                       {"RESAMPLING": "NEAREST", "PREDICTOR": "YES"}, describe,
                       **_oracle_georef("transform"))
    assert out == probabilities_path(job.out)
    assert out.read_bytes() == expected


def test_each_output_tile_is_read_once_and_encoded_once(tmp_path, monkeypatch):
    """Level 0: each 512² tile is read from the label store once, by GDAL, straight into the
    output (a staged copy would read nothing through the store's VRT). Overviews: GDAL's
    temporary overview file holds them uncompressed, so they are deflated once, in the output.
    """
    labels = _labels("uint8", 255)
    store = tmp_path / "labels.zarr"
    create_array(store, (H, W), (T, T), "uint8", fill_value=255)[:] = labels
    (tmp_path / "out").mkdir()
    reads: list[tuple[int, int, int, int]] = []
    real = cogsource.read_window

    def counting(array, row, col, height, width):
        reads.append((row, col, height, width))
        return real(array, row, col, height, width)

    monkeypatch.setattr(cogsource, "read_window", counting)
    with rasterio.Env(COG_DELETE_TEMP_FILES="NO"):  # GDAL's switch for its tests
        out = geotiff_writer.write_labels(_job(tmp_path, _info("transform"), str(store)))

    tiles = Counter((r, c, h, w) for r, c, h, w in reads if h <= 512 and w <= 512)
    grid = {(r, c, min(512, H - r), min(512, W - c))
            for r in range(0, H, 512) for c in range(0, W, 512)}
    assert set(tiles) == grid and set(tiles.values()) == {1}
    strips = [(r, c, h, w) for r, c, h, w in reads if (r, c, h, w) not in grid]
    assert strips and sum(h * w for _, _, h, w in strips) == H * W  # the overviews' one pass

    with tifffile.TiffFile(out) as tif:  # every output tile deflated
        assert {p.compression for p in tif.pages} == {tifffile.COMPRESSION.ADOBE_DEFLATE}
        assert [p.shape for p in tif.pages] == [(H, W), (550, 650), (275, 325)]
    temporary = list((tmp_path / "out").glob("*.ovr.tmp"))
    assert len(temporary) == 1
    with tifffile.TiffFile(temporary[0]) as tif:  # the overviews were not encoded before
        assert {p.compression for p in tif.pages} == {tifffile.COMPRESSION.NONE}
        with rasterio.open(out, overview_level=0) as ov:
            np.testing.assert_array_equal(tif.pages[0].asarray(), ov.read(1))
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(1, window=Window(0, 0, W, H)), labels)
