"""The quicklook: the input from its own pyramid at a bounded size, the classes blended over it.

Oracles: the source pixels are read back with rasterio / tifffile (never through segpipe), the
stretch is known by construction (each band holds more than 2 % of its lowest and of its
highest value, so its 2nd..98th percentiles are exactly those values), and the blend is
computed with numpy.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import rasterio
import tifffile
from affine import Affine
from PIL import Image
from rasterio.enums import Resampling
from rasterio.windows import Window as RioWindow

from segpipe.pipeline.io.overview import overview_level, overview_windows, read_overview
from segpipe.pipeline.io.zarrstore import create_array
from segpipe.pipeline.legend import LegendEntry
from segpipe.pipeline.quicklook import (
    ALPHA,
    QuicklookSpec,
    display_bands,
    nice_length,
    write_quicklook,
)
from tests.conftest import UTM_21N, WGS84, write_geotiff
from tests.io.iohelpers import write_ome_tiff

COLORS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48))
NAMES = ("tumour", "stroma", "fat", "absent")
LOW, HIGH = 10, 210  # every band's 2nd and 98th percentile by construction


def classes(pixels=(None, None, None, 0)) -> tuple[LegendEntry, ...]:
    return tuple(
        LegendEntry(i, name, color, pixels=p, area=f"{i} ha")
        for i, (name, color, p) in enumerate(zip(NAMES, COLORS, pixels))
    )


def known_stretch_image(bands: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Values in [LOW, HIGH], with 10 % of the rows at LOW and 10 % at HIGH in every band."""
    data = np.random.default_rng(seed).integers(LOW, HIGH + 1, (bands, h, w), dtype=np.uint8)
    data[:, : h // 10] = LOW
    data[:, h - h // 10 :] = HIGH
    return data


def expected(value: np.ndarray, label: int | None) -> np.ndarray:
    """The quicklook pixel of a source pixel ``value`` (3 bands) under ``label``."""
    stretched = (value.astype(np.float64) - LOW) / (HIGH - LOW) * 255
    if label is None:
        return np.rint(stretched)
    return np.rint((1 - ALPHA) * stretched + ALPHA * np.asarray(COLORS[label], np.float64))


def labels_zarr(path, labels: np.ndarray, chunk: int = 64) -> str:
    create_array(path, labels.shape, (chunk, chunk), "uint8", fill_value=255)[:] = labels
    return str(path)


# --------------------------------------------------------------------- a 20k x 20k raster

BIG = 20_000
REGION = (slice(4096, 6144), slice(8192, 10240))  # the only data in the big raster


@pytest.fixture(scope="module")
def sparse_scene(tmp_path_factory):
    """A 20000 x 20000 3-band GeoTIFF, tiled and compressed, empty (nodata 0) but one region;
    labels in a Zarr of the same size, chunked like segpipe's, classes only in that region."""
    folder = tmp_path_factory.mktemp("sparse")
    path = folder / "scene.tif"
    profile = {
        "driver": "GTiff", "height": BIG, "width": BIG, "count": 3, "dtype": "uint8",
        "crs": UTM_21N, "transform": Affine(10.0, 0, 300000.0, 0, -10.0, 5000000.0),
        "nodata": 0, "tiled": True, "blockxsize": 512, "blockysize": 512,
        "compress": "deflate", "sparse_ok": True, "bigtiff": "yes",
    }
    rows, cols = REGION
    data = known_stretch_image(3, rows.stop - rows.start, cols.stop - cols.start)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, window=RioWindow(cols.start, rows.start, data.shape[2], data.shape[1]))
    labels = create_array(folder / "labels.zarr", (BIG, BIG), (512, 512), "uint8",
                          fill_value=255)
    region = np.zeros(data.shape[1:], np.uint8)
    region[:, 1024:] = 1
    region[1500:1800, 300:700] = 2
    labels[rows, cols] = region
    return path, str(folder / "labels.zarr")


def test_quicklook_of_a_20k_raster_is_bounded_and_blends_the_classes(sparse_scene, tmp_path):
    path, labels = sparse_scene
    spec = QuicklookSpec(input=str(path), labels_path=labels, classes=classes(),
                         label_nodata=255)
    tracemalloc.start()
    try:
        result = write_quicklook(spec, tmp_path / "q.png")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 20000 / 1536 -> every 14th pixel; far less memory than the 1.2 GB image
    assert result.step == 14 and result.shape == (1429, 1429)
    assert peak < 150e6, peak
    png = np.asarray(Image.open(tmp_path / "q.png"))
    assert png.shape[2] == 4 and png.shape[1] == 1429 and 1429 < png.shape[0] < 1429 + 200
    # nodata (value 0 in every band, outside the region) is transparent
    assert png[0, 0, 3] == 0 and png[1428, 1428, 3] == 0
    rows, cols = REGION
    with rasterio.open(path) as ds:
        for (i, j), label in [((320, 600), 0), ((320, 700), 1), ((400, 620), 2),
                              ((300, 590), 0)]:
            r, c = i * 14, j * 14
            assert rows.start <= r < rows.stop and cols.start <= c < cols.stop
            value = ds.read(window=RioWindow(c, r, 1, 1))[:, 0, 0]
            np.testing.assert_allclose(png[i, j, :3], expected(value, label), atol=1)
            assert png[i, j, 3] == 255
    # the legend lists the classes present (all but "absent", whose count is 0)
    assert [e.name for e in result.legend] == ["tumour", "stroma", "fat"]
    # a scale bar of a round length up to a quarter of the width: 1429 px x 140 m / 4 = 50.0 km
    bar = result.scale_bar
    assert bar is not None and (bar.length, bar.unit, bar.text) == (50, "km", "50 km")
    assert bar.pixels == round(50_000 / (10 * 14))


def test_overview_reads_the_coarsest_level_that_is_large_enough(tmp_path):
    data = np.arange(3 * 512 * 768, dtype=np.uint32).reshape(3, 512, 768).astype(np.uint16)
    path = write_geotiff(tmp_path / "p.tif", data)
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4], Resampling.nearest)
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2, 4]
    view = read_overview(path, 150, bands=[2, 0])
    with rasterio.open(path, overview_level=1) as ds:  # 128 x 192: the coarsest >= 150
        level = ds.read()
    assert view.info.level == 2 and view.step == 2
    np.testing.assert_array_equal(view.pixels, level[[2, 0], ::2, ::2])
    assert overview_level([(512, 768), (256, 384), (128, 192)], 1000) == 0
    assert overview_level([(512, 768), (256, 384), (128, 192)], 384) == 1


def test_overview_windows_are_bounded_and_cover_every_sample():
    for height, width, step, pixels in [(1000, 700, 3, 10_000), (50, 9000, 400, 10_000)]:
        seen = set()
        for w in overview_windows(height, width, step, pixels):
            assert w.size <= pixels and w.row % step == 0 and w.col % step == 0
            seen |= {(r, c) for r in range(w.row, w.row_stop, step)
                     for c in range(w.col, w.col_stop, step)}
        assert seen == {(r, c) for r in range(0, height, step) for c in range(0, width, step)}


# ------------------------------------------------------------------------------------ slides

LABEL_RGB, MACRO_RGB = (255, 0, 255), (0, 255, 255)


def write_svs(path, scan: np.ndarray) -> None:
    """An Aperio-like SVS: the scan (tiled) and a 4x level, a thumbnail, and a label and a
    macro image bigger than the small level, each one flat distinctive colour."""
    h, w = scan.shape[:2]
    desc = (f"Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] (256x256) RGB"
            "|AppMag = 20|MPP = 0.5|Filename = patient-0042")
    opts = {"photometric": "rgb", "compression": "zlib", "metadata": None}
    label = np.broadcast_to(np.array(LABEL_RGB, np.uint8), (600, 600, 3))
    macro = np.broadcast_to(np.array(MACRO_RGB, np.uint8), (700, 1400, 3))
    with tifffile.TiffWriter(path) as tif:
        tif.write(scan, tile=(256, 256), description=desc, **opts)
        tif.write(scan[::16, ::16], description="Aperio Image Library v12.0.15 \r\nthumb", **opts)
        tif.write(scan[::4, ::4], tile=(64, 64), description="Aperio Image Library v12", **opts)
        tif.write(label, subfiletype=1, description="Aperio Image Library v12\r\nlabel", **opts)
        tif.write(macro, subfiletype=9, description="Aperio Image Library v12\r\nmacro", **opts)


def test_slide_quicklook_reads_the_scan_pyramid_only(tmp_path):
    scan = known_stretch_image(3, 1024, 1536, seed=3).transpose(1, 2, 0).copy()
    path = tmp_path / "slide.svs"
    write_svs(path, scan)
    with tifffile.TiffFile(path) as tif:  # the file holds what a real slide holds
        assert tif.is_svs
        assert [s.name for s in tif.series] == ["Baseline", "Thumbnail", "Label", "Macro"]
        level1 = tif.series[0].levels[1].asarray()
    # labels on level 0, constant over 8 x 8 blocks (one overview pixel)
    pattern = (np.add.outer(np.arange(128) // 16, np.arange(192) // 24) % 4).astype(np.uint8)
    pattern[:20, :20] = 255
    labels = labels_zarr(tmp_path / "labels.zarr", np.kron(pattern, np.ones((8, 8), np.uint8)))
    spec = QuicklookSpec(input=str(path), labels_path=labels, classes=classes((5, 5, 5, 5)),
                         label_nodata=255, max_side=300)
    result = write_quicklook(spec, tmp_path / "slide.quicklook.png")
    assert (result.level, result.step, result.shape) == (1, 2, (128, 192))
    png = np.asarray(Image.open(tmp_path / "slide.quicklook.png"))
    image = png[:128, :192]
    # equal to the scan's own level 1, stretched and blended: nothing else is in it
    source = level1[::2, ::2].astype(np.float64)
    want = np.rint((source - LOW) / (HIGH - LOW) * 255)
    classed = pattern != 255
    colors = np.array(COLORS, np.float64)[np.where(classed, pattern, 0)]
    want[classed] = np.rint((1 - ALPHA) * want[classed] + ALPHA * colors[classed])
    np.testing.assert_allclose(image[..., :3], want, atol=1)
    assert (image[..., 3] == 255).all()
    for rgb in (LABEL_RGB, MACRO_RGB):
        assert not (png[..., :3] == rgb).all(axis=-1).any()
    # micrometres: 0.5 um x 4 (level 1) x 2 (step) per overview pixel
    bar = result.scale_bar
    assert bar is not None and bar.unit == "µm"
    assert bar.pixels == round(bar.length / 4.0) and bar.pixels <= 192 // 4
    # nothing of the image description (the slide's file name) is copied into the PNG
    assert b"patient" not in (tmp_path / "slide.quicklook.png").read_bytes()
    assert not Image.open(tmp_path / "slide.quicklook.png").info.get("Description")


def test_labels_of_another_level_are_mapped_onto_the_overview(tmp_path):
    """A run at level 1 of an OME-TIFF pyramid; the quicklook comes from level 2."""
    data = known_stretch_image(3, 512, 768, seed=5)
    path = write_ome_tiff(tmp_path / "img.ome.tif", data, "CYX", pixel_size=(0.25, 0.25),
                          sublevels=2)
    pattern = (np.add.outer(np.arange(32), np.arange(48)) % 3).astype(np.uint8)
    labels = labels_zarr(tmp_path / "l.zarr", np.kron(pattern, np.ones((8, 8), np.uint8)))
    spec = QuicklookSpec(input=str(path), labels_path=labels, classes=classes(),
                         label_nodata=255, max_side=192)
    result = write_quicklook(spec, tmp_path / "q.png")
    assert (result.level, result.step, result.shape) == (2, 1, (128, 192))
    level2 = tifffile.imread(path, series=0, level=2).astype(np.float64)  # (3, 128, 192)
    # one label-level pixel is 2 x 2 overview pixels: pattern blocks of 4 x 4
    under = np.kron(pattern, np.ones((4, 4), np.uint8))
    colors = np.array(COLORS, np.float64)[under].transpose(2, 0, 1)
    want = np.rint((1 - ALPHA) * ((level2 - LOW) / (HIGH - LOW) * 255) + ALPHA * colors)
    png = np.asarray(Image.open(tmp_path / "q.png"))[:128, :192, :3].transpose(2, 0, 1)
    np.testing.assert_allclose(png, want, atol=1)
    bar = result.scale_bar  # 0.25 um x 4 per pixel; a quarter of 192 px is 48 um
    assert bar is not None and (bar.length, bar.unit, bar.pixels) == (20, "µm", 20)


# -------------------------------------------------------------------- nodata, bands, sizes


def test_non_finite_values_are_transparent_and_one_band_is_grey(tmp_path):
    data = np.linspace(0, 1, 60 * 80, dtype=np.float32).reshape(1, 60, 80)
    data[0, :10] = np.nan
    data[0, 10:12] = np.inf
    data[0, 12:14] = -np.inf
    path = write_geotiff(tmp_path / "f.tif", data, crs=WGS84,
                         transform=Affine(0.001, 0, 10, 0, -0.001, 50))
    labels = labels_zarr(tmp_path / "l.zarr", np.full((60, 80), 255, np.uint8))
    spec = QuicklookSpec(input=str(path), labels_path=labels, classes=classes(), label_nodata=255)
    result = write_quicklook(spec, tmp_path / "f.png")
    png = np.asarray(Image.open(tmp_path / "f.png"))
    assert (png[:14, :80, 3] == 0).all() and (png[14:60, :80, 3] == 255).all()
    assert (png[14:60, :80, 0] == png[14:60, :80, 1]).all()  # grey
    assert (png[14:60, :80, 1] == png[14:60, :80, 2]).all()
    finite = data[0, 14:].astype(np.float64)
    lo, hi = np.percentile(finite, [2, 98])
    want = np.rint(np.clip((finite - lo) / (hi - lo), 0, 1) * 255)
    np.testing.assert_allclose(png[14:60, :80, 0], want, atol=1)
    assert result.scale_bar is None  # degrees: no length in metres


def test_declared_nodata_value_is_transparent(tmp_path):
    data = known_stretch_image(3, 40, 50)
    data[:, 15:20, 5:9] = 7
    data[0, 30:32, 30:35] = 7  # one band nodata: the pixel still shows
    path = write_geotiff(tmp_path / "n.tif", data, nodata=7)
    labels = labels_zarr(tmp_path / "l.zarr", np.zeros((40, 50), np.uint8))
    spec = QuicklookSpec(input=str(path), labels_path=labels, classes=classes(), label_nodata=255)
    write_quicklook(spec, tmp_path / "n.png")
    alpha = np.asarray(Image.open(tmp_path / "n.png"))[:40, :50, 3]
    want = np.full((40, 50), 255)
    want[15:20, 5:9] = 0
    np.testing.assert_array_equal(alpha, want)


def test_display_bands():
    # the card's RGB band names, mapped through the selected input bands
    assert display_bands(None, (3, 2, 1, 0), ("blue", "green", "red", "nir")) == (1, 2, 3)
    # the input's own channel names
    assert display_bands(("nir", "Blue", "Green", "Red"), (0, 1, 2, 3)) == (3, 2, 1)
    assert display_bands(("a", "b", "c", "d"), (0, 1, 2, 3)) == (0, 1, 2)
    assert display_bands(("a", "b"), (1,)) == (1,)


def test_nice_lengths():
    assert [nice_length(x) for x in (1, 1.9, 2, 4.99, 5, 9.9, 10, 0.0031, 7300)] == [
        1, 1, 2, 2, 5, 5, 10, 0.002, 5000]


# ------------------------------------------------------------------------ instance outlines


def ellipse_ids(shape: tuple[int, int], seed: int, count: int) -> np.ndarray:
    """Touching and overlapping ellipses, each its own id (a later one over an earlier)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    ids = np.zeros(shape, np.uint32)
    for i in range(1, count + 1):
        r, c = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        a, b = rng.uniform(0.03, 0.08, 2) * max(shape)
        ids[((rows - r) / a) ** 2 + ((cols - c) / b) ** 2 <= 1] = i
    return ids


def neighbour_edges(ids: np.ndarray) -> np.ndarray:
    """numpy's oracle: the id differs from the right or the lower neighbour's."""
    edge = np.zeros(ids.shape, bool)
    edge[:, :-1] |= np.diff(ids.astype(np.int64), axis=1) != 0
    edge[:-1, :] |= np.diff(ids.astype(np.int64), axis=0) != 0
    return edge


def black(png_path, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of the image part drawn pure black (no class colour blends to black)."""
    image = np.asarray(Image.open(png_path).convert("RGBA"))[: shape[0], : shape[1]]
    return (image[..., :3] == 0).all(axis=2) & (image[..., 3] == 255)


def test_instance_outlines_follow_the_decimated_ids(tmp_path):
    shape = (300, 400)
    path = write_geotiff(tmp_path / "s.tif", known_stretch_image(3, *shape))
    labels = labels_zarr(tmp_path / "l.zarr", np.indices(shape).sum(axis=0) % 3)  # no nodata
    ids = ellipse_ids(shape, seed=1, count=25)
    create_array(tmp_path / "i.zarr", shape, (64, 64), "uint32", fill_value=0)[:] = ids
    spec = QuicklookSpec(input=str(path), labels_path=labels, classes=classes(), label_nodata=255,
                         max_side=100, instances_path=str(tmp_path / "i.zarr"))
    result = write_quicklook(spec, tmp_path / "q.png")
    assert result.level == 0 and result.step > 1 and result.outlined
    sampled = ids[:: result.step, :: result.step][: result.shape[0], : result.shape[1]]
    np.testing.assert_array_equal(black(tmp_path / "q.png", result.shape),
                                  neighbour_edges(sampled))
    # without the instance array: nothing is black
    plain = write_quicklook(QuicklookSpec(input=str(path), labels_path=labels, classes=classes(),
                                          label_nodata=255, max_side=100), tmp_path / "p.png")
    assert not plain.outlined and not black(tmp_path / "p.png", plain.shape).any()


def test_instances_too_small_to_outline_are_left_unoutlined(tmp_path):
    shape = (60, 80)
    path = write_geotiff(tmp_path / "s.tif", known_stretch_image(3, *shape))
    labels = labels_zarr(tmp_path / "l.zarr", np.ones(shape, np.uint8))
    ids = (np.arange(shape[0] * shape[1], dtype=np.uint32) // 2 + 1).reshape(shape)  # 2-px ids
    create_array(tmp_path / "i.zarr", shape, (32, 32), "uint32", fill_value=0)[:] = ids
    spec = QuicklookSpec(input=str(path), labels_path=labels, classes=classes(), label_nodata=255,
                         instances_path=str(tmp_path / "i.zarr"))
    result = write_quicklook(spec, tmp_path / "q.png")
    assert not result.outlined and not black(tmp_path / "q.png", result.shape).any()


def test_outlines_of_a_20k_raster_read_the_ids_decimated(sparse_scene, tmp_path):
    path, labels = sparse_scene
    rows, cols = REGION
    region = ellipse_ids((rows.stop - rows.start, cols.stop - cols.start), seed=2, count=12)
    instances = create_array(tmp_path / "i.zarr", (BIG, BIG), (512, 512), "uint32",
                             fill_value=0)
    instances[rows, cols] = region
    spec = QuicklookSpec(input=str(path), labels_path=labels, classes=classes(),
                         label_nodata=255, instances_path=str(tmp_path / "i.zarr"))
    tracemalloc.start()
    try:
        result = write_quicklook(spec, tmp_path / "q.png")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.step == 14 and result.outlined
    assert peak < 150e6, peak  # as without outlines: never the 1.6 GB id raster
    # the ids at every 14th pixel, as numpy sees them; valid (opaque) where the data is
    sampled = np.zeros(result.shape, np.uint32)
    inside = np.zeros(result.shape, bool)
    r0, c0 = -(-rows.start // 14), -(-cols.start // 14)
    part = region[r0 * 14 - rows.start :: 14, c0 * 14 - cols.start :: 14]
    sampled[r0 : r0 + part.shape[0], c0 : c0 + part.shape[1]] = part
    inside[r0 : r0 + part.shape[0], c0 : c0 + part.shape[1]] = True
    np.testing.assert_array_equal(black(tmp_path / "q.png", result.shape),
                                  neighbour_edges(sampled) & inside)
