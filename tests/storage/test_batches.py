"""Batch folders, globs and ``serve --watch`` on bucket prefixes."""

from __future__ import annotations

import pytest

from segpipe.flows.inputs import expand_inputs
from segpipe.flows.serve import settled_files
from segpipe.models.foundation import InputError
from segpipe.pipeline.options import RunOptions


@pytest.fixture
def scans(s3, s3_env):
    s3.bucket("scans")
    fs = s3.fs()
    for name in ("a.tif", "b.tif", "notes.txt", ".hidden.tif", "sub/c.tif"):
        fs.pipe_file(f"scans/in/{name}", b"x")
    fs.pipe_file("scans/in/b.labels.tif", b"x")  # an output segpipe wrote (it has a sidecar):
    fs.pipe_file("scans/in/.b.labels.tif.segpipe.json", b"{}")  # never taken as an input
    return fs


def test_a_bucket_folder_and_a_glob_expand_to_their_objects(scans):
    template = RunOptions(input="s3://scans/in/", output="")
    jobs = expand_inputs(["s3://scans/in/"], "s3://scans/out/", template, "*.tif")
    assert [(j.input, j.output) for j in jobs] == [
        ("s3://scans/in/a.tif", "s3://scans/out/a.labels.tif"),
        ("s3://scans/in/b.tif", "s3://scans/out/b.labels.tif"),
    ]
    jobs = expand_inputs(["s3://scans/in/*.tif"], None, template)
    assert [(j.input, j.output) for j in jobs] == [
        ("s3://scans/in/a.tif", "s3://scans/in/a.labels.tif"),
        ("s3://scans/in/b.tif", "s3://scans/in/b.labels.tif"),
    ]
    (one,) = expand_inputs(["s3://scans/in/a.tif"], None, template)
    assert one.output == "s3://scans/in/a.labels.tif"
    with pytest.raises(InputError, match="matches no object"):
        expand_inputs(["s3://scans/in/*.svs"], None, template)


def test_watching_a_bucket_prefix_leaves_young_objects_for_later(scans):
    ready, young = settled_files("s3://scans/in/", "*.tif", settle=0)
    assert ready == ["s3://scans/in/a.tif", "s3://scans/in/b.tif"] and young == []
    ready, young = settled_files("s3://scans/in/", "*.tif", settle=3600)
    assert ready == [] and young == ["s3://scans/in/a.tif", "s3://scans/in/b.tif"]
