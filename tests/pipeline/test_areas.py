"""Class areas on every grid: planar (metres, feet), geodesic (EPSG:4326), microscopy, pixels.

The labels are known in advance (``labelmodel``: a 1×1 identity convolution fed a one-hot label
map), so the oracles are numpy counts times a pixel area written out here, pyproj's geodesic
area of each class's cells as polygons, and the CSV read back with the csv module.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry.polygon import orient

from segpipe.pipeline.areas import AreaKind, area_basis
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.report import summary_markdown
from segpipe.pipeline.stages import run_one
from tests.conftest import UTM_21N, WGS84, write_geotiff
from tests.io.iohelpers import write_ome_tiff
from tests.pipeline.labelmodel import argmax_model, blobs, one_hot

K = 3
US_SURVEY_FOOT = 1200 / 3937  # metres, by definition


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return argmax_model(tmp_path_factory.mktemp("model") / "argmax.pt2", K)


def segment(src, out, model, **kw):
    options = dict(model=str(model), tile=16, block_pixels=32, device="cpu")
    return run_one(RunOptions.of(str(src), str(out), **{**options, **kw}))


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def labels_and_nodata(shape, seed):
    labels = blobs(shape, K, seed)
    nodata = np.zeros(shape, bool)
    nodata[:6, :9] = True  # a corner of nodata, excluded from every class
    return labels, nodata


@pytest.mark.parametrize(
    ("crs", "size", "metres"),
    [(UTM_21N, 30.0, 30.0), (CRS.from_epsg(2263), 10.0, 10.0 * US_SURVEY_FOOT)],
    ids=["utm-metres", "ny-us-survey-feet"],
)
def test_projected_areas_are_counts_times_pixel_area(tmp_path, model, crs, size, metres):
    labels, nodata = labels_and_nodata((50, 70), seed=1)
    src = write_geotiff(
        tmp_path / "in.tif", one_hot(labels, K, nodata), crs=crs, nodata=0,
        transform=Affine(size, 0, 1000.0, 0, -size, 2000.0),
    )
    out = tmp_path / "out.tif"
    summary = segment(src, out, model)
    with rasterio.open(out) as ds:
        written = ds.read(1)
    np.testing.assert_array_equal(written[~nodata], labels[~nodata])  # the model is known

    counts = np.bincount(labels[~nodata], minlength=K)
    assert summary["areas"]["kind"] == "projected" and summary["areas"]["unit"] == "m2"
    np.testing.assert_allclose(summary["areas"]["pixel_size"], [metres, metres], rtol=1e-12)
    assert summary["nodata_pixels"] == nodata.sum()
    for c in summary["classes"]:
        k = c["label"]
        assert c["pixels"] == counts[k]
        assert c["area"] == pytest.approx(counts[k] * metres**2, rel=1e-12)
        assert c["area_ha"] == pytest.approx(counts[k] * metres**2 / 1e4, rel=1e-12)
        assert c["area_unit"] == "m2" and c["area_mm2"] is None
        assert c["density_unit"] == "per km2"
        area_km2 = counts.sum() * metres**2 / 1e6
        assert c["density"] == pytest.approx(c["objects"] / area_km2, rel=1e-12)

    # the CSV beside the output says the same, read back with the csv module
    rows = read_csv(tmp_path / "out.areas.csv")
    assert [r["name"] for r in rows] == [f"class{k}" for k in range(K)]
    for row, c in zip(rows, summary["classes"]):
        assert int(row["label"]) == c["label"] and int(row["pixels"]) == c["pixels"]
        assert float(row["area"]) == c["area"] and float(row["area_ha"]) == c["area_ha"]
        assert row["area_unit"] == "m2" and row["area_mm2"] == ""
        assert int(row["objects"]) == c["objects"] and float(row["density"]) == c["density"]
    # the sidecar's summary, and the Markdown report, carry the table too
    assert json.loads((tmp_path / ".out.tif.segpipe.json").read_text())["summary"]["classes"] \
        == summary["classes"]
    markdown = summary_markdown(summary)
    assert summary["areas"]["note"] in markdown
    assert all(f"| class{k} | {counts[k]} |" in markdown for k in range(K))


def cell_polygons(mask, transform):
    """Each True cell of ``mask`` as a lon/lat box, unioned into one geometry."""
    rows, cols = np.nonzero(mask)
    x0, y0 = transform.c + transform.a * cols, transform.f + transform.e * rows
    return shapely.union_all(shapely.box(x0, y0, x0 + transform.a, y0 + transform.e))


def geodesic_area(geometry, geod, step):
    """pyproj's geodesic area of a lon/lat geometry whose edges are cut to ``step`` degrees.

    A cell's sides are one cell long; the union only joins them, so cutting its edges back to
    cell length keeps each side short enough that its geodesic is its parallel or meridian.
    """
    dense = shapely.segmentize(geometry, step)
    parts = getattr(dense, "geoms", [dense])  # a Polygon or a MultiPolygon
    return sum(abs(geod.geometry_area_perimeter(orient(p, 1.0))[0]) for p in parts)


def test_geographic_areas_agree_with_geodesic_polygons(tmp_path, model):
    labels, nodata = labels_and_nodata((60, 80), seed=2)
    step = 0.02
    transform = Affine(step, 0, 10.0, 0, -step, 62.0)  # 61–62° N: cells shrink row by row
    src = write_geotiff(
        tmp_path / "in.tif", one_hot(labels, K, nodata), crs=WGS84, transform=transform, nodata=0,
    )
    out = tmp_path / "out.tif"
    summary = segment(src, out, model, keep_workdir=True)
    assert summary["areas"]["kind"] == "geodesic" and summary["areas"]["unit"] == "m2"
    assert "WGS 84" in summary["areas"]["note"]
    assert summary["areas"]["pixel_unit"] == "degree"

    geod = pyproj.Geod(ellps="WGS84")
    for c in summary["classes"]:
        mask = (labels == c["label"]) & ~nodata
        expected = geodesic_area(cell_polygons(mask, transform), geod, step)
        assert c["pixels"] == mask.sum()
        assert c["area"] == pytest.approx(expected, rel=1e-3)
        assert c["area_ha"] == pytest.approx(expected / 1e4, rel=1e-3)
    # never degrees²: a cell here is about 1.1 km × 2.2 km
    assert summary["classes"][0]["area"] / summary["classes"][0]["pixels"] > 1e6

    # a rerun over the kept work directory reuses every marker (per-row counts read back)
    again = segment(src, out, model, overwrite=True)
    assert again["blocks_reused"] == again["blocks"] and again["blocks_computed"] == 0
    assert again["classes"] == summary["classes"]


@pytest.mark.parametrize(("ellps", "epsg"), [("clrk66", 4267), ("WGS84", 4326)])
def test_row_areas_equal_the_geodesic_area_of_one_cell(ellps, epsg):
    transform = (0.5, 0.0, -3.0, 0.0, -0.25, 80.0)
    info = RasterInfo("x.tif", "gtiff", 400, 10, 1, "uint8",
                      crs_wkt=pyproj.CRS.from_epsg(epsg).to_wkt(), transform=transform)
    basis = area_basis(info)
    assert basis.kind is AreaKind.GEODESIC
    areas = basis.row_areas(0, 400)
    geod = pyproj.Geod(ellps=ellps)
    for row in (0, 37, 199, 320, 399):  # 80° N down to 20° S
        top, bottom = 80.0 - 0.25 * row, 80.0 - 0.25 * (row + 1)
        lons = np.linspace(-3.0, -2.5, 51)  # the top and bottom follow their parallels
        ring_lons = [*lons, *lons[::-1]]
        ring_lats = [top] * 51 + [bottom] * 51
        expected = abs(geod.polygon_area_perimeter(ring_lons, ring_lats)[0])
        assert areas[row] == pytest.approx(expected, rel=1e-6)


def test_rotated_geographic_grid_is_pixels_only_and_says_why():
    info = RasterInfo("x.tif", "gtiff", 4, 4, 1, "uint8", crs_wkt=pyproj.CRS(4326).to_wkt(),
                      transform=(0.01, 0.001, 10.0, 0.001, -0.01, 50.0))
    basis = area_basis(info)
    assert basis.kind is AreaKind.PIXELS and "rotated" in basis.note


def test_microscopy_areas_in_square_micrometres(tmp_path, model):
    labels = blobs((48, 56), K, seed=3)
    # 250 nm across, 500 nm down: stated in nanometres, reported in µm
    src = write_ome_tiff(tmp_path / "in.ome.tif", one_hot(labels, K), "CYX",
                         pixel_size=(500.0, 250.0), unit="nm")
    out = tmp_path / "out.ome.tif"
    summary = segment(src, out, model)
    counts = np.bincount(labels.ravel(), minlength=K)
    areas = summary["areas"]
    assert (areas["kind"], areas["unit"], areas["pixel_unit"]) == ("microscopy", "um2", "um")
    np.testing.assert_allclose(areas["pixel_size"], [0.25, 0.5], rtol=1e-12)  # x, y
    total_mm2 = counts.sum() * 0.125 / 1e6
    for c in summary["classes"]:
        k = c["label"]
        assert c["pixels"] == counts[k]
        assert c["area"] == pytest.approx(counts[k] * 0.125, rel=1e-12)  # µm²
        assert c["area_mm2"] == pytest.approx(counts[k] * 0.125e-6, rel=1e-12)
        assert c["area_ha"] is None and c["density_unit"] == "per mm2"
        assert c["density"] == pytest.approx(c["objects"] / total_mm2, rel=1e-12)
    rows = read_csv(tmp_path / "out.areas.csv")
    assert [float(r["area_mm2"]) for r in rows] == [c["area_mm2"] for c in summary["classes"]]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_unknown_pixel_size_gives_pixel_counts_only_and_says_so(tmp_path, model):
    labels = blobs((40, 52), K, seed=4)
    src = write_geotiff(tmp_path / "in.tif", one_hot(labels, K), crs=None,
                        transform=Affine.identity())
    out = tmp_path / "out.tif"
    summary = segment(src, out, model)
    areas = summary["areas"]
    assert areas["kind"] == "pixels" and areas["unit"] is None and areas["pixel_size"] is None
    assert areas["note"].startswith("pixel counts only") and "no pixel size" in areas["note"]
    counts = np.bincount(labels.ravel(), minlength=K)
    for c in summary["classes"]:
        assert c["pixels"] == counts[c["label"]] and c["objects"] >= 1
        assert all(c[k] is None for k in ("area", "area_unit", "area_ha", "area_mm2",
                                          "density", "density_unit"))
    rows = read_csv(tmp_path / "out.areas.csv")
    assert all(r["area"] == r["density"] == "" for r in rows)
    assert [int(r["pixels"]) for r in rows] == list(counts)
    assert "pixel counts only" in summary_markdown(summary)


def test_zone_area_of_a_hemisphere_is_half_the_ellipsoid():
    from segpipe.pipeline.areas import zone_area

    geod = pyproj.Geod(ellps="WGS84")
    e = math.sqrt(geod.es)
    whole = 2 * math.pi * geod.a**2 * (1 + (1 - e * e) / e * math.atanh(e))  # surface area
    hemisphere = 2 * math.pi * zone_area(np.array([math.pi / 2]), geod.a, geod.f)[0]
    assert hemisphere == pytest.approx(whole / 2, rel=1e-12)
