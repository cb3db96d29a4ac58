"""OME-Zarr in and out of a bucket: read straight from it, written to it, valid as on disk."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import ome_zarr_models
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Reader

from segpipe.pipeline.io.zarrpublish import output_group
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.io.test_ome_writers import ImageLabelV04, ImageLabelV05, ImageV04, ImageV05
from tests.storage.conftest import SECRET, bucket_files_text

SHAPE = (1, 150, 200)


def _write(path, data, version):
    """An OME-Zarr image (c, y, x) in 0.5 µm pixels, written by ome-zarr's own writer."""
    with warnings.catch_warnings():  # ome_zarr.writer deprecates its Scaler at import time
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.format import FormatV04, FormatV05
        from ome_zarr.scale import Methods
        from ome_zarr.writer import write_image

    fmt = FormatV04() if version == "0.4" else FormatV05()
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    window = {"min": 0, "max": 255, "start": 0, "end": 255}
    write_image(
        data, group, fmt=fmt, axes="cyx", scale={"c": 1.0, "y": 0.5, "x": 0.5},
        axes_units={"y": "micrometer", "x": "micrometer"}, scale_factors=(2,),
        method=Methods.NEAREST, storage_options={"chunks": (1, 64, 64)},
        omero={"channels": [{"label": "DAPI", "color": "FFFFFF", "window": window}]},
    )
    return path


def _label_levels(group: zarr.Group) -> list[np.ndarray]:
    labels = group["labels"]["labels"]
    attrs = labels.attrs.asdict()
    datasets = attrs.get("ome", attrs)["multiscales"][0]["datasets"]
    return [np.asarray(labels[d["path"]][:]) for d in datasets]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_from_and_to_a_bucket_passes_the_disk_validators(
    s3, s3_env, remote_assets, tmp_path, version, caplog
):
    data = (np.random.default_rng(5).random(SHAPE) * 255).astype(np.uint8)
    src = _write(tmp_path / "in.ome.zarr", data, version)
    bucket = f"slides-{version.replace('.', '')}"
    s3.bucket(bucket)
    fs = s3.fs()
    fs.put(str(src), f"{bucket}/in.ome.zarr", recursive=True)
    kw = {"model": str(remote_assets["model"]), "tile": 32, "block_pixels": 64,
          "device": "cpu", "ngff_version": version}

    run_one(RunOptions.of(str(src), str(tmp_path / "local.ome.zarr"), **kw))
    url = f"s3://{bucket}/out/mask.ome.zarr"
    run_one(RunOptions.of(f"s3://{bucket}/in.ome.zarr", url, keep_workdir=True, **kw))

    # read straight from the bucket: the level array itself, no ingested copy
    work = f"{bucket}/out/.mask.ome.zarr.segpipe"
    assert fs.exists(f"{work}/labels.zarr/zarr.json")
    assert not fs.find(f"{work}/image.zarr")
    # the output in the bucket, validated where it lies (ome-zarr-models over fsspec) ...
    remote = zarr.open_group(url, mode="r")
    image_class = ImageV04 if version == "0.4" else ImageV05
    assert isinstance(ome_zarr_models.open_ome_zarr(remote, version=version), image_class)
    # ... and a downloaded copy with the same validators and reader as the disk tests
    local_copy = tmp_path / "copy.ome.zarr"
    fs.get(f"{bucket}/out/mask.ome.zarr", str(local_copy), recursive=True)
    image_model = ome_zarr_models.open_ome_zarr(str(local_copy), version=version)
    assert isinstance(image_model, image_class)
    label_model = ome_zarr_models.open_ome_zarr(
        zarr.open_group(str(local_copy / "labels" / "labels"), mode="r"), version=version
    )
    assert isinstance(label_model, ImageLabelV04 if version == "0.4" else ImageLabelV05)
    with caplog.at_level(logging.ERROR):
        nodes = list(Reader(parse_url(str(local_copy)))())
    assert any(isinstance(s, Label) for n in nodes for s in n.specs)
    image = next(n for n in nodes if any(isinstance(s, Multiscales) for s in n.specs)
                 and not any(isinstance(s, Label) for s in n.specs))
    on_disk = zarr.open_group(str(tmp_path / "local.ome.zarr"), mode="r")
    np.testing.assert_array_equal(np.asarray(image.data[0]), np.asarray(on_disk["0"][:]))
    # the labels equal the run on disk, level by level
    disk = _label_levels(on_disk)
    for mine, expected in zip(_label_levels(remote), disk, strict=True):
        np.testing.assert_array_equal(mine, expected)
    assert SECRET not in bucket_files_text(fs, f"{bucket}/out")


def test_an_ome_zarr_output_has_no_root_metadata_until_it_is_complete(s3, s3_env):
    s3.bucket("publish")
    fs = s3.fs()
    url = "s3://publish/mask.ome.zarr"
    with output_group(url, 3) as root:
        root.create_array("0", shape=(4, 4), chunks=(2, 2), dtype="uint8")[:] = 1
        root.attrs["ome"] = {"version": "0.5"}
        assert fs.exists("publish/mask.ome.zarr/0/zarr.json")  # arrays are written in place
        assert not fs.exists("publish/mask.ome.zarr/zarr.json")  # the root is held back
    assert zarr.open_group(url, mode="r").attrs["ome"] == {"version": "0.5"}

    with pytest.raises(RuntimeError), output_group("s3://publish/broken.ome.zarr", 2) as root:
        root.create_array("0", shape=(4, 4), chunks=(2, 2), dtype="uint8")[:] = 1
        raise RuntimeError("killed midway")
    assert not fs.find("publish/broken.ome.zarr")  # nothing is left, nothing was published
