"""``--measurements-format parquet`` and ``--detections-format gpkg`` of tiled runs (issue 19).

The same scene and settings as ``tests/pipeline/test_instances_run.py``'s watershed run, run
twice: once to CSV + GeoJSON, once to Parquet + GeoPackage. Oracles: the files read back by
pyarrow.parquet, Python's csv, GDAL (pyogrio) and shapely; ``skimage.measure.regionprops_table``
and numpy pixel counts on the whole-image instance image of ``synthetic.oracle_instances``.
"""

from __future__ import annotations

import csv
import sys

import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pyogrio.raw
import pytest
import shapely
from skimage.measure import regionprops_table

from segpipe.flows.inputs import segpipe_files
from segpipe.models.foundation import InputError, OutputExistsError
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.pipeline.instances.synthetic import oracle_instances
from tests.pipeline.labelmodel import one_hot
from tests.pipeline.test_instances_run import CLASSES, GRID, PIXEL_AREA, nuclei, scene

SETTINGS = {"measurements": True, "detections": True, "instance_min_distance": 3,
            "instance_max_diameter": 32, "instance_min_area": 6 * PIXEL_AREA}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiled run written as CSV + GeoJSON (``plain.*``), one as Parquet + GPKG (``typed.*``)."""
    folder = tmp_path_factory.mktemp("formats")
    labels = nuclei()
    src, model = scene(folder, labels)
    common = {"model": str(model), **GRID, **SETTINGS}
    run_one(RunOptions.of(str(src), str(folder / "plain.tif"), **common))
    typed = RunOptions.of(str(src), str(folder / "typed.tif"), measurements_format="parquet",
                          detections_format="gpkg", **common)
    run_one(typed)
    expected = oracle_instances(labels, (1, 2), separate=True, min_distance=3, min_area=6)
    return folder, labels, expected, typed


def test_parquet_measurements_equal_the_csv_and_regionprops(runs):
    folder, labels, expected, _ = runs
    parquet = pq.ParquetFile(folder / "typed.measurements.parquet")
    table = parquet.read().to_pydict()
    with open(folder / "plain.measurements.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(table) == list(rows[0])  # the same columns, in the same order
    assert table["id"] == list(range(1, expected.max() + 1))
    for name in table:
        typed = np.array([np.nan if v is None else v for v in table[name]], np.float64)
        text = np.array([float(r[name]) if r[name] else np.nan for r in rows])
        np.testing.assert_allclose(typed, text, rtol=1e-12, equal_nan=True, err_msg=name)
    schema = parquet.schema_arrow
    assert str(schema.field("id").type) == "int64" and str(schema.field("area").type) == "double"
    assert schema.metadata[b"area_unit"] == b"m2"
    assert parquet.num_row_groups > 1  # written block row by block row, not all at once
    bands = np.moveaxis(one_hot(labels, CLASSES), 0, -1)
    oracle = regionprops_table(expected, intensity_image=bands, properties=[
        "label", "area", "centroid", "bbox", "perimeter", "solidity", "intensity_mean"])
    np.testing.assert_array_equal(table["area_pixels"], oracle["area"])
    np.testing.assert_allclose(table["area"], oracle["area"] * PIXEL_AREA, rtol=1e-12)
    for ours, theirs in [("centroid_row", "centroid-0"), ("centroid_col", "centroid-1"),
                         ("perimeter", "perimeter"), ("solidity", "solidity"),
                         ("mean_2", "intensity_mean-2")]:
        np.testing.assert_allclose(table[ours], oracle[theirs], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(table["bbox_col_max"], oracle["bbox-3"])
    first = {int(v): int(labels.ravel()[i]) for v, i in
             zip(*np.unique(expected.ravel(), return_index=True), strict=True) if v}
    assert table["class"] == [first[i] for i in table["id"]]


def test_gpkg_detections_read_back_by_gdal_match_the_instance_raster(runs):
    folder, _, expected, _ = runs
    meta, _, wkb, fields = pyogrio.raw.read(folder / "typed.detections.gpkg")
    columns = dict(zip(meta["fields"].tolist(), fields, strict=True))
    info = pyogrio.read_info(folder / "typed.detections.gpkg")
    assert info["layer_name"] == "detections" and info["crs"] is None  # level-0 pixels
    assert info["layer_metadata"]["area_unit"] == "m2"
    assert info["geometry_type"] == "MultiPolygon"
    count = int(expected.max())
    assert len(wkb) == count
    assert columns["id"].tolist() == list(range(1, count + 1))
    assert set(columns["objectType"]) == {"detection"}
    assert set(columns["classification"]) == {"class1", "class2"}
    areas = np.bincount(expected.ravel())[1:]
    np.testing.assert_array_equal(columns["area_pixels"], areas)
    np.testing.assert_allclose(columns["area"], areas * PIXEL_AREA, rtol=1e-12)
    for gid, blob in zip(columns["id"].tolist(), wkb, strict=True):
        polygon = shapely.from_wkb(blob)
        assert polygon.area == pytest.approx(areas[gid - 1])
        rows, cols = np.nonzero(expected == gid)
        assert polygon.bounds == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def test_the_typed_files_are_companions_of_the_output(runs):
    folder, _, _, typed = runs
    names = {p.name for p in folder.iterdir()}
    files = {"typed.measurements.parquet", "typed.detections.gpkg"}
    assert files <= names and not {"typed.measurements.csv", "typed.detections.geojson"} & names
    assert files <= segpipe_files(folder, names)  # never taken as inputs
    assert run_one(typed).get("skipped") == "up to date"
    gpkg = folder / "typed.detections.gpkg"
    kept = gpkg.read_bytes()
    gpkg.unlink()
    try:  # a companion missing: not up to date, and the output stands (no --overwrite)
        with pytest.raises(OutputExistsError):
            run_one(typed)
    finally:
        gpkg.write_bytes(kept)


def test_parquet_without_pyarrow_is_refused_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an environment without it raises
    with pytest.raises(InputError, match=r"needs pyarrow.*segpipe\[parquet\]") as caught:
        RunOptions.of(str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), measurements=True,
                      measurements_format="parquet")
    assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match="--detections-format 'shp' is not one of geojson, gpkg"):
        RunOptions.of(str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), detections=True,
                      detections_format="shp")
