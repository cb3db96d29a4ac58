"""Instance labels, measurements and detections of whole runs (issue 19), tiles smaller than the
objects, against the whole image computed in one piece.

The model draws a label map given in advance (``labelmodel.argmax_model`` on its one-hot
bands), so the oracle knows the labels exactly. Oracles: ``synthetic.oracle_instances``
(scikit-image's ``label`` / ``peak_local_max`` + ``watershed`` on the whole image, ids renumbered
by a loop over the pixels), ``skimage.measure.regionprops_table`` on that whole-image instance
image, and the files read back by rasterio, tifffile, zarr, json and shapely.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import tifffile
import zarr
from skimage.measure import regionprops_table

from segpipe.flows.inputs import segpipe_files
from segpipe.models.foundation import InputError, OutputExistsError
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.conftest import write_geotiff
from tests.pipeline.instances.synthetic import disks, oracle_instances
from tests.pipeline.labelmodel import argmax_model, blobs, one_hot

SEGPIPE = str(Path(sys.executable).parent / "segpipe")
CLASSES = 3
PIXEL_AREA = 30.0 * 30.0  # write_geotiff's 30 m UTM pixels: areas in m²
# 16-px tiles, blocks of 2 × 2 tiles (seams every 32 px); objects up to ~25 px across
GRID = {"tile": 16, "block_pixels": 32, "device": "cpu"}


def nuclei() -> np.ndarray:
    """Touching pairs of ellipses of classes 1 and 2, many across the 16- and 32-px seams."""
    return disks((80, 96), 3, count=9, radius=(3, 6), classes=2)


def scene(folder: Path, labels: np.ndarray) -> tuple[Path, Path]:
    src = write_geotiff(folder / "scene.tif", one_hot(labels, CLASSES))
    return src, argmax_model(folder / "argmax.pt2", CLASSES)


def read_tif(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        assert ds.dtypes[0] == "uint32"
        return ds.read(1).astype(np.int64)


@pytest.fixture(scope="module")
def watershed_run(tmp_path_factory):
    """One tiled run with separation, a minimum area, measurements and detections."""
    folder = tmp_path_factory.mktemp("watershed")
    labels = nuclei()
    src, model = scene(folder, labels)
    out = folder / "out.tif"
    summary = run_one(RunOptions.of(
        str(src), str(out), model=str(model), **GRID, measurements=True, detections=True,
        instance_min_distance=3, instance_max_diameter=32, instance_min_area=6 * PIXEL_AREA,
    ))
    expected = oracle_instances(labels, (1, 2), separate=True, min_distance=3, min_area=6)
    return folder, labels, summary, expected


def test_separated_instances_of_a_tiled_run_equal_the_whole_image(watershed_run):
    folder, labels, summary, expected = watershed_run
    np.testing.assert_array_equal(read_tif(folder / "out.instances.tif"), expected)
    plain = oracle_instances(labels, (1, 2), separate=False, min_area=6)
    assert expected.max() > plain.max() > 5  # touching objects were split
    assert summary["instances"]["clipped"] == 0
    assert summary["instances"]["total"] == expected.max()
    by_class = {c["label"]: c["instances"] for c in summary["instances"]["classes"]}
    first = {int(v): int(labels.ravel()[i]) for v, i in
             zip(*np.unique(expected.ravel(), return_index=True), strict=True) if v}
    assert by_class == {k: list(first.values()).count(k) for k in (1, 2)}
    # the objects column stays the 4-connected regions before separation, every size
    objects = {c["label"]: c["objects"] for c in summary["classes"]}
    assert objects[1] + objects[2] == oracle_instances(labels, (1, 2), separate=False).max()
    assert summary["instances"]["classes"][0]["density_unit"] == "per km2"


def test_measurements_equal_regionprops_of_the_whole_image(watershed_run):
    folder, labels, _, expected = watershed_run
    with open(folder / "out.measurements.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    bands = np.moveaxis(one_hot(labels, CLASSES), 0, -1)
    oracle = regionprops_table(
        expected, intensity_image=bands,
        properties=["label", "area", "centroid", "bbox", "perimeter", "eccentricity",
                    "solidity", "equivalent_diameter_area", "intensity_mean", "intensity_std"])
    assert [int(r["id"]) for r in rows] == oracle["label"].tolist()

    def column(name: str) -> np.ndarray:
        return np.array([float(r[name]) for r in rows])

    np.testing.assert_array_equal(column("area_pixels"), oracle["area"])
    np.testing.assert_allclose(column("area"), oracle["area"] * PIXEL_AREA, rtol=1e-12)
    for ours, theirs in [("centroid_row", "centroid-0"), ("centroid_col", "centroid-1"),
                         ("perimeter", "perimeter"), ("eccentricity", "eccentricity"),
                         ("solidity", "solidity"),
                         ("equivalent_diameter", "equivalent_diameter_area"),
                         ("mean_1", "intensity_mean-1"), ("std_2", "intensity_std-2")]:
        np.testing.assert_allclose(column(ours), oracle[theirs], rtol=1e-9, atol=1e-12)
    for k, name in enumerate(["bbox_row_min", "bbox_col_min", "bbox_row_max", "bbox_col_max"]):
        np.testing.assert_array_equal(column(name), oracle[f"bbox-{k}"])
    # map coordinates of the centroid through the input's transform (pixel centres)
    np.testing.assert_allclose(column("centroid_x"), 300000 + 30 * (oracle["centroid-1"] + 0.5))
    np.testing.assert_allclose(column("centroid_y"), 5e6 - 30 * (oracle["centroid-0"] + 0.5))
    classes = column("class").astype(int)
    assert set(classes) == {1, 2}
    for r, label in zip(rows, oracle["label"], strict=True):
        assert labels[expected == label][0] == int(r["class"])


def test_detections_read_back_match_the_instance_raster(watershed_run):
    folder, _, _, expected = watershed_run
    data = json.loads((folder / "out.detections.geojson").read_text())
    features = data["features"]
    assert len(features) == expected.max()
    ids = [f["properties"]["measurements"]["id"] for f in features]
    assert ids == list(range(1, expected.max() + 1))
    areas = np.bincount(expected.ravel())[1:]
    for f in features:
        assert f["properties"]["objectType"] == "detection"
        polygon = shapely.geometry.shape(f["geometry"])
        gid = int(f["properties"]["measurements"]["id"])
        assert polygon.area == pytest.approx(areas[gid - 1])
        rows, cols = np.nonzero(expected == gid)
        assert polygon.bounds == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def read_instances(out: Path) -> np.ndarray:
    name = out.name
    if name.endswith(".ome.zarr"):
        group = zarr.open_group(str(out), mode="r")
        assert "instances" in group["labels"].attrs.asdict().get(
            "labels", group["labels"].attrs.asdict().get("ome", {}).get("labels", []))
        return np.asarray(group["labels/instances/0"])[0].astype(np.int64)
    stem = name[: -len(".ome.tif")] if name.endswith(".ome.tif") else name[: -len(".tif")]
    companion = out.with_name(f"{stem}.instances{name[len(stem):]}")
    if name.endswith(".ome.tif"):
        return tifffile.imread(companion).astype(np.int64)
    return read_tif(companion)


@pytest.mark.parametrize("name", ["out.tif", "out.ome.tif", "out.ome.zarr"])
def test_plain_components_of_any_size_equal_the_whole_image(tmp_path, name):
    labels = blobs((70, 90), CLASSES, seed=4, sigma=2.0)  # regions far larger than a block
    src, model = scene(tmp_path, labels)
    out = tmp_path / name
    summary = run_one(RunOptions.of(str(src), str(out), model=str(model), **GRID,
                                    instance_labels=True, instance_method="components",
                                    instance_classes=("class2", 1)))
    expected = oracle_instances(labels, (1, 2), separate=False)
    np.testing.assert_array_equal(read_instances(out), expected)
    assert summary["instances"]["total"] == expected.max()
    assert max(np.bincount(expected.ravel())[1:]) > 32 * 32  # an object larger than a block


def test_changing_an_instance_setting_on_a_kept_workdir_does_not_rerun_the_model(tmp_path):
    labels = nuclei()
    src, model = scene(tmp_path, labels)
    out = tmp_path / "out.tif"
    common = {"model": str(model), **GRID, "instance_labels": True, "keep_workdir": True}
    first = run_one(RunOptions.of(str(src), str(out), instance_method="components", **common))
    assert first["blocks_computed"] == 9
    np.testing.assert_array_equal(read_tif(tmp_path / "out.instances.tif"),
                                  oracle_instances(labels, (1, 2), separate=False))
    second = run_one(RunOptions.of(str(src), str(out), instance_min_distance=3,
                                   instance_max_diameter=32, overwrite=True, **common))
    assert second["blocks_computed"] == 0 and second["blocks_reused"] == 9
    np.testing.assert_array_equal(read_tif(tmp_path / "out.instances.tif"),
                                  oracle_instances(labels, (1, 2), separate=True,
                                                   min_distance=3))
    # unchanged settings: up to date, nothing runs
    third = run_one(RunOptions.of(str(src), str(out), instance_min_distance=3,
                                  instance_max_diameter=32, **common))
    assert third.get("skipped") == "up to date"
    # the instance file deleted: no longer up to date (the output stands: --overwrite asked
    # for, never "up to date" with a file missing), then written again without the model
    (tmp_path / "out.instances.tif").unlink()
    with pytest.raises(OutputExistsError):
        run_one(RunOptions.of(str(src), str(out), instance_min_distance=3,
                              instance_max_diameter=32, **common))
    fourth = run_one(RunOptions.of(str(src), str(out), instance_min_distance=3,
                                   instance_max_diameter=32, overwrite=True, **common))
    assert "skipped" not in fourth and fourth["blocks_computed"] == 0
    np.testing.assert_array_equal(read_tif(tmp_path / "out.instances.tif"),
                                  oracle_instances(labels, (1, 2), separate=True,
                                                   min_distance=3))


@pytest.mark.slow  # a CLI process (Prefect's start): about 20 s
def test_the_command_line_writes_instances_measurements_and_detections(tmp_path):
    labels = nuclei()
    src, model = scene(tmp_path, labels)
    out = tmp_path / "scene.labels.tif"
    result = subprocess.run(
        [SEGPIPE, "run", "--input", str(src), "--output", str(out), "--model", str(model),
         "--tile", "16", "--block-pixels", "32", "--workers", "0", "--device", "cpu",
         "--quiet", "--instance-labels", "--instance-classes", "1,class2",
         "--instance-min-distance", "3", "--instance-max-diameter", "32", "--measurements",
         "--detections", "--summary", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    expected = oracle_instances(labels, (1, 2), separate=True, min_distance=3)
    np.testing.assert_array_equal(read_tif(tmp_path / "scene.labels.instances.tif"), expected)
    summary = json.loads((tmp_path / "s.json").read_text())
    summary = summary[0] if isinstance(summary, list) else summary
    assert summary["instances"]["total"] == expected.max()
    with open(tmp_path / "scene.labels.measurements.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == expected.max()
    features = json.loads((tmp_path / "scene.labels.detections.geojson").read_text())
    assert len(features["features"]) == expected.max()
    # serve never takes these files as inputs
    names = {p.name for p in tmp_path.iterdir()}
    ours = segpipe_files(tmp_path, names)
    assert {"scene.labels.instances.tif", "scene.labels.measurements.csv",
            "scene.labels.detections.geojson"} <= ours
    assert "scene.tif" not in ours


def test_bad_instance_settings_are_refused_before_any_block(tmp_path):
    src, model = scene(tmp_path, nuclei())
    out = tmp_path / "out.tif"
    with pytest.raises(InputError, match=r"--instance-classes 'nucleus'.*class0, class1"):
        run_one(RunOptions.of(str(src), str(out), model=str(model), **GRID,
                              instance_labels=True, instance_classes=("nucleus",)))
    assert not out.exists()
    with pytest.raises(InputError, match="--instance-min-distance 0"):
        RunOptions.of(str(src), str(out), instance_min_distance=0)
    with pytest.raises(InputError, match="--instance-method 'blobs'"):
        RunOptions.of(str(src), str(out), instance_method="blobs")


def test_an_interrupted_instance_pass_runs_again_to_the_same_bytes(tmp_path):
    """A pass killed part way leaves no ``instances.json``: the next run redoes it whole."""
    labels = nuclei()
    src, model = scene(tmp_path, labels)
    out, workdir = tmp_path / "out.tif", tmp_path / "wd"
    common = {"model": str(model), **GRID, "instance_labels": True, "keep_workdir": True,
              "instance_min_distance": 3, "instance_max_diameter": 32, "workdir": str(workdir)}
    run_one(RunOptions.of(str(src), str(out), **common))
    first = (tmp_path / "out.instances.tif").read_bytes()
    # what a kill part way through the pass leaves: its state gone, its array half rewritten
    (workdir / "instances.json").unlink()
    ids = zarr.open_array(str(workdir / "instances.zarr"), mode="r+")
    ids[:40] = 7
    again = run_one(RunOptions.of(str(src), str(out), overwrite=True, **common))
    assert again["blocks_computed"] == 0
    assert (tmp_path / "out.instances.tif").read_bytes() == first
    np.testing.assert_array_equal(
        read_tif(tmp_path / "out.instances.tif"),
        oracle_instances(labels, (1, 2), separate=True, min_distance=3))


def test_microscopy_areas_in_square_micrometres_and_density_per_mm2(tmp_path):
    from tests.io.iohelpers import write_ome_tiff

    labels = nuclei()
    src = write_ome_tiff(tmp_path / "cells.ome.tif", one_hot(labels, CLASSES), "CYX",
                         pixel_size=(0.5, 0.5), tile=16)
    model = argmax_model(tmp_path / "argmax.pt2", CLASSES)
    out = tmp_path / "cells.labels.ome.tif"
    summary = run_one(RunOptions.of(
        str(src), str(out), model=str(model), **GRID, measurements=True, detections=True,
        instance_min_distance=3, instance_max_diameter=32, instance_min_area=6 * 0.25))
    expected = oracle_instances(labels, (1, 2), separate=True, min_distance=3, min_area=6)
    got = tifffile.imread(tmp_path / "cells.labels.instances.ome.tif").astype(np.int64)
    np.testing.assert_array_equal(got, expected)
    image_mm2 = labels.size * 0.25 / 1e6
    rows = summary["instances"]["classes"]
    assert [r["density_unit"] for r in rows] == ["per mm2", "per mm2"]
    assert sum(r["density"] for r in rows) == pytest.approx(expected.max() / image_mm2)
    with open(tmp_path / "cells.labels.measurements.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    areas = np.bincount(expected.ravel())[1:]
    np.testing.assert_allclose([float(r["area"]) for r in table], areas * 0.25, rtol=1e-12)
    oracle = regionprops_table(expected, properties=["centroid"])
    np.testing.assert_allclose([float(r["centroid_x"]) for r in table],
                               (oracle["centroid-1"] + 0.5) * 0.5, rtol=1e-12)
    features = json.loads((tmp_path / "cells.labels.detections.geojson").read_text())["features"]
    # level-0 pixel coordinates (QuPath's), not micrometres
    assert [shapely.geometry.shape(f["geometry"]).area for f in features] == areas.tolist()


def test_detections_of_a_coarser_level_are_in_level0_pixels(tmp_path):
    from tests.io.iohelpers import write_ome_tiff

    full = blobs((96, 128), CLASSES, seed=2, sigma=3.0)
    src = write_ome_tiff(tmp_path / "slide.ome.tif", one_hot(full, CLASSES), "CYX",
                         pixel_size=(0.25, 0.25), sublevels=1, tile=16)
    model = argmax_model(tmp_path / "argmax.pt2", CLASSES)
    out = tmp_path / "slide.labels.ome.tif"
    run_one(RunOptions.of(str(src), str(out), model=str(model), **GRID, level=1,
                          detections=True, instance_method="components"))
    expected = oracle_instances(full[::2, ::2], (1, 2), separate=False)  # level 1's labels
    got = tifffile.imread(tmp_path / "slide.labels.instances.ome.tif").astype(np.int64)
    np.testing.assert_array_equal(got, expected)
    features = json.loads((tmp_path / "slide.labels.detections.geojson").read_text())["features"]
    assert len(features) == expected.max()
    for f in features:
        gid = int(f["properties"]["measurements"]["id"])
        rows, cols = np.nonzero(expected == gid)
        polygon = shapely.geometry.shape(f["geometry"])
        assert polygon.area == 4 * len(rows)  # one level-1 pixel is 2 × 2 level-0 pixels
        assert polygon.bounds == (2 * cols.min(), 2 * rows.min(), 2 * cols.max() + 2,
                                  2 * rows.max() + 2)


def test_with_probabilities_the_watershed_floods_the_class_probability(tmp_path):
    from scipy.ndimage import gaussian_filter

    labels = nuclei()
    rng = np.random.default_rng(1)
    field = gaussian_filter(rng.random(labels.shape), 2.0)
    strength = 1 + 3 * (field - field.min()) / np.ptp(field)  # logits 1 … 4: a varied surface
    bands = one_hot(labels, CLASSES).astype(np.float32) * strength.astype(np.float32)
    src = write_geotiff(tmp_path / "scene.tif", bands)
    model = argmax_model(tmp_path / "argmax.pt2", CLASSES)
    out = tmp_path / "out.tif"
    run_one(RunOptions.of(str(src), str(out), model=str(model), **GRID, probabilities=True,
                          instance_labels=True, instance_min_distance=2,
                          instance_max_diameter=32))
    with rasterio.open(tmp_path / "out.probabilities.tif") as ds:
        probabilities = ds.read().astype(np.float32)
    expected = oracle_instances(labels, (1, 2), separate=True, min_distance=2,
                                elevation=probabilities)
    got = read_tif(tmp_path / "out.instances.tif")
    np.testing.assert_array_equal(got, expected)
    distance = oracle_instances(labels, (1, 2), separate=True, min_distance=2)
    assert not np.array_equal(got, distance)  # the surface made a difference


def test_serve_never_takes_the_instance_files_as_inputs(watershed_run):
    folder = watershed_run[0]
    names = {p.name for p in folder.iterdir()}
    companions = {"out.instances.tif", "out.measurements.csv", "out.detections.geojson"}
    assert companions <= names
    ours = segpipe_files(folder, names)
    assert companions <= ours
    assert "scene.tif" not in ours
