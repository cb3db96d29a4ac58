"""``--vectors s3://...``: the polygons go to the bucket, the same as the run on disk writes."""

from __future__ import annotations

import pyogrio
import shapely

from tests.storage.conftest import segpipe

ARGS = ("--model", "MODEL", "--tile", "32", "--block-pixels", "64", "--device", "cpu",
        "--workers", "0", "--quiet")


def _args(model: str) -> list[str]:
    return [model if a == "MODEL" else a for a in ARGS]


def _polygons(path):
    meta, _, geometry, fields = pyogrio.raw.read(path)
    columns = dict(zip(meta["fields"], fields, strict=True))
    return meta["crs"], sorted(
        (int(k), shapely.from_wkb(g).normalize().wkt)
        for k, g in zip(columns["class_id"], geometry, strict=True)
    )


def test_vectors_to_a_bucket_equal_those_of_the_run_on_disk(s3, remote_assets, prefect_api,
                                                           tmp_path):
    env = {**s3.env(tmp_path / "home"), "PREFECT_API_URL": prefect_api}
    local = tmp_path / "local"
    local.mkdir()
    done = segpipe(["run", "--input", remote_assets["scene"], "--output", local / "mask.tif",
                    "--vectors", local / "polys.gpkg", *_args(str(remote_assets["model"]))],
                   env, tmp_path)
    assert done.returncode == 0, done.stderr

    s3.bucket("vectors")
    remote = segpipe(["run", "--input", remote_assets["scene_url"], "--output",
                      "s3://vectors/out/mask.tif", "--vectors", "s3://vectors/polys/scene.gpkg",
                      *_args(remote_assets["model_url"])], env, tmp_path)
    assert remote.returncode == 0, remote.stderr
    fetched = tmp_path / "fetched.gpkg"
    s3.fs().get_file("vectors/polys/scene.gpkg", str(fetched))
    crs, polygons = _polygons(fetched)
    assert (crs, polygons) == _polygons(local / "polys.gpkg") and polygons

    again = segpipe(["run", "--input", remote_assets["scene_url"], "--output",
                     "s3://vectors/out/other.tif", "--vectors", "s3://vectors/polys/scene.gpkg",
                     *_args(remote_assets["model_url"])], env, tmp_path)
    assert again.returncode == 2, again.stderr  # an existing object is kept without --overwrite
    assert again.stderr.startswith("error: --vectors s3://vectors/polys/scene.gpkg exists")
