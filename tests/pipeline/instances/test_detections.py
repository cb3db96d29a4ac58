"""QuPath detections read back by ``json`` and ``shapely``: one feature per instance, each
polygon's area its pixel count and its centroid that of its pixels (oracle: the whole-image
instance labels of ``synthetic.oracle_instances`` and numpy on them)."""

from __future__ import annotations

import json

import numpy as np
import pyogrio.raw
import shapely
from shapely.geometry import shape

from segpipe.pipeline.instances.block import BlockWindow, block_instances
from segpipe.pipeline.instances.canonical import global_ids
from segpipe.pipeline.instances.detections import detection_features, write_detections
from segpipe.pipeline.instances.measure import Scale, measure_objects
from segpipe.pipeline.instances.options import InstanceOptions
from tests.pipeline.instances.synthetic import disks, oracle_instances, tiles

OPTIONS = InstanceOptions(classes=(1, 2), min_distance=3, min_area_pixels=5, max_diameter=30)
NAMES = ["background", "nucleus", "cell"]
COLORS = [(0, 0, 0), (200, 0, 0), (0, 0, 200)]


def test_detections_read_back_match_the_instance_raster(tmp_path):
    labels = disks((64, 83), 4, count=10, radius=(3, 7), classes=2)
    intensity = np.random.default_rng(0).random(labels.shape)

    def blocks():
        found = []
        for _, core in tiles(labels.shape, 17):
            window = BlockWindow.around(core, OPTIONS.max_diameter, labels.shape)
            found.append((window, block_instances(labels[window.read.slices], window, OPTIONS)))
        for (window, block), gid in zip(found, global_ids([b.anchors for _, b in found])):
            table = measure_objects(block.ids, block.origin, global_ids=gid,
                                    classes=block.classes,
                                    intensity=intensity[window.read.slices], scale=Scale())
            yield detection_features(block.ids, block.origin, global_ids=gid,
                                     classes=block.classes, names=NAMES, colors=COLORS,
                                     measurements=table)

    path = tmp_path / "scan.detections.geojson"
    written = write_detections(str(path), blocks())
    collection = json.loads(path.read_text(encoding="utf-8"))
    whole = oracle_instances(labels, (1, 2), separate=True, min_distance=3, min_area=5)
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == written == whole.max() > 10
    seen = set()
    for feature in collection["features"]:
        properties = feature["properties"]
        assert properties["objectType"] == "detection"
        gid = int(properties["measurements"]["id"])
        seen.add(gid)
        pixels = np.argwhere(whole == gid)
        k = int(labels[tuple(pixels[0])])
        assert properties["classification"] == {"name": NAMES[k], "color": list(COLORS[k])}
        polygon = shape(feature["geometry"])
        assert polygon.is_valid
        assert polygon.area == len(pixels) == properties["measurements"]["area_pixels"]
        cx, cy = polygon.centroid.x, polygon.centroid.y  # pixel corners: centres at +0.5
        np.testing.assert_allclose((cy, cx), pixels.mean(axis=0) + 0.5, rtol=1e-9)
    assert seen == set(range(1, int(whole.max()) + 1))
    # and GDAL's GeoJSON driver reads the same polygons
    _, _, wkb, _ = pyogrio.raw.read(str(path))
    assert sorted(shapely.area(shapely.from_wkb(wkb)).tolist()) == sorted(
        np.bincount(whole.ravel())[1:].astype(float).tolist())


def test_an_outline_keeps_its_hole_and_its_offset():
    ids = np.zeros((12, 12), np.uint32)
    ids[2:10, 3:11] = 1
    ids[5:7, 6:8] = 0  # a hole of 4 pixels
    ids[0, 0] = 2
    dot, ring = detection_features(ids, (100, 200), global_ids=np.array([7, 3]),  # by id
                                   classes=np.array([1, 5]), names=NAMES, colors=COLORS)
    assert dot["properties"]["measurements"] == {"id": 3}
    assert ring["properties"]["classification"] == {"name": "nucleus", "color": [200, 0, 0]}
    assert dot["properties"]["classification"] == {"name": "class 5", "color": [128, 128, 128]}
    assert shape(dot["geometry"]).bounds == (200, 100, 201, 101)
    polygon = shape(ring["geometry"])
    assert len(polygon.interiors) == 1 and polygon.area == 64 - 4
    assert polygon.bounds == (203, 102, 211, 110)
