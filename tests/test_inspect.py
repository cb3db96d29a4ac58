"""``segpipe inspect``: metadata, pixel sizes, levels and the tile plan, checked against the files.

The CLI cases run the installed ``segpipe`` in a subprocess and read ``--json`` (the schema
``segpipe.inspect/1``); every expected value comes from the file through rasterio or tifffile,
from the numbers the fixture wrote, or from ``ceil(H/T)·ceil(W/T)``, never from segpipe's own
readers. With a model, the plan is compared with the one ``segpipe run`` records, and the
problems ``run`` would refuse are listed while inspect still exits 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
import torch
from affine import Affine
from rasterio.crs import CRS

from segpipe.flows.cmd_inspect import render
from segpipe.models import create_model, default_card, save_checkpoint
from segpipe.models.bundled import bundled_models
from segpipe.models.card import Domain
from segpipe.pipeline.estimate import computed_tiles
from segpipe.pipeline.options import RunOptions, TilingOptions
from segpipe.pipeline.stages import run_one
from segpipe.pipeline.tiling import TilePlan
from tests.conftest import smooth_image, write_geotiff
from tests.test_cli_contract import assert_rejected, run_segpipe, snapshot

BLOCK_PIXELS = TilingOptions().block_pixels
#: A small valid-padding U-Net: 2 poolings (stride 4), a margin of a few pixels.
TINY = {"depth": 2, "base_width": 4, "num_classes": 3}


def inspect_json(path: Path, *args: str) -> dict:
    """``segpipe inspect PATH --json ARGS`` in a subprocess; exit 0 and one JSON object."""
    result = run_segpipe(["inspect", path.name, "--json", *args], cwd=path.parent)
    shown = f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, shown
    assert "Traceback" not in result.stderr, shown
    report = json.loads(result.stdout)
    assert report["schema"] == "segpipe.inspect/1"
    return report


def tiny_unet(path: Path, bands: int) -> Path:
    config = {**TINY, "in_channels": bands}
    torch.manual_seed(0)
    save_checkpoint(create_model("unet", **config), path, architecture="unet", config=config,
                    card=default_card("unet", **config))
    return path


def unet_margin(bands: int, side: int = 100) -> int:
    """The margin of :func:`tiny_unet`'s network, by running it once on a ``side`` square."""
    torch.manual_seed(0)
    net = create_model("unet", **{**TINY, "in_channels": bands}).eval()
    with torch.inference_mode():
        out = net(torch.zeros(1, bands, side, side))
    return (side - out.shape[-1]) // 2


def check_plan(plan: dict, height: int, width: int, tile: int, halo: int) -> None:
    """The tile and block counts and the padded size, from ceil(H/T)·ceil(W/T)."""
    rows, cols = math.ceil(height / tile), math.ceil(width / tile)
    per_block = max(1, BLOCK_PIXELS // tile)
    assert (plan["height"], plan["width"], plan["tile"], plan["halo"]) == (
        height, width, tile, halo)
    assert plan["tiles"] == {"rows": rows, "cols": cols, "total": rows * cols}
    blocks = plan["blocks"]
    assert (blocks["rows"], blocks["cols"]) == (math.ceil(rows / per_block),
                                                math.ceil(cols / per_block))
    assert blocks["total"] == blocks["rows"] * blocks["cols"]
    assert plan["input_size"] == tile + 2 * halo + plan["extra"]
    side = plan["input_size"]
    assert plan["padded"] == {"width": (cols - 1) * tile + side,
                              "height": (rows - 1) * tile + side}


# ---------------------------------------------------------------------------- the inputs


def test_utm_geotiff_pixel_size_in_metres_levels_and_tiles(tmp_path: Path):
    path = write_geotiff(tmp_path / "scene.tif", smooth_image((3, 300, 500), "uint16"),
                         transform=Affine(30.0, 0, 300000.0, 0, -30.0, 5000000.0), nodata=0)
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4])
        for i, name in enumerate(("blue", "green", "nir"), 1):
            ds.set_band_description(i, name)

    report = inspect_json(path, "--tile", "128", "--halo", "8")

    src = report["input"]
    with rasterio.open(path) as ds:
        assert (src["width"], src["height"], src["dtype"]) == (ds.width, ds.height, ds.dtypes[0])
        assert src["nodata"] == ds.nodata == 0
        assert [b["name"] for b in src["bands"]] == list(ds.descriptions)
        assert [b["number"] for b in src["bands"]] == list(ds.indexes)
        assert src["crs"]["epsg"] == ds.crs.to_epsg() == 32621
        assert src["crs"]["kind"] == "projected" and ds.crs.linear_units == "metre"
        assert src["crs"]["name"] == "WGS 84 / UTM zone 21N"
        assert src["pixel_size"] == {"x": ds.res[0], "y": ds.res[1], "unit": "m"}
        factors = ds.overviews(1)
    assert src["format"] == "gdal" and src["driver"] == "GTiff"
    levels = src["levels"]
    assert len(levels) == 1 + len(factors)
    for level, factor in zip(levels[1:], factors):
        with rasterio.open(path, overview_level=level["level"] - 1) as ov:
            assert (level["height"], level["width"]) == (ov.height, ov.width)
            assert level["downsample"] == factor
            assert level["pixel_size"]["x"] == pytest.approx(ov.res[0])
            assert level["pixel_size"]["unit"] == "m"
    check_plan(report["plan"], 300, 500, 128, 8)
    assert report["model"] is None and report["estimate"] is None


def test_epsg4326_geotiff_pixel_size_in_degrees(tmp_path: Path):
    transform = Affine(0.00025, 0, 12.5, 0, -0.0002, 47.8)  # not square: x and y apart
    path = write_geotiff(tmp_path / "wgs84.tif", smooth_image((1, 90, 130), "float32"),
                         crs=CRS.from_epsg(4326), transform=transform)

    report = inspect_json(path, "--tile", "64")

    src = report["input"]
    with rasterio.open(path) as ds:
        assert src["crs"]["epsg"] == ds.crs.to_epsg() == 4326
        assert ds.crs.is_geographic and src["crs"]["kind"] == "geographic"
        assert src["pixel_size"]["x"] == pytest.approx(ds.res[0])
        assert src["pixel_size"]["y"] == pytest.approx(ds.res[1])
    assert src["pixel_size"]["unit"] == "degree"
    assert src["crs"]["name"] == "WGS 84"
    check_plan(report["plan"], 90, 130, 64, 0)


def test_ome_tiff_physical_size_and_subifd_levels(tmp_path: Path):
    data = smooth_image((2, 200, 300), "uint16")
    path = tmp_path / "cells.ome.tif"
    size_y, size_x = 0.5, 0.65  # µm; y and x differ so that a swap shows
    metadata = {"axes": "CYX", "PhysicalSizeY": size_y, "PhysicalSizeYUnit": "µm",
                "PhysicalSizeX": size_x, "PhysicalSizeXUnit": "µm",
                "Channel": {"Name": ["DAPI", "GFP"]}}
    options = {"tile": (64, 64), "compression": "zlib", "photometric": "minisblack"}
    with tifffile.TiffWriter(path, ome=True, bigtiff=True) as tif:
        tif.write(data, subifds=2, metadata=metadata, **options)
        for f in (2, 4):
            tif.write(data[:, ::f, ::f], subfiletype=1, **options)

    report = inspect_json(path, "--tile", "96")

    src = report["input"]
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shapes = [lv.shape[-2:] for lv in series.levels]
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        names = [c["Name"] for c in pixels["Channel"]]
    assert src["format"] == "ome-tiff" and src["crs"] is None
    assert (src["height"], src["width"]) == shapes[0]
    assert [b["name"] for b in src["bands"]] == names == ["DAPI", "GFP"]
    assert src["pixel_size"] == {"x": pixels["PhysicalSizeX"], "y": pixels["PhysicalSizeY"],
                                 "unit": "µm"}
    assert [(lv["height"], lv["width"]) for lv in src["levels"]] == shapes
    for level, (_, w) in zip(src["levels"], shapes):
        factor = shapes[0][1] // w
        assert level["downsample"] == factor
        assert level["pixel_size"]["x"] == pytest.approx(size_x * factor)
        assert level["pixel_size"]["y"] == pytest.approx(size_y * factor)
    check_plan(report["plan"], 200, 300, 96, 0)


SVS_DESCRIPTION = (
    "Aperio Image Library v12.0.15 \r\n900x600 [0,0 900x600] (64x64) JPEG/RGB Q=90"
    "|AppMag = 20|MPP = 0.4990|Filename = patient-4711"
)


def test_svs_mpp_levels_and_no_image_description(tmp_path: Path):
    data = np.random.default_rng(3).integers(0, 255, (600, 900, 3), dtype=np.uint8)
    path = tmp_path / "slide.svs"
    opts = {"photometric": "rgb", "compression": "jpeg", "metadata": None}
    with tifffile.TiffWriter(path) as tif:
        tif.write(data, tile=(64, 64), description=SVS_DESCRIPTION, **opts)
        tif.write(data[::8, ::8], description="Aperio Image Library v12.0.15 \r\nthumb", **opts)
        tif.write(data[::4, ::4], tile=(64, 64), description="Aperio Image Library v12", **opts)
        tif.write(data[:40, :60], subfiletype=1, description="Aperio label 40x60", **opts)

    report = inspect_json(path, "--tile", "256", "--halo", "16")

    src = report["input"]
    with tifffile.TiffFile(path) as tif:
        assert tif.is_svs
        shapes = [lv.shape[:2] for lv in tif.series[0].levels]
    assert src["format"] == "tiff" and src["driver"] == "aperio"
    assert [(lv["height"], lv["width"]) for lv in src["levels"]] == shapes == [(600, 900),
                                                                                (150, 225)]
    assert src["pixel_size"] == {"x": 0.499, "y": 0.499, "unit": "µm"}
    assert src["levels"][1]["downsample"] == 4
    assert src["levels"][1]["pixel_size"]["x"] == pytest.approx(4 * 0.499)
    assert len(src["bands"]) == data.shape[2]
    check_plan(report["plan"], 600, 900, 256, 16)
    for shown in (json.dumps(report), render(report)):
        assert "patient-4711" not in shown and "Aperio Image Library" not in shown


def test_the_text_report_reads_like_the_json(tmp_path: Path):
    path = write_geotiff(tmp_path / "scene.tif", smooth_image((3, 100, 150), "uint8"))
    result = run_segpipe(["inspect", path.name, "--tile", "64"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    for needle in ("WGS 84 / UTM zone 21N (EPSG:32621), projected", "pixel size  30 m",
                   "150 × 100 px", "tiles   2 × 3 = 6"):
        assert needle in text, text


def test_without_a_model_it_names_the_bundled_model_run_would_choose(tmp_path: Path):
    path = write_geotiff(tmp_path / "scene.tif", smooth_image((3, 64, 64), "uint8"))
    fitting = [m.name for m in bundled_models()
               if m.card.domain is Domain.GEO and m.card.bands == 3]
    assert len(fitting) == 1, fitting  # the fixture assumes one 3-band land-cover model

    report = inspect_json(path)

    choice = report["bundled_choice"]
    assert Path(choice["model"]).stem == fitting[0]
    assert fitting[0] in choice["reason"]
    assert report["problems"] == [] and report["plan"]["from_model"] is False


# ---------------------------------------------------------------------------- with a model


def test_with_a_model_the_plan_is_the_one_run_makes(tmp_path: Path):
    path = write_geotiff(tmp_path / "scene.tif", smooth_image((3, 150, 200), "uint8"))
    model = tiny_unet(tmp_path / "unet.pt", 3)

    report = inspect_json(path, "--model", model.name, "--tile", "64", "--batch-size", "2",
                          "--device", "cpu")

    summary = run_one(RunOptions.of(str(path), str(tmp_path / "labels.tif"), model=str(model),
                                    tile=64, batch_size=2, device="cpu"))
    plan = report["plan"]
    assert plan["from_model"] is True
    assert (plan["tile"], plan["halo"], plan["extra"]) == (summary["tile"], summary["halo"],
                                                           summary["extra"])
    assert plan["tiles"]["total"] == summary["tiles"]
    assert plan["halo"] == unet_margin(3)  # a valid net's halo is its margin
    check_plan(plan, 150, 200, 64, plan["halo"])
    m = report["model"]
    assert (m["bands"], m["bands_read"], m["margin"]) == (3, [1, 2, 3], unet_margin(3))
    assert len(m["classes"]) == TINY["num_classes"]
    assert report["problems"] == []
    est = report["estimate"]
    assert est["tiles"] == plan["tiles"]["total"] and est["batch_size"] == 2
    assert est["tile_seconds"] > 0 and est["timed_passes"] >= 1
    parts = est["time"]
    assert est["seconds"] == pytest.approx(sum(parts.values()), abs=0.01)
    # both are rounded in the report (ms), which matters when a tile takes a few ms
    assert parts["model_seconds"] == pytest.approx(est["tile_seconds"] * est["tiles"], rel=0.01,
                                                   abs=0.002)
    memory = est["memory"]
    assert est["peak_memory_bytes"] == (memory["process_bytes"] + memory["forward_bytes"]
                                        + memory["block_bytes"] + memory["orchestration_bytes"])
    # the block buffers hold at least the block's read window as float32
    read_side = plan["padded"]
    assert memory["block_bytes"] >= 3 * 4 * read_side["width"] * read_side["height"]


def test_a_band_count_the_model_does_not_take_is_listed_and_exits_0(tmp_path: Path):
    path = write_geotiff(tmp_path / "scene.tif", smooth_image((3, 64, 64), "uint8"))
    model = tiny_unet(tmp_path / "unet4.pt", 4)
    with rasterio.open(path) as ds:
        count = ds.count

    report = inspect_json(path, "--model", model.name, "--device", "cpu")

    assert report["model"]["bands"] == 4 != count
    assert any(f"{count} bands" in p and "expects 4" in p for p in report["problems"]), report
    assert report["estimate"] is None
    assert report["input"]["width"] == 64  # the rest of the report is still there


def test_stride_and_halo_problems_are_all_listed(tmp_path: Path):
    path = write_geotiff(tmp_path / "scene.tif", smooth_image((3, 64, 64), "uint8"))
    model = tiny_unet(tmp_path / "unet.pt", 3)
    margin = unet_margin(3)

    report = inspect_json(path, "--model", model.name, "--tile", "30", "--halo", "2",
                          "--device", "cpu")

    problems = report["problems"]
    assert len(problems) == 2, problems
    assert f"--halo 2 is smaller than the model's margin {margin}" in problems[0]
    assert "--tile 30 is not a multiple of the model's stride 4" in problems[1]
    assert report["estimate"] is None
    text = render(report)
    assert "segpipe run would refuse" in text and all(p in text for p in problems), text


@pytest.mark.parametrize("case", ["missing-input", "text-input", "corrupt-model", "tile-0"])
def test_bad_input_exits_2_with_one_error_line(tmp_path: Path, case: str):
    path = write_geotiff(tmp_path / "scene.tif", smooth_image((3, 32, 32), "uint8"))
    args = ["inspect", path.name]
    if case == "missing-input":
        args = ["inspect", "nope.tif"]
    elif case == "text-input":
        (tmp_path / "notes.tif").write_text("not a raster\n")
        args = ["inspect", "notes.tif"]
    elif case == "corrupt-model":
        (tmp_path / "model.pt").write_bytes(np.random.default_rng(0).bytes(2048))
        args += ["--model", "model.pt"]
    else:
        args += ["--tile", "0"]
    before = snapshot(tmp_path)
    result = run_segpipe(args, cwd=tmp_path)
    assert_rejected(result, tmp_path, before, tmp_path / "no-output")


# ---------------------------------------------------------------------------- the library


@pytest.mark.parametrize("ring", [0, 1])
def test_computed_tiles_count_each_blocks_tiles(ring: int):
    plan = TilePlan(1000, 700, 64, 8, block=3, ring=ring)
    assert computed_tiles(plan) == [len(plan.block_at(*b).tiles) for b in plan.block_indices()]
