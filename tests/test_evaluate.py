"""``segpipe evaluate``: counts against numpy, Olofsson et al. (2014) against the paper."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segpipe.flows.cli import main
from segpipe.pipeline import evaluate as evaluate_module
from segpipe.pipeline.evaluate import evaluate
from segpipe.pipeline.olofsson import olofsson
from tests.conftest import write_geotiff

# Olofsson et al. 2014, RSE 148, section 5 (Tables 8 and 9): sample counts, map rows
# (deforestation, forest gain, stable forest, stable non-forest), and mapped areas in ha.
PAPER_N = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
PAPER_AREA_HA = np.array([18000, 13500, 288000, 580500])


def test_olofsson_reproduces_the_paper():
    e = olofsson(PAPER_N, PAPER_AREA_HA, 1.0)
    # the paper: 21,158 ± 6,158 ha; 11,686 ± 3,756; 285,770 ± 15,510; 581,386 ± 16,282
    np.testing.assert_allclose(e.area, [21158, 11686, 285770, 581386], atol=0.5)
    np.testing.assert_allclose(1.96 * e.area_se, [6158, 3756, 15510, 16282], atol=0.5)
    np.testing.assert_allclose(e.users, [0.88, 0.73, 0.93, 0.96], atol=0.005)
    np.testing.assert_allclose(1.96 * e.users_se, [0.07, 0.10, 0.04, 0.02], atol=0.005)
    np.testing.assert_allclose(e.producers, [0.75, 0.85, 0.93, 0.96], atol=0.006)
    assert round(e.overall, 2) == 0.95 and round(1.96 * e.overall_se, 2) == 0.02


def independent(n, big_n, pixel_area):
    """Eqs. 5–10 of the paper written out with loops, for comparison."""
    k = len(n)
    a_tot = big_n.sum()
    w = big_n / a_tot
    ni = n.sum(1)
    p = np.array([[w[i] * n[i, j] / ni[i] for j in range(k)] for i in range(k)])
    area = a_tot * pixel_area * p.sum(0)
    se = [np.sqrt(sum(w[i] ** 2 * (n[i, j] / ni[i]) * (1 - n[i, j] / ni[i]) / (ni[i] - 1)
                      for i in range(k))) for j in range(k)]
    users = [n[i, i] / ni[i] for i in range(k)]
    prod = [p[j, j] / p[:, j].sum() for j in range(k)]
    nhat = [sum(big_n[i] / ni[i] * n[i, j] for i in range(k)) for j in range(k)]
    pvar = []
    for j in range(k):
        first = big_n[j] ** 2 * (1 - prod[j]) ** 2 * users[j] * (1 - users[j]) / (ni[j] - 1)
        rest = sum(big_n[i] ** 2 * n[i, j] / ni[i] * (1 - n[i, j] / ni[i]) / (ni[i] - 1)
                   for i in range(k) if i != j)
        pvar.append((first + prod[j] ** 2 * rest) / nhat[j] ** 2)
    overall = sum(p[i, i] for i in range(k))
    ovar = sum(w[i] ** 2 * users[i] * (1 - users[i]) / (ni[i] - 1) for i in range(k))
    return area, np.array(se) * a_tot * pixel_area, users, prod, np.sqrt(pvar), overall, ovar


def test_olofsson_equals_an_independent_implementation():
    n = np.array([[40, 3, 2], [5, 30, 1], [2, 4, 20]], np.float64)
    big_n = np.array([5000.0, 3000.0, 2000.0])
    e = olofsson(n, big_n, 900.0)
    area, area_se, users, prod, prod_se, overall, ovar = independent(n, big_n, 900.0)
    np.testing.assert_allclose(e.area, area)
    np.testing.assert_allclose(e.area_se, area_se)
    np.testing.assert_allclose(e.users, users)
    np.testing.assert_allclose(e.producers, prod)
    np.testing.assert_allclose(e.producers_se, prod_se)
    assert np.isclose(e.overall, overall) and np.isclose(e.overall_se ** 2, ovar)
    np.testing.assert_allclose(e.area.sum(), big_n.sum() * 900.0)  # areas add up to the map


@pytest.fixture
def pair(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate_module, "WINDOW", 16)  # several windows, ragged edges
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 4, (1, 45, 37)).astype(np.uint8)
    pred = np.where(rng.random(ref.shape) < 0.7, ref, rng.integers(0, 4, ref.shape))
    pred = pred.astype(np.uint8)
    pred[0, :3, :] = 255  # map nodata
    ref[0, :, :2] = 200   # reference nodata
    p = write_geotiff(tmp_path / "pred.tif", pred, nodata=255)
    r = write_geotiff(tmp_path / "ref.tif", ref, nodata=200)
    return p, r, pred[0], ref[0]


def test_confusion_equals_numpy_bincount(pair):
    p, r, pred, ref = pair
    result = evaluate(str(p), str(r))
    valid = (pred != 255) & (ref != 200)
    expected = np.bincount(ref[valid].astype(int) * 4 + pred[valid], minlength=16).reshape(4, 4)
    np.testing.assert_array_equal(result.confusion, expected)
    np.testing.assert_array_equal(result.map_counts,
                                  np.bincount(pred[pred != 255], minlength=4))
    tp = np.diag(expected)
    np.testing.assert_allclose(result.to_dict()["iou"],
                               tp / (expected.sum(0) + expected.sum(1) - tp))
    # the map is in UTM (30 m pixels): map areas are its class counts × 900 m²
    area = result.to_dict()["area_adjusted"]
    np.testing.assert_allclose(area["map_area"], np.bincount(pred[pred != 255]) * 900.0)


def test_cli_json_and_table(pair, capsys):
    p, r, _, _ = pair
    assert main(["evaluate", str(p), str(r), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pixels"] == int(np.sum(np.array(data["confusion"])))
    assert main(["evaluate", str(p), str(r)]) == 0
    text = capsys.readouterr().out
    assert "overall accuracy" in text and "Olofsson" in text and "± " in text


def test_cli_refuses_different_grids(tmp_path, capsys):
    a = write_geotiff(tmp_path / "a.tif", np.zeros((1, 10, 10), np.uint8))
    b = write_geotiff(tmp_path / "b.tif", np.zeros((1, 10, 12), np.uint8))
    assert main(["evaluate", str(a), str(b)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "same grid" in lines[0]
