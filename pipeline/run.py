"""The stages of a run as plain functions: plan, ingest, segment, export, report.

Prefect flows (``segpipe.flows``) orchestrate these; they also run in one process without
Prefect (``run_local``), which is what the tests use as the reference path.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segpipe.models import (
    Geometry,
    LoadedModel,
    ModelCard,
    Normalization,
    NormMethod,
    load_model,
    probe_geometry,
)
from segpipe.models.errors import InputError, ModelError, OutputExistsError
from segpipe.pipeline import __version__
from segpipe.pipeline.export import OutputFormat, export
from segpipe.pipeline.infer import Runner, label_dtype, nodata_label, resolve_device
from segpipe.pipeline.io.base import RasterInfo, open_raster
from segpipe.pipeline.io.zarrstore import create_array, ingest, open_array
from segpipe.pipeline.normalize import Normalizer, compute_normalizer
from segpipe.pipeline.segment import BlockResult, SegmentJob, keep_model, segment_block
from segpipe.pipeline.stitch import Blend
from segpipe.pipeline.tiling import TilePlan

log = logging.getLogger("segpipe")

DEFAULT_TILE = 512
DEFAULT_SAME_HALO = 32
BLOCK_PIXELS = 2048


@dataclass(frozen=True)
class RunOptions:
    """Everything ``segpipe run`` was asked for."""

    input: str
    output: str
    model: str = "unet"
    tile: int = DEFAULT_TILE
    halo: int | None = None
    blend: Blend = Blend.CROP
    batch_size: int = 4
    device: str = "auto"
    bands: tuple[int, ...] | None = None
    normalize: NormMethod | None = None
    probabilities: bool = False
    overwrite: bool = False
    workdir: str | None = None
    level: int = 0
    bf16: bool = False
    overview_resampling: str = "nearest"
    keep_workdir: bool = False


@dataclass(frozen=True)
class Prepared:
    """A checked plan: input, model, geometry, tiles and normalization, ready to segment."""

    options: RunOptions
    info: RasterInfo
    card: ModelCard
    model_sha256: str
    geometry: Geometry
    plan: TilePlan
    num_classes: int
    out_channels: int
    bands: tuple[int, ...]
    normalizer: Normalizer
    workdir: str
    warnings: tuple[str, ...] = field(default=())

    @property
    def image_path(self) -> str:
        """The ingested image in the work directory."""
        return str(Path(self.workdir) / "image.zarr")

    @property
    def labels_path(self) -> str:
        """The label array in the work directory."""
        return str(Path(self.workdir) / "labels.zarr")

    @property
    def probabilities_path(self) -> str | None:
        """The probability array, when asked for."""
        return str(Path(self.workdir) / "probabilities.zarr") if self.options.probabilities else None

    def job(self) -> SegmentJob:
        """The job description every block task receives."""
        return SegmentJob(
            image_path=self.image_path,
            labels_path=self.labels_path,
            model=self.options.model,
            model_sha256=self.model_sha256,
            plan=self.plan,
            margin=self.geometry.margin,
            num_classes=self.num_classes,
            bands=self.bands,
            normalizer=self.normalizer,
            nodata=self.info.nodata,
            blend=self.options.blend,
            batch_size=self.options.batch_size,
            device=self.options.device,
            bf16=self.options.bf16,
            probabilities_path=self.probabilities_path,
        )


def default_workdir(output: str) -> str:
    """The work directory beside the output: ``.<output name>.segpipe``."""
    out = Path(output)
    return str(out.with_name(f".{out.name}.segpipe"))


def check_output(options: RunOptions) -> None:
    """Refuse to overwrite an existing output without ``--overwrite``; check the extension."""
    OutputFormat.of(options.output)
    out = Path(options.output)
    if out.exists() and not options.overwrite:
        raise OutputExistsError(f"--output {out} exists; pass --overwrite to replace it")
    if not out.parent.exists():
        raise InputError(f"--output {out}: directory {out.parent} does not exist")


def select_bands(info: RasterInfo, bands: tuple[int, ...] | None, expected: int | None):
    """0-based band indices from 1-based ``--bands`` (default: the first ``expected`` bands)."""
    if bands is None:
        if expected is None or info.bands == expected:
            return tuple(range(info.bands))
        raise InputError(
            f"{info.path} has {info.bands} bands but the model expects {expected}: "
            f"choose {expected} with --bands (e.g. --bands {','.join(map(str, range(1, expected + 1)))})"
        )
    bad = [b for b in bands if not 1 <= b <= info.bands]
    if bad:
        raise InputError(f"--bands {bad} out of range: {info.path} has bands 1..{info.bands}")
    if expected is not None and len(bands) != expected:
        raise InputError(f"--bands selects {len(bands)} bands but the model expects {expected}")
    return tuple(b - 1 for b in bands)


def prepare(options: RunOptions, model: LoadedModel) -> Prepared:
    """Check input, model and options together and build the plan; computes nothing per tile."""
    warnings: list[str] = []
    with open_raster(options.input, level=options.level) as reader:
        info = reader.info
        card = model.card
        expected = card.bands if card else model.in_channels
        bands = select_bands(info, options.bands, expected)
        stride = card.stride if card and card.stride else getattr(model, "stride", None)
        geometry = probe_geometry(model, len(bands), stride=stride)
        if options.tile % geometry.stride:
            lower = options.tile - options.tile % geometry.stride
            raise InputError(
                f"--tile {options.tile} is not a multiple of the model's stride {geometry.stride}:"
                f" use {lower or geometry.stride} or {lower + geometry.stride}"
            )
        halo = _choose_halo(options.halo, card, geometry, warnings)
        size = options.tile + 2 * halo
        extra = geometry.fit(size) - size
        ring = 1 if options.blend is Blend.GAUSSIAN and halo > geometry.margin else 0
        plan = TilePlan(
            info.height, info.width, options.tile, halo, extra,
            block=max(1, BLOCK_PIXELS // options.tile), ring=ring,
        )
        out_channels = _out_channels(model, card, len(bands), plan.input_size, geometry)
        num_classes = max(out_channels, 2)
        if card is None:
            card = ModelCard.default(Path(options.model).stem, len(bands), num_classes)
        norm = card.normalization
        if options.normalize is not None:
            norm = Normalization(options.normalize)
        selected = list(bands)
        normalizer = compute_normalizer(
            norm, dtype=info.dtype, bands=len(bands), nodata=info.nodata,
            read=lambda w: reader.read(w)[selected], shape=info.shape,
        )
    workdir = options.workdir or default_workdir(options.output)
    return Prepared(
        options, info, card, model.sha256, geometry, plan, num_classes, out_channels, bands,
        normalizer,
        workdir, tuple(warnings),
    )


def _choose_halo(halo: int | None, card: ModelCard | None, g: Geometry, warnings: list[str]):
    if halo is None and card is not None and card.halo is not None:
        halo = card.halo
    if halo is None:
        if g.margin > 0:
            return g.margin
        warnings.append(
            f"the model has no halo in its card and pads its convolutions ('same'): using a halo "
            f"of {DEFAULT_SAME_HALO} px; set --halo to the model's receptive-field radius for "
            "exact results"
        )
        return DEFAULT_SAME_HALO
    if halo < g.margin:
        raise InputError(
            f"--halo {halo} is smaller than the model's margin {g.margin} (valid convolutions "
            f"consume {g.margin} px per side): use --halo {g.margin} or more"
        )
    return halo


def _out_channels(model, card: ModelCard | None, channels: int, size: int, g: Geometry) -> int:
    x = np.zeros((1, channels, size, size), np.float32)
    out = Runner(model, model.device)(x)
    expected = size - 2 * g.margin
    if tuple(out.shape[-2:]) != (expected, expected):
        raise ModelError(
            f"the model maps {size}×{size} to {tuple(out.shape[-2:])}, expected {expected}×{expected}"
        )
    k = int(out.shape[1])
    if card is not None and max(k, 2) != card.num_classes:
        raise ModelError(
            f"the model card lists {card.num_classes} classes but the model outputs {k} channels"
        )
    return k


def ingest_image(prep: Prepared) -> None:
    """Stream the chosen level into the work directory's Zarr array, chunked at the tile size."""
    with open_raster(prep.options.input, level=prep.options.level) as reader:
        ingest(reader, prep.image_path, prep.plan.tile)


def create_outputs(prep: Prepared) -> None:
    """Create the label (and probability) arrays the blocks write into."""
    k = prep.num_classes
    shape, tile = prep.plan.height, prep.plan.tile
    create_array(
        prep.labels_path, (shape, prep.plan.width), (tile, tile), str(label_dtype(k)),
        fill_value=nodata_label(k),
    )
    if prep.probabilities_path:
        channels = prep.out_channels
        create_array(
            prep.probabilities_path, (channels, shape, prep.plan.width), (channels, tile, tile),
            "float16",
        )


def segment_all(
    prep: Prepared, blocks: Iterable[tuple[int, int]] | None = None,
    on_block: Callable[[BlockResult], None] | None = None,
) -> list[BlockResult]:
    """Segment blocks one after another in this process (the reference path)."""
    job = prep.job()
    results = []
    todo = blocks if blocks is not None else [b.index for b in prep.plan.blocks()]
    for index in todo:
        result = segment_block(job, index)
        results.append(result)
        if on_block:
            on_block(result)
    return results


def class_counts(labels_path: str, num_classes: int) -> dict[int, int]:
    """Pixel count per label value (nodata included under its own value), chunk by chunk."""
    labels = open_array(labels_path, mode="r")
    counts = np.zeros(nodata_label(num_classes) + 1, np.int64)
    step = labels.chunks[0]
    for r in range(0, labels.shape[0], step):
        counts += np.bincount(np.asarray(labels[r : r + step]).ravel(), minlength=counts.size)
    return {i: int(c) for i, c in enumerate(counts) if c}


def pixel_area(info: RasterInfo) -> tuple[float, str] | None:
    """Area of one pixel and its unit, when the input says (projected CRS or physical size)."""
    if info.transform and info.crs_wkt:
        from rasterio.crs import CRS

        crs = CRS.from_wkt(info.crs_wkt)
        if crs.is_projected and (crs.linear_units or "").lower() in ("metre", "meter", "m"):
            a, b, _, d, e, _ = info.transform
            return abs(a * e - b * d), "m2"
        return None
    if info.pixel_size and info.pixel_unit:
        return info.pixel_size[0] * info.pixel_size[1], f"{info.pixel_unit}2"
    return None


def report(prep: Prepared, results: list[BlockResult], stage_seconds: dict[str, float]) -> dict:
    """The run summary (also written as JSON in the work directory)."""
    counts = class_counts(prep.labels_path, prep.num_classes)
    area = pixel_area(prep.info)
    nodata = nodata_label(prep.num_classes)
    classes = []
    for i, c in enumerate(prep.card.classes):
        n = counts.get(i, 0)
        entry: dict = {"label": i, "name": c.name, "pixels": n}
        if area:
            entry["area"] = n * area[0]
            entry["area_unit"] = area[1]
        classes.append(entry)
    seconds = stage_seconds.get("segment", 0.0)
    megapixels = prep.plan.height * prep.plan.width / 1e6
    return {
        "segpipe_version": __version__,
        "input": prep.options.input,
        "output": prep.options.output,
        "model": {"name": prep.card.name, "sha256": prep.model_sha256, "path": prep.options.model},
        "image": {"height": prep.info.height, "width": prep.info.width, "bands": list(prep.bands)},
        "tile": prep.plan.tile,
        "halo": prep.plan.halo,
        "extra": prep.plan.extra,
        "margin": prep.geometry.margin,
        "blend": str(prep.options.blend),
        "normalizer": prep.normalizer.to_dict(),
        "tiles": prep.plan.n_tiles,
        "blocks": len(results),
        "nodata_pixels": counts.get(nodata, 0),
        "classes": classes,
        "stage_seconds": stage_seconds,
        "megapixels_per_second": megapixels / seconds if seconds else None,
        "warnings": list(prep.warnings),
    }


def run_local(
    options: RunOptions,
    progress: Callable[[BlockResult], None] | None = None,
    on_start: Callable[[int, float], None] | None = None,
) -> dict:
    """Run every stage in this process; returns the summary. The output appears only at the end."""
    check_output(options)
    times: dict[str, float] = {}
    t = time.perf_counter()
    device = str(resolve_device(options.device))
    model = load_model(options.model, device=device)
    keep_model(model, device)
    prep = prepare(options, model)
    times["plan"] = time.perf_counter() - t
    for w in prep.warnings:
        log.warning(w)
    Path(prep.workdir).mkdir(parents=True, exist_ok=True)
    if on_start:
        on_start(prep.plan.n_blocks, prep.plan.height * prep.plan.width / 1e6)
    t = time.perf_counter()
    ingest_image(prep)
    create_outputs(prep)
    times["ingest"] = time.perf_counter() - t
    t = time.perf_counter()
    results = segment_all(prep, on_block=progress)
    times["segment"] = time.perf_counter() - t
    t = time.perf_counter()
    export(prep)
    times["export"] = time.perf_counter() - t
    summary = report(prep, results, times)
    Path(prep.workdir, "summary.json").write_text(summary_json(summary))
    if not options.keep_workdir:
        shutil.rmtree(prep.workdir, ignore_errors=True)
    return summary


def summary_json(summary: dict) -> str:
    """The summary as indented JSON."""
    return json.dumps(summary, indent=2, default=str)
