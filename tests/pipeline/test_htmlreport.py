"""The run report: one self-contained HTML file beside the output (or in the work directory
when blocks failed) that parses, embeds its images and names every class present.

Oracles: the stdlib HTML parser, PIL decoding the embedded data URIs, and the output's labels
read back with rasterio (which classes occur, and how many pixels each has).
"""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from segpipe.models.foundation import BlocksFailedError
from segpipe.models.saving import export_program
from segpipe.pipeline.htmlreport import RunReport, render_report
from segpipe.pipeline.io.writers.common import companion_path
from segpipe.pipeline.legend import legend_entries
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.report import artifact_key
from segpipe.pipeline.stages import RunContext, Stage, run_one
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.test_exactness import tiny_unet
from tests.pipeline.test_nonfinite_logits import NanWhereBright
from tests.test_cli_contract import run_segpipe


class Page(HTMLParser):
    """Everything the tests look at: tags, image sources, the text of headings and cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("link", "script", "iframe") or attrs.get("href"):
            self.links.append(attrs.get("href") or attrs.get("src") or tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(path_or_text) -> Page:
    text = path_or_text.read_text("utf-8") if isinstance(path_or_text, Path) else path_or_text
    page = Page()
    page.feed(text)
    page.close()
    return page


def decoded_pngs(page: Page) -> list[Image.Image]:
    images = []
    for src in page.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix), src[:40]
        image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):], validate=True)))
        image.load()
        assert image.format == "PNG"
        images.append(image)
    return images


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_unet(tmp_path_factory.mktemp("m") / "unet.pt", 3, "valid")


def test_report_beside_the_output_embeds_the_quicklook_and_names_every_class(tmp_path, model):
    src = write_geotiff(tmp_path / "scene.tif", smooth_image((3, 150, 190), "uint8", seed=4))
    out = tmp_path / "mask.tif"
    summary = run_one(RunOptions.of(input=str(src), output=str(out), model=str(model), tile=32,
                                    device="cpu"))
    quicklook = companion_path(out, "quicklook", ".png")
    report = companion_path(out, "report", ".html")
    assert quicklook.is_file() and report.is_file()
    page = parse(report)
    assert not page.links  # self-contained: no stylesheet, script or link to fetch
    images = decoded_pngs(page)
    assert len(images) == 2  # the quicklook and the bar chart
    assert base64.b64decode(page.images[0].split(",", 1)[1]) == quicklook.read_bytes()
    with rasterio.open(out) as ds:
        labels = ds.read(1)
    names = [c["name"] for c in summary["classes"]]
    rows = {r[2]: r for r in page.rows if len(r) >= 6}  # class table: swatch, label, name, ...
    for value, count in zip(*np.unique(labels, return_counts=True)):
        if value == 255:
            continue
        row = rows[names[value]]
        assert row[1] == str(value) and row[3] == f"{count:,}"
        assert row[4].endswith(" ha")  # 30 m UTM pixels: hectares
    text = " ".join(page.text)
    for heading in ("Quicklook", "Classes", "Time", "Model", "Provenance"):
        assert heading in page.text
    assert summary["model"]["sha256"][:12] in text and str(src) in text


def test_report_escapes_run_text_and_lists_warnings_and_failed_blocks():
    hostile = '<script>alert("x")</script>'
    summary = {
        "input": f"/data/{hostile}.tif", "output": "/data/out.tif", "workdir": "/data/.w",
        "model": {"name": "m", "sha256": "ab" * 32, "path": "m.pt"},
        "classes": [{"label": 0, "name": hostile, "pixels": 10},
                    {"label": 1, "name": "b&b", "pixels": 0}],
        "nodata_pixels": 5, "stage_seconds": {"plan": 0.5}, "warnings": [f"careful {hostile}"],
        "failed_blocks": {"0_1": f"NaN logits {hostile}"}, "blocks": 4,
    }
    classes = legend_entries(summary, [(1, 2, 3), (4, 5, 6)])
    html = render_report(RunReport(summary=summary, classes=classes,
                                   model={"license": "CC-BY-4.0", "training_data": hostile}))
    page = parse(html)
    assert "script" not in page.tags and not page.links
    text = "".join(page.text)
    assert text.count(hostile) >= 5  # input, class, warning, failed block, training data
    assert "b&b" in text and "CC-BY-4.0" in text
    failed = [r for r in page.rows if r and r[0] == "0_1"]
    assert failed and hostile in failed[0][1]
    assert "Failed blocks" in page.text and "Warnings" in page.text
    decoded_pngs(page)  # the bar chart


def test_a_failed_run_keeps_its_report_in_the_work_directory(tmp_path):
    model = tmp_path / "nan_bright.pt2"
    export_program(NanWhereBright(limit=100.0), model, card=None, in_channels=1)
    image = np.random.default_rng(0).integers(0, 90, (1, 64, 96), dtype=np.uint8)
    image[0, 32:64, 32:64] = 200  # block 1_1 fails
    src = write_geotiff(tmp_path / "scene.tif", image)
    out = tmp_path / "out.tif"
    options = RunOptions.of(input=str(src), output=str(out), model=str(model), tile=32, halo=0,
                            block_pixels=32, device="cpu")
    with pytest.raises(BlocksFailedError):
        run_one(options)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "nan_bright.pt2", "scene.tif"]  # nothing beside the output
    workdir = tmp_path / ".out.tif.segpipe"
    page = parse(workdir / "out.report.html")
    assert [r[0] for r in page.rows if r and r[0] == "1_1"] == ["1_1"]
    assert (workdir / "out.quicklook.png").is_file()
    assert len(decoded_pngs(page)) == 2


def test_the_prefect_artifacts_link_the_report(tmp_path, model, monkeypatch):
    from segpipe.flows import flow

    made: dict = {}
    monkeypatch.setattr(flow, "create_link_artifact",
                        lambda link, **kw: made.setdefault("link", (link, kw)))
    monkeypatch.setattr(flow, "create_markdown_artifact",
                        lambda text, **kw: made.setdefault("markdown", (text, kw)))

    def call(stage, fn, *args):  # the flow's stage caller, without Prefect's task machinery
        return flow.report_and_publish(*args) if stage is Stage.REPORT else fn(*args)

    src = write_geotiff(tmp_path / "scene.tif", smooth_image((3, 40, 50), "uint8", seed=5))
    out = tmp_path / "mask.tif"
    run_one(RunOptions.of(input=str(src), output=str(out), model=str(model), tile=32,
                          device="cpu"), RunContext(call=call))
    uri = companion_path(out, "report", ".html").absolute().as_uri()
    link, kw = made["link"]
    assert link == uri and kw["key"] == artifact_key(str(src)) + "-html"
    text, kw = made["markdown"]
    assert uri in text and kw["key"] == artifact_key(str(src))


def test_segpipe_run_writes_the_quicklook_and_report_beside_the_output(tmp_path, model):
    src = write_geotiff(tmp_path / "scene.tif", smooth_image((3, 64, 80), "uint8", seed=7))
    out = tmp_path / "labels.tif"
    result = run_segpipe(["run", "--input", src, "--output", out, "--model", model,
                          "--tile", "32", "--workers", "0", "--quiet"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    quicklook, report = tmp_path / "labels.quicklook.png", tmp_path / "labels.report.html"
    with Image.open(quicklook) as img:
        assert img.format == "PNG" and img.mode == "RGBA" and img.size[0] >= 80
    page = parse(report)
    assert len(decoded_pngs(page)) == 2
