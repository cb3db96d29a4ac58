"""The typed run summary (issue 20, item 3): what ``run_one`` returns is what the run wrote.

One tiled microscopy run with instances (every part of the summary is filled: classes with
areas and densities, the instance counts and their histogram, the normalizer), kept work
directory. Oracles: the sidecar and ``summary.json`` read back with :mod:`json` (the files
are the schema the README documents), the labels and instances read back by tifffile and
counted with numpy.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile

import segpipe
from segpipe.pipeline.inputchecks import warn_if_all_nodata
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from segpipe.pipeline.summary import RunSummary, SkippedRun
from tests.io.iohelpers import write_ome_tiff
from tests.pipeline.instances.synthetic import disks
from tests.pipeline.labelmodel import argmax_model, one_hot

CLASSES = 3
OPTIONS = {"tile": 16, "block_pixels": 32, "device": "cpu", "keep_workdir": True,
           "instance_labels": True, "instance_min_distance": 3, "instance_max_diameter": 32}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run's options, its returned summary, and its labels and instances read back."""
    folder = tmp_path_factory.mktemp("summary")
    drawn = disks((72, 88), 5, count=8, radius=(3, 6), classes=2)
    src = write_ome_tiff(folder / "scan.ome.tif", one_hot(drawn, CLASSES), "CYX",
                         pixel_size=(0.5, 0.5), tile=16)
    model = argmax_model(folder / "argmax.pt2", CLASSES)
    options = RunOptions.of(str(src), str(folder / "out.ome.tif"), model=str(model), **OPTIONS)
    summary = run_one(options)
    labels = tifffile.imread(folder / "out.ome.tif").astype(np.int64)
    ids = tifffile.imread(folder / "out.instances.ome.tif").astype(np.int64)
    return options, summary, labels, ids


def sidecar_summary(options: RunOptions) -> dict:
    sidecar = Path(options.output).parent / ".out.ome.tif.segpipe.json"
    return json.loads(sidecar.read_text())["summary"]


def test_the_returned_summary_is_the_sidecar_read_back(run):
    options, summary, _, _ = run
    written = sidecar_summary(options)
    assert isinstance(summary, RunSummary)
    assert summary.to_dict() == written
    assert list(summary.to_dict()) == list(written)  # the schema's key order too
    assert RunSummary.from_dict(written) == summary
    assert RunSummary.from_dict(summary.to_dict()) == summary


def test_summary_json_in_the_work_directory_is_the_summary_before_the_visuals(run):
    _, summary, _, _ = run
    written = json.loads((Path(summary.workdir) / "summary.json").read_text())
    seconds = dict(summary.stage_seconds)
    assert seconds.pop("visuals") >= 0  # timed after summary.json was written
    assert written == {**summary.to_dict(), "stage_seconds": seconds}
    assert RunSummary.from_dict(written) == replace(summary, stage_seconds=seconds)


def test_the_summary_attributes_match_the_files(run):
    _, summary, labels, ids = run
    assert (summary.image.height, summary.image.width) == labels.shape
    counts = np.bincount(labels.ravel(), minlength=256)
    assert [c.pixels for c in summary.classes] == counts[:CLASSES].tolist()
    assert summary.nodata_pixels == counts[255] == 0
    assert [c.area for c in summary.classes] == pytest.approx(
        (counts[:CLASSES] * 0.25).tolist(), rel=1e-12)  # µm² of 0.5 µm pixels
    assert summary.areas.unit == "um2" and summary.classes[0].density_unit == "per mm2"
    instances = summary.instances
    assert instances is not None and instances.total == ids.max()
    per_class = {k: len(np.unique(ids[(labels == k) & (ids > 0)])) for k in (1, 2)}
    assert {r.label: r.instances for r in instances.classes} == per_class
    assert instances.histogram is not None and sum(instances.histogram.counts) == ids.max()
    assert summary.skipped is None and summary.blocks == summary.blocks_computed


def test_the_summary_reads_as_the_dict_it_replaced(run):
    options, summary, _, _ = run
    written = sidecar_summary(options)
    assert dict(summary) == written and summary["classes"] == written["classes"]
    assert summary.get("skipped") is None and "instances" in summary


def test_an_up_to_date_rerun_is_a_skipped_run(run):
    options, summary, _, _ = run
    again = run_one(options)
    assert again == SkippedRun(options.input, options.output)
    assert again.skipped == "up to date" and again.get("skipped") == "up to date"
    assert SkippedRun.from_dict(json.loads(json.dumps(again.to_dict()))) == again
    assert sidecar_summary(options) == summary.to_dict()  # the skipped run wrote nothing


def test_segpipe_exports_the_record():
    assert segpipe.RunSummary is RunSummary and segpipe.SkippedRun is SkippedRun


def test_an_all_nodata_run_warns_from_the_record(run, caplog):
    _, summary, _, _ = run
    pixels = summary.image.height * summary.image.width
    empty = RunSummary.from_dict({**summary.to_dict(), "nodata_pixels": pixels})
    with caplog.at_level(logging.WARNING, logger="segpipe"):
        warn_if_all_nodata(summary)
        warn_if_all_nodata(SkippedRun("a.tif", "b.tif"))
        assert not caplog.records
        warn_if_all_nodata(empty)
    assert [r.getMessage().split(" is nodata")[0] for r in caplog.records] == [
        f"every pixel of {summary.input}"]
