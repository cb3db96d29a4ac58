"""Vector labels burnt onto the image grid: polygons as rasterio burns them, points by hand."""

from __future__ import annotations

import numpy as np
import pyogrio.raw
import pytest
import rasterio.features
from affine import Affine
from pyproj import Transformer
from shapely.geometry import Point, Polygon

from segpipe.models.foundation import InputError
from segpipe.pipeline.io.base import open_raster
from segpipe.pipeline.tiling import Window
from segpipe.pipeline.train.vectors import read_vector_labels
from tests.conftest import write_geotiff

TRANSFORM = Affine(30.0, 0, 300000.0, 0, -30.0, 5000000.0)
FIELD = Polygon([(300100, 4999900), (300700, 4999950), (300650, 4999400), (300150, 4999450)])
HOUSE = Polygon([(300900, 4999300), (301300, 4999300), (301300, 4998900), (300900, 4998900)])
# points at pixel centres: (row, col) = (30, 5) and (3, 40)
POINTS = [Point(300000 + 30 * 5.5, 5000000 - 30 * 30.5), Point(300000 + 30 * 40.5,
                                                               5000000 - 30 * 3.5)]
NAMES = ["background", "field", "house"]


def write_labels(path, geoms, classes, crs="EPSG:32621"):
    pyogrio.raw.write(str(path), np.array([g.wkb for g in geoms], dtype=object),
                      [np.array(classes, dtype=object if isinstance(classes[0], str) else None)],
                      ["cls"], crs=crs,
                      geometry_type="Unknown", driver="GPKG")
    return path


@pytest.fixture
def image(tmp_path):
    path = write_geotiff(tmp_path / "img.tif", np.zeros((1, 40, 50), np.uint8),
                         transform=TRANSFORM)
    with open_raster(path) as reader:
        return reader.info


def test_polygons_and_points_rasterize_onto_the_grid(tmp_path, image):
    path = write_labels(tmp_path / "labels.gpkg", [FIELD, HOUSE, *POINTS],
                        ["field", "house", "house", "field"])
    labels, names = read_vector_labels(str(path), "cls", NAMES, image, point_radius=1)
    assert names == NAMES
    classes, instances = labels.read(Window(0, 0, 40, 50))
    expected = rasterio.features.rasterize([(FIELD, 1), (HOUSE, 2)], out_shape=(40, 50),
                                           transform=TRANSFORM, fill=-1, dtype="int32")
    ids = rasterio.features.rasterize([(FIELD, 1), (HOUSE, 2)], out_shape=(40, 50),
                                      transform=TRANSFORM, fill=0, dtype="int32")
    for (row, col), cls, fid in (((30, 5), 2, 3), ((3, 40), 1, 4)):  # discs of radius 1
        for dr, dc in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
            expected[row + dr, col + dc] = cls
            ids[row + dr, col + dc] = fid
    np.testing.assert_array_equal(classes, expected)
    np.testing.assert_array_equal(instances, ids)
    assert (classes == 1).sum() > 100 and (classes == 2).sum() > 100


def test_windows_agree_with_the_whole_grid_and_outside_is_unlabelled(tmp_path, image):
    path = write_labels(tmp_path / "labels.gpkg", [FIELD, HOUSE, *POINTS], [1, 2, 2, 1])
    labels, names = read_vector_labels(str(path), "cls", None, image, point_radius=0)
    assert names is None  # classes given as numbers
    whole, _ = labels.read(Window(0, 0, 40, 50))
    part, _ = labels.read(Window(-5, 20, 30, 40))  # above the image and past its right edge
    np.testing.assert_array_equal(part[5:, :30], whole[:25, 20:])
    assert (part[:5] == -1).all() and (part[:, 30:] == -1).all()
    assert whole[30, 5] == 2 and whole[29, 5] != 2  # a point is one pixel without a radius


def test_points_are_reprojected_to_the_image_crs(tmp_path, image):
    to_wgs84 = Transformer.from_crs("EPSG:32621", "EPSG:4326", always_xy=True)
    points = [Point(*to_wgs84.transform(p.x, p.y)) for p in POINTS]
    path = write_labels(tmp_path / "wgs84.gpkg", points, ["house", "field"], crs="EPSG:4326")
    labels, _ = read_vector_labels(str(path), "cls", NAMES, image)
    classes, _ = labels.read(Window(0, 0, 40, 50))
    assert set(map(tuple, np.argwhere(classes >= 0))) == {(30, 5), (3, 40)}
    assert classes[30, 5] == 2 and classes[3, 40] == 1


def test_unknown_class_name_and_missing_field(tmp_path, image):
    path = write_labels(tmp_path / "labels.gpkg", [FIELD], ["forest"])
    with pytest.raises(InputError, match=r"classes \['forest'\].*--classes"):
        read_vector_labels(str(path), "cls", NAMES, image)
    with pytest.raises(InputError, match="--class-field 'kind'"):
        read_vector_labels(str(path), "kind", NAMES, image)
