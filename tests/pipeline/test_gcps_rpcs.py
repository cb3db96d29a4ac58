"""GCPs and RPCs: carried to GeoTIFF outputs, areas where GCPs give a grid, OME refused.

Inputs are made with rasterio; outputs are read back with rasterio (``src.gcps``,
``src.rpcs``), the oracle. Labels come from the identity 1×1 model on a one-hot image, so they
are known in advance; areas are compared with numpy counts times the pixel area of the affine
transform the GCPs were made from. An overview's GCPs and RPCs are GDAL's own (rasterio opened
at ``overview_level``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.rpc import RPC

from segpipe.flows.cli import main
from segpipe.flows.cmd_inspect import render
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.corpus.harness import assert_rejected, prefect_server, run_segpipe, snapshot
from tests.pipeline.labelmodel import argmax_model, blobs, one_hot

# runs of the CLI in subprocesses: minutes in all, in the slow set (make test stays < 15 min)
pytestmark = pytest.mark.slow

CLASSES = 3
SHAPE = (70, 90)
UTM_33N = CRS.from_epsg(32633)
#: the grid the GCPs are taken from: 20 m pixels, slightly sheared (b, d ≠ 0)
GRID = Affine(20.0, 2.0, 400000.0, 1.5, -20.0, 4500000.0)
COMMON = ("--workers", "0", "--quiet", "--tile", "32", "--device", "cpu")


def gcps_of(grid: Affine, shape: tuple[int, int]) -> list[GroundControlPoint]:
    """Five GCPs (corners and centre) placed exactly by ``grid``."""
    h, w = shape
    points = [(0, 0), (0, w), (h, 0), (h, w), (h / 2, w / 3)]
    return [GroundControlPoint(r, c, *(grid @ (c, r)), z=10.0 * i) for i, (r, c) in
            enumerate(points)]


def an_rpc() -> RPC:
    """Plausible RPCs (a linear sensor model near 45° N, 15° E)."""
    num = [0.0] * 20
    return RPC(
        height_off=100.0, height_scale=500.0, lat_off=45.1, lat_scale=0.02, long_off=15.2,
        long_scale=0.03, line_off=35.0, line_scale=35.0, samp_off=45.0, samp_scale=45.0,
        line_num_coeff=[0.01, 0.0, -1.0, *num[3:]], line_den_coeff=[1.0, *num[1:]],
        samp_num_coeff=[-0.02, 1.0, *num[2:]], samp_den_coeff=[1.0, *num[1:]],
        err_bias=0.5, err_rand=0.25,
    )


def write_input(path: Path, labels: np.ndarray, *, overviews: bool = False, **georef) -> Path:
    """A one-hot uint8 GeoTIFF of ``labels`` with the georeferencing given (gcps, crs, rpcs)."""
    data = one_hot(labels, CLASSES)
    with rasterio.open(
        path, "w", driver="GTiff", height=labels.shape[0], width=labels.shape[1],
        count=CLASSES, dtype="uint8", tiled=True, blockxsize=16, blockysize=16, **georef,
    ) as dst:
        dst.write(data)
    if overviews:
        with rasterio.open(path, "r+") as dst:
            dst.build_overviews([2])
    return path


def gcp_tuples(gcps) -> list[tuple[float, ...]]:
    return [(g.row, g.col, g.x, g.y, g.z) for g in gcps]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return argmax_model(tmp_path_factory.mktemp("model") / "argmax.pt2", CLASSES)


def segpipe_run(src: Path, out: Path, model: Path, *extra: str) -> int:
    """``segpipe run`` through the command line's entry point, in this process."""
    return main(["run", "--input", str(src), "--output", str(out), "--model", str(model),
                 *COMMON, *extra])


def inspect_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    """``segpipe inspect PATH --json`` through the command line's entry point."""
    capsys.readouterr()
    assert main(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def areas_table(output: Path) -> dict[int, dict[str, str]]:
    with open(output.with_name(output.stem + ".areas.csv"), newline="") as f:
        return {int(row["label"]): row for row in csv.DictReader(f)}


def test_gcps_reach_the_labels_and_probabilities_and_areas_use_their_grid(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
):
    labels = blobs(SHAPE, CLASSES, seed=4)
    src = write_input(tmp_path / "gcps.tif", labels, gcps=gcps_of(GRID, SHAPE), crs=UTM_33N)
    code = segpipe_run(src, tmp_path / "out.tif", model, "--probabilities")
    assert code == 0 and not capsys.readouterr().err.strip()
    with rasterio.open(src) as ds:
        want_gcps, want_crs = ds.gcps
        assert ds.transform.is_identity and ds.crs is None  # GCPs are all it has
    for name in ("out.tif", "out.probabilities.tif"):
        with rasterio.open(tmp_path / name) as out:
            gcps, crs = out.gcps
            assert gcp_tuples(gcps) == gcp_tuples(want_gcps), name
            assert crs == want_crs and crs.to_wkt() == want_crs.to_wkt(), name
            assert out.transform.is_identity and out.shape == SHAPE
    with rasterio.open(tmp_path / "out.tif") as out:
        assert out.nodata == 255
        np.testing.assert_array_equal(out.read(1), labels)
    pixel_area = abs(GRID.a * GRID.e - GRID.b * GRID.d)  # 403 m², from the grid itself
    table = areas_table(tmp_path / "out.tif")
    for k in range(CLASSES):
        count = int((labels == k).sum())
        assert int(table[k]["pixels"]) == count
        assert float(table[k]["area"]) == pytest.approx(count * pixel_area, rel=1e-9)
        assert table[k]["area_unit"] == "m2"


def test_gcps_that_bend_are_carried_but_give_pixel_counts_only(tmp_path: Path, model: Path):
    labels = blobs(SHAPE, CLASSES, seed=5)
    gcps = gcps_of(GRID, SHAPE)
    bent = gcps[4]
    gcps[4] = GroundControlPoint(bent.row, bent.col, bent.x + 60.0, bent.y, bent.z)  # 3 px off
    src = write_input(tmp_path / "bent.tif", labels, gcps=gcps, crs=UTM_33N)
    out = tmp_path / "out.tif"
    summary = run_one(RunOptions.of(str(src), str(out), model=str(model), tile=32,
                                    device="cpu"))
    with rasterio.open(out) as ds:
        assert gcp_tuples(ds.gcps[0]) == gcp_tuples(gcps) and ds.gcps[1] == UTM_33N
    assert summary["areas"]["kind"] == "pixels"
    assert "GCPs define no affine grid" in summary["areas"]["note"]
    assert all(c["area"] is None for c in summary["classes"])
    assert [c["pixels"] for c in summary["classes"]] == [
        int((labels == k).sum()) for k in range(CLASSES)]


def test_rpcs_reach_the_labels_and_probabilities(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
):
    labels = blobs(SHAPE, CLASSES, seed=6)
    src = write_input(tmp_path / "rpcs.tif", labels, rpcs=an_rpc())
    code = segpipe_run(src, tmp_path / "out.tif", model, "--probabilities")
    assert code == 0 and not capsys.readouterr().err.strip()
    with rasterio.open(src) as ds:
        want = ds.rpcs
    assert want is not None
    for name in ("out.tif", "out.probabilities.tif"):
        with rasterio.open(tmp_path / name) as out:
            assert out.rpcs == want, name
    with rasterio.open(tmp_path / "out.tif") as out:
        np.testing.assert_array_equal(out.read(1), labels)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == [
        "out.areas.csv", "out.probabilities.tif", "out.quicklook.png", "out.report.html",
        "out.tif"]  # no .RPB or _RPC.TXT sidecar: the RPCs are in the TIFF
    sidecar = json.loads((tmp_path / ".out.tif.segpipe.json").read_text())
    assert sidecar["summary"]["areas"]["kind"] == "pixels"
    assert "RPCs" in sidecar["summary"]["areas"]["note"]


def test_at_an_overview_level_gcps_and_rpcs_are_gdals_for_that_overview(
    tmp_path: Path, model: Path
):
    labels = blobs(SHAPE, CLASSES, seed=7)
    for name, georef in (("gcps", {"gcps": gcps_of(GRID, SHAPE), "crs": UTM_33N}),
                         ("rpcs", {"rpcs": an_rpc()})):
        src = write_input(tmp_path / f"{name}.tif", labels, overviews=True, **georef)
        out = tmp_path / f"{name}.out.tif"
        run_one(RunOptions.of(str(src), str(out), model=str(model), tile=32, device="cpu",
                              level=1))
        with rasterio.open(src, overview_level=0) as level1, rasterio.open(out) as ds:
            assert ds.shape == level1.shape
            if name == "gcps":
                got, want = ds.gcps[0], level1.gcps[0]
                assert np.allclose(gcp_tuples(got), gcp_tuples(want), rtol=1e-12, atol=0)
                assert ds.gcps[1] == level1.gcps[1]
            else:
                got, want = ds.rpcs.to_dict(), level1.rpcs.to_dict()
                assert got.keys() == want.keys()
                for key in got:
                    np.testing.assert_allclose(got[key], want[key], rtol=1e-12, err_msg=key)


@pytest.mark.parametrize("input_kind, output", [("gcps", "out.ome.tif"),
                                                ("rpcs", "out.ome.zarr")])
def test_an_ome_output_of_such_an_input_is_refused_naming_the_geotiff(
    tmp_path: Path, model: Path, input_kind: str, output: str
):
    labels = blobs(SHAPE, CLASSES, seed=8)
    georef = ({"gcps": gcps_of(GRID, SHAPE), "crs": UTM_33N} if input_kind == "gcps"
              else {"rpcs": an_rpc()})
    src = write_input(tmp_path / "in.tif", labels, **georef)
    (tmp_path / "m.pt2").write_bytes(model.read_bytes())
    before = snapshot(tmp_path)
    result = run_segpipe(["run", "--input", src.name, "--output", output, "--model", "m.pt2",
                          *COMMON], tmp_path, api=prefect_server())
    assert_rejected(result, tmp_path, before, tmp_path / output)
    line = result.stderr.strip()
    what = "5 ground control points (GCPs)" if input_kind == "gcps" else "RPCs"
    assert what in line and "cannot carry" in line, line
    assert line.endswith("write a GeoTIFF instead: --output out.tif"), line


def test_inspect_shows_gcps_with_their_crs_and_rpcs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    labels = blobs(SHAPE, CLASSES, seed=9)
    both = write_input(tmp_path / "both.tif", labels, gcps=gcps_of(GRID, SHAPE), crs=UTM_33N,
                       rpcs=an_rpc())
    plain = write_input(tmp_path / "plain.tif", labels, crs=UTM_33N,
                        transform=Affine(20, 0, 400000, 0, -20, 4500000))
    report = inspect_json(both, capsys)
    src = report["input"]
    assert src["gcps"] == {"count": 5, "crs": {"name": "WGS 84 / UTM zone 33N", "epsg": 32633,
                                               "kind": "projected"}}
    assert src["rpcs"] is True and src["crs"] is None
    other = inspect_json(plain, capsys)["input"]
    assert other["gcps"] is None and other["rpcs"] is False
    rows = {line.split()[0]: line for line in render(report).splitlines()
            if line.startswith("  ")}
    assert "5 ground control points, WGS 84 / UTM zone 33N (EPSG:32633)" in rows["GCPs"]
    assert "yes" in rows["RPCs"]
    assert "GCPs" not in render({**report, "input": other})
