"""``--vectors``: class polygons without seams, read back with GDAL (pyogrio) and checked against
the label raster with numpy and scipy (4-connected components), pyproj and json.

Labels are known without a trained model: the writer tests polygonize synthetic label arrays;
the end-to-end runs use a pointwise model that thresholds the one band into three classes, so
the labels equal the map the image was painted from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pyproj
import pytest
import shapely
import torch
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage
from torch import nn

from segpipe.flows.inputs import expand_inputs
from segpipe.models.card import ClassInfo, ModelCard, Normalization, NormMethod
from segpipe.models.foundation import InputError, OutputExistsError
from segpipe.models.saving import export_program
from segpipe.pipeline import polygons
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.writers import ExportJob
from segpipe.pipeline.io.zarrstore import create_array
from segpipe.pipeline.options import ExportOptions, RunOptions
from segpipe.pipeline.polygons import SeamlessPolygons
from segpipe.pipeline.stages import run_one
from segpipe.pipeline.vectors import LAYER, write_vectors
from tests.conftest import write_geotiff
from tests.io.iohelpers import write_ome_tiff
from tests.test_cli_contract import assert_rejected, run_segpipe, snapshot

NODATA = 255
CLASSES = ("water", "field", "forest")
COLORS = ((0, 0, 255), (255, 255, 0), (0, 128, 0))
UTM = CRS.from_epsg(32621)
UTM_TRANSFORM = Affine(30.0, 0.0, 300000.0, 0.0, -30.0, 5000000.0)  # 30 m pixels: 900 m²
#: The grey value each class is painted with; the model maps it back (see Threshold).
PAINT = np.array([40, 128, 220], np.uint8)


# ----------------------------------------------------------------------------------- helpers


def scene_labels(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Blobs of three classes at several scales, a ring with a hole, and a nodata corner."""
    rng = np.random.default_rng(seed)
    coarse = ndimage.zoom(rng.random((h // 6 + 2, w // 6 + 2)), 6, order=1)[:h, :w]
    labels = np.digitize(coarse, [0.4, 0.6]).astype(np.uint8)
    speckle = rng.random((h, w)) < 0.03
    labels[speckle] = rng.integers(0, 3, speckle.sum())
    ring = (slice(h // 3, h // 3 + 12), slice(w // 3, w // 3 + 12))
    labels[ring] = 2
    labels[h // 3 + 3 : h // 3 + 9, w // 3 + 3 : w // 3 + 9] = 1  # the hole: 6 × 6 px
    labels[: h // 5, : w // 6] = NODATA
    return labels


def label_zarr(folder: Path, labels: np.ndarray, tile: int) -> str:
    path = folder / f"labels_{tile}.zarr"
    array = create_array(path, labels.shape, (tile, tile), "uint8", fill_value=NODATA)
    array[:] = labels
    return str(path)


def geo_info(labels: np.ndarray, crs: CRS = UTM, transform: Affine = UTM_TRANSFORM) -> RasterInfo:
    h, w = labels.shape
    return RasterInfo(path="scene.tif", format="gdal", height=h, width=w, bands=1, dtype="uint8",
                      crs_wkt=crs.to_wkt(), transform=tuple(transform)[:6], levels=((h, w),))


def write(folder: Path, labels: np.ndarray, tile: int, vectors: Path, info: RasterInfo,
          min_area: float = 0.0) -> Path:
    job = ExportJob(
        labels_path=label_zarr(folder, labels, tile), out=str(folder / "mask.tif"), info=info,
        class_names=CLASSES, colors=COLORS, nodata=NODATA, tags={},
        options=ExportOptions(vectors=str(vectors), vectors_min_area=min_area),
    )
    assert write_vectors(job) == str(vectors)
    return vectors


def read_gpkg(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(geometries, class_id, area) of the polygons layer, read by GDAL."""
    meta, _, wkb, fields = pyogrio.raw.read(path, layer=LAYER)
    by_name = dict(zip(meta["fields"], fields, strict=True))
    return shapely.from_wkb(wkb), by_name["class_id"], by_name["area"]


def components(labels: np.ndarray, cls: int) -> tuple[int, np.ndarray]:
    """4-connected regions of ``cls``: (count, pixel count of each)."""
    regions, n = ndimage.label(labels == cls)  # scipy's default structure: 4-connectivity
    return n, np.bincount(regions.ravel())[1:]


# ------------------------------------------------------------------------- the writer alone


@pytest.mark.parametrize(("tile", "strip_rows"), [(5, None), (8, None), (16, None), (16, 3)])
def test_strips_give_the_polygons_and_areas_of_one_pass(tmp_path, monkeypatch, tile, strip_rows):
    labels = scene_labels(90, 110)
    if strip_rows:  # strips of fewer rows than a tile row, as for very wide images
        monkeypatch.setattr(polygons, "STRIP_PIXELS", strip_rows * labels.shape[1])
    info = geo_info(labels)
    tiled = write(tmp_path, labels, tile, tmp_path / f"tiled_{tile}.gpkg", info)
    whole = write(tmp_path, labels, 128, tmp_path / "whole.gpkg", info)  # one strip
    g_tiled, c_tiled, a_tiled = read_gpkg(tiled)
    g_whole, c_whole, a_whole = read_gpkg(whole)
    for cls in range(3):
        count, sizes = components(labels, cls)
        assert (c_tiled == cls).sum() == (c_whole == cls).sum() == count
        expected = sizes.sum() * 900.0
        np.testing.assert_allclose(a_tiled[c_tiled == cls].sum(), expected, rtol=1e-6)
        np.testing.assert_allclose(a_whole[c_whole == cls].sum(), expected, rtol=1e-6)
        np.testing.assert_allclose(np.sort(a_tiled[c_tiled == cls]), np.sort(sizes) * 900.0)
        # the same polygons, vertex for vertex
        key = lambda g: (g.area, g.bounds)  # noqa: E731
        for a, b in zip(sorted(g_tiled[c_tiled == cls], key=key),
                        sorted(g_whole[c_whole == cls], key=key), strict=True):
            assert shapely.equals(a, b) and len(a.exterior.coords) == len(b.exterior.coords)
    assert shapely.is_valid(g_tiled).all()


def test_a_ring_across_strip_borders_keeps_its_hole(tmp_path):
    labels = np.zeros((40, 40), np.uint8)
    labels[6:30, 5:33] = 2  # crosses the strip borders at rows 8, 16 and 24
    labels[11:25, 12:26] = 1  # the hole, 14 × 14
    vectors = write(tmp_path, labels, 8, tmp_path / "ring.gpkg", geo_info(labels))
    geoms, classes, areas = read_gpkg(vectors)
    (ring,) = geoms[classes == 2]
    assert len(ring.interiors) == 1
    hole = shapely.Polygon(ring.interiors[0])
    assert hole.area == pytest.approx(14 * 14 * 900.0)
    assert areas[classes == 2][0] == pytest.approx(((labels == 2).sum()) * 900.0)
    assert ring.area == pytest.approx(((labels == 2).sum()) * 900.0)


def test_geopackage_crs_is_the_inputs(tmp_path):
    labels = scene_labels(40, 50)
    vectors = write(tmp_path, labels, 16, tmp_path / "v.gpkg", geo_info(labels))
    stored = pyogrio.read_info(vectors, layer=LAYER)
    assert pyproj.CRS.from_user_input(stored["crs"]) == pyproj.CRS.from_wkt(UTM.to_wkt())
    assert pyogrio.read_info(vectors, layer=LAYER)["layer_metadata"]["area_unit"] == "m2"
    # coordinates through the transform: the polygons' union covers the labelled pixels
    geoms, _, _ = read_gpkg(vectors)
    minx, miny, maxx, maxy = shapely.total_bounds(geoms)
    rows, cols = np.nonzero(labels != NODATA)
    x0, y0 = UTM_TRANSFORM @ (cols.min(), rows.max() + 1)
    x1, y1 = UTM_TRANSFORM @ (cols.max() + 1, rows.min())
    assert (minx, miny, maxx, maxy) == pytest.approx((x0, y0, x1, y1))


def test_geographic_crs_areas_are_geodesic(tmp_path):
    labels = scene_labels(60, 70, seed=4)
    transform = Affine(0.01, 0.0, 10.0, 0.0, -0.01, 60.0)
    info = geo_info(labels, CRS.from_epsg(4326), transform)
    vectors = write(tmp_path, labels, 16, tmp_path / "v.gpkg", info)
    stored = pyogrio.read_info(vectors, layer=LAYER)
    assert pyproj.CRS.from_user_input(stored["crs"]) == pyproj.CRS.from_epsg(4326)
    _, classes, areas = read_gpkg(vectors)
    geod = pyproj.Geod(ellps="WGS84")
    for cls in range(3):
        expected = 0.0  # per row: pixels × the geodesic area of one cell of that row
        for row, count in enumerate((labels == cls).sum(axis=1)):
            lon0, lat0 = transform @ (0, row)
            lon1, lat1 = transform @ (1, row + 1)
            cell, _ = geod.polygon_area_perimeter([lon0, lon1, lon1, lon0],
                                                  [lat0, lat0, lat1, lat1])
            expected += count * abs(cell)
        # polygon edges are geodesics, not parallels: for edges under 1° the two differ by
        # less than 5e-5 of the area (a ring, a hole or a wrong ellipsoid is far more)
        np.testing.assert_allclose(areas[classes == cls].sum(), expected, rtol=5e-5)


def test_microscopy_geojson_is_qupath_in_level0_pixels(tmp_path):
    labels = scene_labels(50, 60, seed=2)
    h, w = labels.shape
    info = RasterInfo(  # the run read level 1 (2× coarser) of a 0.25 µm scan
        path="slide.ome.tif", format="ome-tiff", height=h, width=w, bands=3, dtype="uint8",
        pixel_size=(0.5, 0.5), pixel_unit="µm", levels=((2 * h, 2 * w), (h, w)), level=1,
    )
    vectors = write(tmp_path, labels, 8, tmp_path / "v.geojson", info)
    data = json.loads(vectors.read_text(encoding="utf-8"))
    assert data["type"] == "FeatureCollection"
    features = data["features"]
    for cls in range(3):
        regions, n = ndimage.label(labels == cls)
        mine = [f for f in features if f["properties"]["class_id"] == cls]
        assert len(mine) == n
        for f in mine:
            props = f["properties"]
            assert props["objectType"] == "annotation"
            assert props["classification"] == {"name": CLASSES[cls], "color": list(COLORS[cls])}
        # level-0 bounding boxes are twice those of the regions in the level-1 labels
        boxes = sorted(
            (2 * s[1].start, 2 * s[0].start, 2 * s[1].stop, 2 * s[0].stop)
            for s in ndimage.find_objects(regions)
        )
        got = sorted(tuple(shapely.geometry.shape(f["geometry"]).bounds) for f in mine)
        assert got == [tuple(float(v) for v in b) for b in boxes]
        # areas in µm²: a level-1 pixel is 0.5 × 0.5 µm
        sizes = np.bincount(regions.ravel())[1:]
        assert sorted(f["properties"]["area"] for f in mine) == pytest.approx(
            sorted(sizes * 0.25))
    # the same as a GeoPackage: no CRS, level-0 pixel coordinates
    gpkg = write(tmp_path, labels, 8, tmp_path / "v.gpkg", info)
    assert pyogrio.read_info(gpkg, layer=LAYER)["crs"] is None
    assert pyogrio.read_info(gpkg, layer=LAYER)["layer_metadata"]["area_unit"] == "um2"


def test_geojson_of_a_georeferenced_input_is_wgs84(tmp_path):
    labels = np.zeros((20, 24), np.uint8)
    labels[4:12, 6:18] = 1
    vectors = write(tmp_path, labels, 8, tmp_path / "v.geojson", geo_info(labels))
    data = json.loads(vectors.read_text(encoding="utf-8"))
    (square,) = [f for f in data["features"] if f["properties"]["class_id"] == 1]
    to_wgs84 = pyproj.Transformer.from_crs(UTM, 4326, always_xy=True)
    corners = [UTM_TRANSFORM @ xy for xy in ((6, 4), (18, 4), (18, 12), (6, 12))]
    expected = sorted(to_wgs84.transform(x, y) for x, y in corners)
    got = sorted(map(tuple, square["geometry"]["coordinates"][0][:-1]))
    np.testing.assert_allclose(got, expected, rtol=2e-11)  # 1e-9° at 50°: float64 round trips


def test_min_area_drops_small_polygons(tmp_path):
    labels = np.zeros((48, 48), np.uint8)
    sizes = {(2, 2): 4, (3, 4): 12, (5, 5): 25, (7, 6): 42}
    for i, (hh, ww) in enumerate(sizes):
        labels[2 + 11 * i : 2 + 11 * i + hh, 10 : 10 + ww] = 1 + i % 2
    info = geo_info(labels)
    vectors = write(tmp_path, labels, 8, tmp_path / "v.gpkg", info, min_area=12 * 900.0)
    _, classes, areas = read_gpkg(vectors)
    kept = sorted(areas[classes > 0] / 900.0)
    assert kept == [12, 25, 42]  # 4 px is below the minimum, 12 px is at it
    assert (areas >= 12 * 900.0).all()


def test_open_polygons_are_bounded_by_the_runs_on_a_border(tmp_path):
    """A checkerboard of 2 × 2 cells: many polygons, few open at once (one strip's border)."""
    h, w, tile = 256, 32, 8
    yy, xx = np.mgrid[0:h, 0:w]
    labels = (((yy // 2) + (xx // 2)) % 2).astype(np.uint8)
    merger = SeamlessPolygons(labels, NODATA, rows=tile)
    found = list(merger)
    runs = [1 + np.count_nonzero(np.diff(labels[r - 1])) for r in range(tile, h, tile)]
    assert len(found) == (h // 2) * (w // 2)
    assert merger.stats.strips == h // tile
    assert 0 < merger.stats.max_open <= max(runs) == w // 2
    assert len(found) >= 8 * merger.stats.max_open


def test_vectors_options_are_checked():
    with pytest.raises(InputError, match=r"--vectors out\.shp: unknown extension"):
        ExportOptions(vectors="out.shp")
    with pytest.raises(InputError, match="--vectors-min-area -1"):
        ExportOptions(vectors="out.gpkg", vectors_min_area=-1)
    with pytest.raises(InputError, match="add --vectors"):
        ExportOptions(vectors_min_area=10)
    assert ExportOptions(vectors="OUT.GeoJSON").vectors == "OUT.GeoJSON"


# --------------------------------------------------------------------------- end to end


class Threshold(nn.Module):
    """Three classes from the raw grey value: < 85, 85..170, > 170 (see PAINT)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, :1]
        return torch.cat([85.0 - v, torch.minimum(v - 85.0, 170.0 - v), v - 170.0], dim=1)


def threshold_model(folder: Path) -> Path:
    card = ModelCard(
        name="threshold", bands=1,
        classes=tuple(ClassInfo(n, c) for n, c in zip(CLASSES, COLORS, strict=True)),
        normalization=Normalization(NormMethod.NONE), margin=0, halo=0, stride=1,
    )
    path = folder / "threshold.pt2"
    export_program(Threshold(), path, card=card, in_channels=1)
    return path


def painted(labels: np.ndarray) -> np.ndarray:
    """The one-band image the threshold model labels as ``labels`` (0 where nodata)."""
    image = np.zeros(labels.shape, np.uint8)
    known = labels != NODATA
    image[known] = PAINT[labels[known]]
    return image[None]


def edges(polygon: shapely.Polygon) -> np.ndarray:
    """Every ring edge as (x0, y0, x1, y1)."""
    rings = [polygon.exterior, *polygon.interiors]
    return np.concatenate([
        np.hstack([xy[:-1], xy[1:]]) for xy in (shapely.get_coordinates(r) for r in rings)
    ])


def test_cli_tiled_and_one_tile_runs_give_the_same_seamless_polygons(tmp_path):
    labels = scene_labels(72, 88, seed=7)
    src = write_geotiff(tmp_path / "scene.tif", painted(labels), crs=UTM,
                        transform=UTM_TRANSFORM, nodata=0)
    model = threshold_model(tmp_path)
    tile = 16
    result = run_segpipe(  # as a user runs it, with small tiles and blocks: strips are merged
        ["run", "--input", src, "--output", tmp_path / "tiled.tif", "--vectors",
         tmp_path / "tiled.gpkg", "--tile", tile, "--block-pixels", 2 * tile, "--model", model,
         "--halo", "0", "--workers", "0", "--device", "cpu", "--quiet"], tmp_path)
    assert result.returncode == 0, result.stderr
    summary = run_one(RunOptions.of(  # one tile, one strip (in-process, to keep it short)
        str(src), str(tmp_path / "whole.tif"), vectors=str(tmp_path / "whole.gpkg"),
        model=str(model), tile=128, halo=0, device="cpu"))
    tiled, whole = read_gpkg(tmp_path / "tiled.gpkg"), read_gpkg(tmp_path / "whole.gpkg")
    # the summary's objects are the same 4-connected regions (the areas/vectors contract)
    for entry in summary["classes"]:
        assert entry["objects"] == (tiled[1] == entry["label"]).sum()
    for cls in range(3):
        count, sizes = components(labels, cls)
        for _, classes, areas in (tiled, whole):
            assert (classes == cls).sum() == count
            np.testing.assert_allclose(areas[classes == cls].sum(), sizes.sum() * 900.0,
                                       rtol=1e-6)
    # no edge lies along an internal tile border unless the labels change across it
    inverse = ~UTM_TRANSFORM
    h, w = labels.shape
    padded = np.pad(labels.astype(np.int32), 1, constant_values=-1)
    seam_edges = 0
    for polygon in tiled[0]:
        x0, y0, x1, y1 = edges(polygon).T
        c0, r0 = inverse @ (x0, y0)
        c1, r1 = inverse @ (x1, y1)
        c0, r0, c1, r1 = (np.rint(v).astype(int) for v in (c0, r0, c1, r1))
        horizontal = (r0 == r1) & (r0 % tile == 0) & (r0 > 0) & (r0 < h)
        for a, b, r in zip(c0[horizontal], c1[horizontal], r0[horizontal], strict=True):
            cols = slice(min(a, b) + 1, max(a, b) + 1)
            assert (padded[r, cols] != padded[r + 1, cols]).all()
            seam_edges += 1
        vertical = (c0 == c1) & (c0 % tile == 0) & (c0 > 0) & (c0 < w)
        for c, a, b in zip(c0[vertical], r0[vertical], r1[vertical], strict=True):
            rows = slice(min(a, b) + 1, max(a, b) + 1)
            assert (padded[rows, c] != padded[rows, c + 1]).all()
            seam_edges += 1
    assert seam_edges > 0  # the check met edges on tile borders (where labels change)


def test_level1_run_writes_qupath_geojson_in_level0_pixels_and_reruns_by_export_key(tmp_path):
    labels = scene_labels(96, 80, seed=5)
    labels[labels == NODATA] = 0  # OME-TIFF: no nodata
    src = write_ome_tiff(tmp_path / "slide.ome.tif", painted(labels), "CYX",
                         pixel_size=(0.25, 0.25), sublevels=1, tile=16)
    level1 = labels[::2, ::2]  # what the run at level 1 labels
    model = threshold_model(tmp_path)
    options = dict(model=str(model), level=1, tile=16, halo=0, block_pixels=16, device="cpu")
    geojson = tmp_path / "slide.geojson"
    out = tmp_path / "slide.labels.ome.tif"
    run_one(RunOptions.of(str(src), str(out), vectors=str(geojson), **options))
    features = json.loads(geojson.read_text(encoding="utf-8"))["features"]
    for cls in range(3):
        regions, n = ndimage.label(level1 == cls)
        mine = [f for f in features if f["properties"]["classification"]["name"] == CLASSES[cls]]
        assert len(mine) == n
        boxes = sorted((2.0 * s[1].start, 2.0 * s[0].start, 2.0 * s[1].stop, 2.0 * s[0].stop)
                       for s in ndimage.find_objects(regions))
        assert sorted(shapely.geometry.shape(f["geometry"]).bounds for f in mine) == boxes
        total = (level1 == cls).sum() * 0.5 * 0.5  # µm² of level-1 pixels
        assert sum(f["properties"]["area"] for f in mine) == pytest.approx(total, rel=1e-9)
    # the export key holds the vectors: the same run is up to date, other vectors are not,
    # nor is the same run once its vectors are gone
    again = run_one(RunOptions.of(str(src), str(out), vectors=str(geojson), **options))
    assert again.get("skipped") == "up to date"
    with pytest.raises(OutputExistsError, match="--output"):
        run_one(RunOptions.of(str(src), str(out), vectors=str(tmp_path / "other.gpkg"),
                              **options))
    geojson.unlink()
    with pytest.raises(OutputExistsError, match="--output"):
        run_one(RunOptions.of(str(src), str(out), vectors=str(geojson), **options))


def test_all_nodata_gives_an_empty_layer(tmp_path):
    labels = np.full((20, 30), NODATA, np.uint8)
    vectors = write(tmp_path, labels, 8, tmp_path / "v.gpkg", geo_info(labels))
    info = pyogrio.read_info(vectors, layer=LAYER)
    assert info["features"] == 0 and list(info["fields"]) == ["class_id", "class_name", "area"]


def test_vectors_name_one_file_so_a_batch_is_refused(tmp_path):
    for name in ("a.tif", "b.tif"):
        write_geotiff(tmp_path / name, painted(scene_labels(16, 16)))
    template = RunOptions("", "", export=ExportOptions(vectors=str(tmp_path / "v.gpkg")))
    with pytest.raises(InputError, match="names one file but 2 inputs"):
        expand_inputs([str(tmp_path)], str(tmp_path / "out"), template)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ bad usage, exit 2


@pytest.mark.parametrize("case", ["extension", "folder", "exists", "min-area-alone"])
def test_bad_vectors_usage_exits_2_and_writes_nothing(tmp_path, case):
    src = write_geotiff(tmp_path / "scene.tif", painted(scene_labels(32, 32)), nodata=0)
    model = threshold_model(tmp_path)
    existing = tmp_path / "v.gpkg"
    previous = None
    extra = {
        "extension": ["--vectors", "v.shp"],
        "folder": ["--vectors", "no-such-folder/v.gpkg"],
        "exists": ["--vectors", "v.gpkg"],
        "min-area-alone": ["--vectors-min-area", "10"],
    }[case]
    if case == "exists":
        existing.write_bytes(b"not yours")
        previous = existing.read_bytes()
    before = snapshot(tmp_path)
    result = run_segpipe(["run", "--input", src, "--output", "mask.tif", "--model", model,
                          "--workers", "0", "--device", "cpu", "--quiet", *extra], tmp_path)
    assert_rejected(result, tmp_path, before, tmp_path / "mask.tif")
    assert "--vectors" in result.stderr
    if previous is not None:
        assert existing.read_bytes() == previous
