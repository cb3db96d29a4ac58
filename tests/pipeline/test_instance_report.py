"""Instances in the report (issue 19, item 4): counts and densities per class in the summary, the
area table and the HTML report beside the components, the histogram of instance areas, and the
instance outlines of the quicklook.

One tiled microscopy run (an OME-TIFF with a 0.5 µm pixel: areas in µm², densities per mm²) of
a model drawing a label map given in advance (``labelmodel.argmax_model``) with touching
ellipses split by the watershed. Oracles: the instance raster read back by tifffile, the labels
read back by tifffile, ``skimage.measure.label`` / ``regionprops`` and numpy on them, the page
parsed by the stdlib HTML parser, the PNG decoded by PIL.
"""

from __future__ import annotations

import csv
import io
from html.parser import HTMLParser

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage.measure import label, regionprops

from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.report import areas_csv
from segpipe.pipeline.stages import run_one
from tests.io.iohelpers import write_ome_tiff
from tests.pipeline.instances.synthetic import disks
from tests.pipeline.labelmodel import argmax_model, one_hot
from tests.pipeline.test_htmlreport import decoded_pngs, parse

CLASSES = 3
PIXEL_UM = 0.5
PIXEL_AREA = PIXEL_UM**2  # µm²
MIN_AREA_PX = 40
# 16-px tiles, blocks of 2 × 2 tiles (seams every 32 px); objects up to ~25 px across
GRID = {"tile": 16, "block_pixels": 32, "device": "cpu"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiled run with separation and a minimum area; the labels and instances read back."""
    folder = tmp_path_factory.mktemp("instance_report")
    drawn = disks((80, 96), 3, count=9, radius=(3, 6), classes=2)
    src = write_ome_tiff(folder / "scan.ome.tif", one_hot(drawn, CLASSES), "CYX",
                         pixel_size=(PIXEL_UM, PIXEL_UM), tile=16)
    model = argmax_model(folder / "argmax.pt2", CLASSES)
    out = folder / "out.ome.tif"
    summary = run_one(RunOptions.of(
        str(src), str(out), model=str(model), **GRID, instance_labels=True,
        instance_min_distance=3, instance_max_diameter=32,
        instance_min_area=MIN_AREA_PX * PIXEL_AREA,
    ))
    labels = tifffile.imread(out).astype(np.int64)
    ids = tifffile.imread(folder / "out.instances.ome.tif").astype(np.int64)
    return folder, summary, labels, ids


def per_class_instances(labels: np.ndarray, ids: np.ndarray) -> dict[int, int]:
    """Instances of each class: distinct ids over the pixels of that class."""
    return {k: len(np.unique(ids[(labels == k) & (ids > 0)])) for k in (1, 2)}


def components(labels: np.ndarray) -> dict[int, int]:
    return {k: int(label(labels == k, connectivity=1).max()) for k in range(CLASSES)}


def density_per_mm2(count: int, labels: np.ndarray) -> float:
    classed_mm2 = (labels < CLASSES).sum() * PIXEL_AREA / 1e6
    return count / classed_mm2


def instance_areas(ids: np.ndarray) -> np.ndarray:
    return np.array([r.area for r in regionprops(ids)], np.float64) * PIXEL_AREA


def test_the_run_separates_touching_objects_and_drops_small_ones(run):
    _, summary, labels, ids = run
    counts = per_class_instances(labels, ids)
    comps = components(labels)
    assert counts[1] + counts[2] == ids.max() == summary["instances"]["total"]
    assert counts[1] > comps[1] or counts[2] > comps[2]  # some clump was split
    assert min(r.area for r in regionprops(ids)) >= MIN_AREA_PX
    assert ((labels > 0) & (ids == 0)).any()  # some smaller piece was dropped


def test_the_area_table_has_instances_beside_components(run):
    _, summary, labels, ids = run
    rows = {int(r["label"]): r for r in csv.DictReader(io.StringIO(areas_csv(summary)))}
    counts, comps = per_class_instances(labels, ids), components(labels)
    for k in range(CLASSES):
        assert int(rows[k]["objects"]) == comps[k]  # the components, as every run reports
        assert rows[k]["density_unit"] == "per mm2"
    assert rows[0]["instances"] == rows[0]["instances_density"] == ""  # not an instance class
    for k in (1, 2):
        assert int(rows[k]["instances"]) == counts[k]
        assert float(rows[k]["instances_density"]) == pytest.approx(
            density_per_mm2(counts[k], labels), rel=1e-12)
        assert rows[k]["instances_density_unit"] == "per mm2"


def test_an_area_table_without_instances_leaves_their_cells_empty(run):
    _, summary, _, _ = run
    text = areas_csv({**summary, "instances": None})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == CLASSES
    assert all(r["instances"] == r["instances_density"] == "" and r["objects"] for r in rows)


class Bars(HTMLParser):
    """The histogram's bars: their data attributes and heights."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "rect" and attrs.get("class") == "bar":
            self.bars.append(attrs)


def test_the_html_report_shows_both_counts_and_the_histogram_of_instance_areas(run):
    folder, _, labels, ids = run
    html = (folder / "out.report.html").read_text("utf-8")
    page = parse(html)
    header = next(r for r in page.rows if "components" in r)
    assert header[6:10] == ["components", "component density", "instances", "instance density"]
    counts, comps = per_class_instances(labels, ids), components(labels)
    rows = {r[1]: r for r in page.rows if len(r) == 10 and r[1].isdigit()}
    for k in range(CLASSES):
        assert rows[str(k)][6] == f"{comps[k]:,}"
    for k in (1, 2):
        assert rows[str(k)][8] == f"{counts[k]:,}"
        value, unit = rows[str(k)][9].rsplit(" per ", 1)
        assert unit == "mm²"
        assert float(value.replace(",", "")) == pytest.approx(
            density_per_mm2(counts[k], labels), rel=5e-3)  # three significant digits
    text = " ".join(page.text)
    assert "Components: the 4-connected regions" in text
    assert "after a watershed separated touching objects" in text
    assert f"--instance-min-area {MIN_AREA_PX * PIXEL_AREA:g} µm² ({MIN_AREA_PX} px)" in text
    assert "Instance areas" in page.text and "Black lines: the outlines" in text
    bars = Bars()
    bars.feed(html)
    areas = instance_areas(ids)
    lows = np.array([float(b["data-low"]) for b in bars.bars])
    highs = np.array([float(b["data-high"]) for b in bars.bars])
    edges = np.append(lows, highs[-1])
    np.testing.assert_array_equal(lows[1:], highs[:-1])
    assert edges[0] == areas.min() and edges[-1] == areas.max()
    np.testing.assert_allclose(np.diff(np.log(edges)), np.log(edges[-1] / edges[0])
                               / len(lows), rtol=1e-9)  # log-spaced
    shown = np.array([int(b["data-count"]) for b in bars.bars])
    np.testing.assert_array_equal(shown, np.histogram(areas, bins=edges)[0])
    heights = np.array([float(b["height"]) for b in bars.bars])
    np.testing.assert_allclose(heights / heights.max(), shown / shown.max(), atol=1e-4)
    assert len(decoded_pngs(page)) == 2  # the quicklook and the bar chart, as without instances


def test_the_quicklook_outlines_the_instances(run):
    folder, _, labels, ids = run
    with Image.open(folder / "out.quicklook.png") as png:
        image = np.asarray(png.convert("RGBA"))[: ids.shape[0], : ids.shape[1]]
    edge = np.zeros(ids.shape, bool)  # the id differs from the right or lower neighbour's
    edge[:, :-1] |= np.diff(ids, axis=1) != 0
    edge[:-1, :] |= np.diff(ids, axis=0) != 0
    black = (image[..., :3] == 0).all(axis=2)  # no class colour blends to black
    np.testing.assert_array_equal(black, edge)
    assert edge.any() and (labels > 0).any()
