"""Normalization statistics: once per image, nodata excluded, independent of the tile size."""

from __future__ import annotations

import numpy as np
import pytest

from segpipe.models import Normalization, NormMethod, load_model
from segpipe.pipeline import normalize
from segpipe.pipeline.normalize import compute_normalizer
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.plan import plan_run
from segpipe.pipeline.stages import image_statistics
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.test_exactness import tiny_unet


@pytest.mark.parametrize("method", [NormMethod.MEANSTD, NormMethod.PERCENTILE])
def test_statistics_do_not_depend_on_the_tile_size(tmp_path, method, monkeypatch):
    monkeypatch.setattr(normalize, "FULL_STATS_PIXELS", 64 * 64)  # force the sampled path
    img = smooth_image((3, 300, 260), "uint16", seed=9)
    src = write_geotiff(tmp_path / "in.tif", img, nodata=0)
    model = load_model(tiny_unet(tmp_path / "m.pt", 3, "valid"))
    found = set()
    for tile in (16, 32, 64, 128):
        plan = plan_run(RunOptions.of(str(src), str(tmp_path / "o.tif"), model=str(model.path),
                                      tile=tile, normalize=method))
        found.add(image_statistics(plan))
    assert len(found) == 1


def test_meanstd_excludes_nodata_and_matches_numpy():
    img = smooth_image((2, 90, 80), "float32", seed=1)
    img[0, :20] = -9999.0
    img[1, 50:, :10] = np.nan
    norm = compute_normalizer(
        Normalization(NormMethod.MEANSTD), dtype="float32", bands=2, nodata=-9999.0,
        read=lambda w: img[(slice(None), *w.slices)], shape=(90, 80),
    )
    b0 = img[0][img[0] != -9999.0].astype(np.float64)
    b1 = img[1][~np.isnan(img[1])].astype(np.float64)
    np.testing.assert_allclose(norm.offset, [b0.mean(), b1.mean()], rtol=1e-9)
    np.testing.assert_allclose(norm.scale, [1 / b0.std(), 1 / b1.std()], rtol=1e-9)
    x, mask = norm.apply(img, -9999.0)
    assert x.dtype == np.float32 and not np.isnan(x).any()
    assert (x[0, :20] == 0).all()  # nodata fed as 0 after normalization
    assert not mask.any()  # no pixel has *all* bands missing
    img[:, 0, 0] = [-9999.0, np.nan]
    assert norm.apply(img, -9999.0)[1][0, 0]


def test_scale_maps_the_dtype_range_to_unit_interval():
    norm = compute_normalizer(Normalization(NormMethod.SCALE), dtype="uint16", bands=1,
                              nodata=None)
    x, _ = norm.apply(np.array([[[0, 65535]]], np.uint16), None)
    np.testing.assert_allclose(x.ravel(), [0.0, 1.0], atol=np.finfo(np.float32).eps)  # 1 ulp of 1
