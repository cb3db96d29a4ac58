"""The stages of a run as plain functions: plan, ingest, stats, segment, export, report.

Prefect flows (``segpipe.flows``) orchestrate these and send the blocks to Dask workers; they
also run in one process without Prefect (``run_local``), which is what the tests use as the
reference path. Both keep the same work directory: a manifest (``pipeline.manifest``) keyed by
input, model and parameters, and one marker per finished block, so an interrupted run resumes
where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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
from segpipe.models.loading import file_sha256
from segpipe.pipeline import __version__
from segpipe.pipeline.export import OutputFormat, export
from segpipe.pipeline.infer import Runner, label_dtype, nodata_label, resolve_device
from segpipe.pipeline.io.base import RasterInfo, open_raster
from segpipe.pipeline.io.levels import choose_level, unit_in_meters
from segpipe.pipeline.io.zarrstore import create_array, direct_source, ingest, open_array
from segpipe.pipeline.manifest import (
    BlockRecord,
    InputIdentity,
    Manifest,
    RunKey,
    clear_done,
    done_blocks,
    mark_done,
    open_workdir,
    write_atomic,
)
from segpipe.pipeline.normalize import Normalizer, compute_normalizer
from segpipe.pipeline.segment import (
    SegmentJob,
    cached_model,
    keep_model,
    segment_block,
)
from segpipe.pipeline.stitch import Blend
from segpipe.pipeline.tiling import TilePlan

log = logging.getLogger("segpipe")

DEFAULT_TILE = 512
DEFAULT_SAME_HALO = 32
BLOCK_PIXELS = 2048
# GDAL's block cache while streaming whole images (ingest, export). GDAL's default, 5 % of the
# RAM, would make the driver's memory grow with the image up to that much.
GDAL_CACHE_BYTES = 64 << 20


def bounded_gdal_cache():
    """A rasterio environment whose GDAL block cache is ``GDAL_CACHE_BYTES``."""
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)


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
    level: int | None = None
    pixel_size: float | None = None
    bf16: bool = False
    overview_resampling: str = "nearest"
    probabilities_uint8: bool = False
    ngff_version: str = "0.4"
    keep_workdir: bool = False
    block_pixels: int = BLOCK_PIXELS

    def __post_init__(self) -> None:
        if self.block_pixels < 1:
            raise InputError(
                f"block size must be a positive number of pixels, got {self.block_pixels}"
            )

    def for_file(self, input: str, output: str) -> RunOptions:
        """These settings for another input and output (batches reuse one set of settings)."""
        return replace(self, input=input, output=output)

    def parameters(self) -> dict[str, Any]:
        """The settings that shape the labels or the output file (the manifest's key).

        Paths and the handling switches (overwrite, workdir, keep_workdir) are not part of it;
        the model enters the key by its sha256, not its path.
        """
        return {
            "tile": self.tile,
            "halo": self.halo,
            "blend": str(self.blend),
            "batch_size": self.batch_size,
            "device": self.device,
            "bands": list(self.bands) if self.bands is not None else None,
            "normalize": str(self.normalize) if self.normalize is not None else None,
            "probabilities": self.probabilities,
            "level": self.level,
            "pixel_size": self.pixel_size,
            "bf16": self.bf16,
            "overview_resampling": self.overview_resampling,
            "probabilities_uint8": self.probabilities_uint8,
            "ngff_version": self.ngff_version,
            "block_pixels": self.block_pixels,
        }


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
    normalizer: Normalizer | None
    workdir: str
    warnings: tuple[str, ...] = field(default=())
    level: int = 0
    source_array: str | None = None

    @property
    def name(self) -> str:
        """A short name for the input (its file name)."""
        return Path(self.options.input.rstrip("/")).name

    def key(self) -> RunKey:
        """What identifies this run: input, model hash and parameters."""
        return run_key(self.options, self.model_sha256)

    def with_normalizer(self, normalizer: Normalizer) -> Prepared:
        """The same plan with its normalization statistics."""
        return replace(self, normalizer=normalizer)

    @property
    def image_path(self) -> str:
        """The image the blocks read: the input's own Zarr array, or the ingested copy."""
        return self.source_array or str(Path(self.workdir) / "image.zarr")

    @property
    def labels_path(self) -> str:
        """The label array in the work directory."""
        return str(Path(self.workdir) / "labels.zarr")

    @property
    def probabilities_path(self) -> str | None:
        """The probability array, when asked for."""
        if not self.options.probabilities:
            return None
        return str(Path(self.workdir) / "probabilities.zarr")

    def job(self) -> SegmentJob:
        """The job description every block task receives."""
        if self.normalizer is None:
            raise RuntimeError("the normalization statistics are not computed yet (stats stage)")
        return SegmentJob(
            image_path=self.image_path,
            labels_path=self.labels_path,
            model=_absolute_if_file(self.options.model),
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


def _absolute_if_file(path: str) -> str:
    """Local files as absolute paths (workers may run elsewhere); names and URLs unchanged."""
    p = Path(path)
    return str(p.resolve()) if "://" not in path and p.exists() else path


def run_key(options: RunOptions, model_sha256: str) -> RunKey:
    """The key of a run of ``options`` with the model whose hash is ``model_sha256``."""
    return RunKey(InputIdentity.of(options.input), model_sha256, options.parameters())


def default_workdir(output: str) -> str:
    """The work directory beside the output: ``.<output name>.segpipe``."""
    out = Path(output).absolute()
    return str(out.with_name(f".{out.name}.segpipe"))


def sidecar_path(output: str) -> Path:
    """The small JSON file beside an output: the run key and summary that produced it."""
    out = Path(output)
    return out.with_name(f".{out.name}.segpipe.json")


def output_is_current(options: RunOptions, model_sha256: str) -> bool:
    """Whether ``options.output`` exists and was made from this input, model and parameters."""
    side = sidecar_path(options.output)
    if not Path(options.output).exists() or not side.is_file():
        return False
    try:
        stored = RunKey.from_dict(json.loads(side.read_text(encoding="utf-8"))["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return not run_key(options, model_sha256).differences(stored)


def is_segpipe_output(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an output segpipe wrote (it has a sidecar)."""
    return sidecar_path(os.fspath(path)).is_file()


def check_output(options: RunOptions) -> None:
    """Refuse to overwrite an existing output without ``--overwrite``; check the extension."""
    OutputFormat.from_path(options.output)
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
        example = ",".join(map(str, range(1, expected + 1)))
        raise InputError(
            f"{info.path} has {info.bands} bands but the model expects {expected}: "
            f"choose {expected} with --bands (e.g. --bands {example})"
        )
    bad = [b for b in bands if not 1 <= b <= info.bands]
    if bad:
        raise InputError(f"--bands {bad} out of range: {info.path} has bands 1..{info.bands}")
    if expected is not None and len(bands) != expected:
        raise InputError(f"--bands selects {len(bands)} bands but the model expects {expected}")
    return tuple(b - 1 for b in bands)


def prepare(options: RunOptions, model: LoadedModel) -> Prepared:
    """Check input, model and options together, build the plan and compute the statistics.

    Computes nothing per tile; reads only the statistics sample of the input.
    """
    return compute_stats(plan_run(options, model))


def plan_run(options: RunOptions, model: LoadedModel) -> Prepared:
    """Check input, model and options together and build the plan (no statistics yet)."""
    warnings: list[str] = []
    card = model.card
    level = choose_input_level(options, card)
    with open_raster(options.input, level=level) as reader:
        info = reader.info
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
        block=max(1, options.block_pixels // options.tile), ring=ring,
    )
    out_channels = _out_channels(model, card, len(bands), plan.input_size, geometry)
    num_classes = max(out_channels, 2)
    if card is None:
        card = ModelCard.default(Path(options.model).stem, len(bands), num_classes)
    workdir = str(Path(options.workdir or default_workdir(options.output)).absolute())
    return Prepared(
        options, info, card, model.sha256, geometry, plan, num_classes, out_channels, bands,
        None, workdir, tuple(warnings), level,
        direct_source(_absolute_if_file(options.input), info, options.tile),
    )


def choose_input_level(options: RunOptions, card: ModelCard | None) -> int:
    """The pyramid level to read: ``--level``, ``--pixel-size``, else the card's pixel size.

    The card's pixel size (in its own length unit) is used only for inputs with several levels
    whose pixel size is in a known length unit too; otherwise level 0.
    """
    with open_raster(options.input) as reader:
        info = reader.info
    if options.level is not None or options.pixel_size is not None:
        return choose_level(info, level=options.level, pixel_size=options.pixel_size)
    if card is None or card.pixel_size is None or len(info.levels) < 2:
        return 0
    card_m = unit_in_meters(card.pixel_size_unit)
    if info.pixel_unit:
        input_m = unit_in_meters(info.pixel_unit)
    elif info.crs_wkt:
        from rasterio.crs import CRS

        crs = CRS.from_wkt(info.crs_wkt)
        input_m = crs.linear_units_factor[1] if crs.is_projected else None
    else:
        input_m = None
    if card_m is None or input_m is None:
        return 0
    return choose_level(info, level=None, pixel_size=card.pixel_size * card_m / input_m)


def compute_stats(prep: Prepared, source: str | None = None) -> Prepared:
    """``prep`` with its normalizer: the card's (or ``--normalize``'s) method on this image.

    Statistics are read from ``source`` (the ingested copy, say) when given, else from the
    input at ``--level``; both hold the same pixels.
    """
    norm = prep.card.normalization
    if prep.options.normalize is not None:
        norm = Normalization(prep.options.normalize)
    selected = list(prep.bands)
    path, level = (source, 0) if source else (prep.options.input, prep.level)
    with open_raster(path, level=level) as reader:
        normalizer = compute_normalizer(
            norm, dtype=prep.info.dtype, bands=len(selected), nodata=prep.info.nodata,
            read=lambda w: reader.read(w)[selected], shape=prep.info.shape,
        )
    return prep.with_normalizer(normalizer)


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
            f"the model maps {size}×{size} to {tuple(out.shape[-2:])}, "
            f"expected {expected}×{expected}"
        )
    k = int(out.shape[1])
    if card is not None and max(k, 2) != card.num_classes:
        raise ModelError(
            f"the model card lists {card.num_classes} classes but the model outputs {k} channels"
        )
    return k


def ingest_image(prep: Prepared) -> None:
    """Stream the chosen level into the work directory's Zarr array, chunked at the tile size.

    Nothing is copied when the input is already a Zarr array with usable chunks.
    """
    if prep.source_array:
        return
    with open_raster(prep.options.input, level=prep.level) as reader:
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


# ------------------------------------------------------------------------ the work directory


def new_manifest(prep: Prepared) -> Manifest:
    """The manifest a new run of ``prep`` starts with."""
    plan = prep.plan
    return Manifest(
        key=prep.key(),
        output=str(Path(prep.options.output).absolute()),
        plan={
            "height": plan.height, "width": plan.width, "tile": plan.tile, "halo": plan.halo,
            "extra": plan.extra, "block": plan.block, "ring": plan.ring, "blocks": plan.n_blocks,
        },
        segpipe_version=__version__,
    )


def open_run(prep: Prepared, *, resume: bool) -> tuple[Prepared, Manifest, bool]:
    """Open (or resume) the work directory of ``prep``; returns (prep, manifest, resumed).

    A resumed run takes its normalization statistics from the manifest, so every block of it
    is normalized alike. Raises :class:`~segpipe.models.errors.ResumeError` when the directory
    holds another run, or holds a run and ``resume`` is false.
    """
    manifest, resumed = open_workdir(prep.workdir, new_manifest(prep), resume=resume)
    if manifest.normalizer is not None:
        prep = prep.with_normalizer(Normalizer.from_dict(dict(manifest.normalizer)))
    return prep, manifest, resumed


def ingest_stage(prep: Prepared, manifest: Manifest) -> Manifest:
    """Ingest the input and create the label arrays, unless an earlier attempt finished that."""
    if "ingest" in manifest.stages:
        return manifest
    start = time.perf_counter()
    with bounded_gdal_cache():
        ingest_image(prep)
    create_outputs(prep)
    clear_done(prep.workdir)  # fresh label arrays: no block of them is finished
    manifest = manifest.with_stage("ingest", time.perf_counter() - start)
    manifest.save(prep.workdir)
    return manifest


def stats_stage(prep: Prepared, manifest: Manifest) -> tuple[Prepared, Manifest]:
    """Normalization statistics from the ingested copy, once per run (kept in the manifest)."""
    if manifest.normalizer is not None:
        return prep.with_normalizer(Normalizer.from_dict(dict(manifest.normalizer))), manifest
    start = time.perf_counter()
    prep = compute_stats(prep, source=prep.image_path)
    assert prep.normalizer is not None
    manifest = replace(manifest, normalizer=prep.normalizer.to_dict())
    manifest = manifest.with_stage("stats", time.perf_counter() - start)
    manifest.save(prep.workdir)
    return prep, manifest


def export_stage(prep: Prepared, manifest: Manifest) -> Manifest:
    """Write the output file (atomically) from the label array."""
    start = time.perf_counter()
    sidecar_path(prep.options.output).unlink(missing_ok=True)  # it described the old output
    with bounded_gdal_cache():
        export(prep)
    manifest = manifest.with_stage("export", time.perf_counter() - start)
    manifest.save(prep.workdir)
    return manifest


def finish(prep: Prepared, summary: dict) -> None:
    """Keep the summary (work directory and the output's sidecar); drop the work directory."""
    Path(prep.workdir, "summary.json").write_text(summary_json(summary))
    write_atomic(
        sidecar_path(prep.options.output),
        json.dumps({"key": prep.key().to_dict(), "summary": summary}, indent=2, default=str),
    )
    if not prep.options.keep_workdir:
        shutil.rmtree(prep.workdir, ignore_errors=True)


# ------------------------------------------------------------------------------- segmenting


class BlocksFailedError(RuntimeError):
    """Blocks that still failed after their retries (written as nodata; the run is incomplete)."""


@dataclass(frozen=True)
class SegmentOutcome:
    """What the segment stage did: blocks computed now, reused from before, and failed."""

    total: int
    reused: int
    records: tuple[BlockRecord, ...]
    failed: dict[str, str]
    seconds: float

    @property
    def megapixels(self) -> float:
        """Megapixels segmented by this attempt."""
        return sum(r.pixels for r in self.records) / 1e6


def block_id(index: tuple[int, int]) -> str:
    """The id of block ``index`` (the same as :attr:`segpipe.pipeline.tiling.Block.id`)."""
    return f"{index[0]}_{index[1]}"


def pending_blocks(plan: TilePlan, done: Collection[str]) -> list[tuple[int, int]]:
    """Indices of the blocks of ``plan`` not in ``done``, row by row; reads and computes nothing."""
    rows, cols = plan.block_grid
    return [(i, j) for i in range(rows) for j in range(cols) if f"{i}_{j}" not in done]


def block_pixels(plan: TilePlan, index: tuple[int, int]) -> int:
    """Pixels of the core of block ``index`` (cheaper than building the block)."""
    side = plan.block * plan.tile
    r0, c0 = index[0] * side, index[1] * side
    return (min(side, plan.height - r0)) * (min(side, plan.width - c0))


def new_run_id() -> str:
    """A fresh id for one attempt at a run (block markers say which attempt wrote them)."""
    return uuid.uuid4().hex[:12]


def segment_and_record(
    job: SegmentJob, index: tuple[int, int], workdir: str, run_id: str, worker: str = "local",
) -> BlockRecord:
    """Segment one block, then mark it done (the body of every block task)."""
    result = segment_block(job, index)
    record = BlockRecord(
        block_id=result.block_id, pixels=result.pixels, nodata_pixels=result.nodata_pixels,
        seconds=result.seconds, worker=worker, pid=os.getpid(), run_id=run_id,
    )
    mark_done(workdir, record)
    return record


def write_nodata(prep: Prepared, index: tuple[int, int]) -> None:
    """Fill the core of a failed block with the nodata label (and zero probabilities)."""
    rows, cols = prep.plan.block_at(*index).core.slices
    open_array(prep.labels_path)[rows, cols] = nodata_label(prep.num_classes)
    if prep.probabilities_path:
        open_array(prep.probabilities_path)[:, rows, cols] = 0


def segment_local(
    prep: Prepared, *, run_id: str | None = None,
    on_block: Callable[[BlockRecord], None] | None = None,
) -> SegmentOutcome:
    """Segment the unfinished blocks one after another in this process (the reference path)."""
    start = time.perf_counter()
    run_id = run_id or new_run_id()
    job = prep.job()
    done = done_blocks(prep.workdir)
    records, failed = [], {}
    for index in pending_blocks(prep.plan, done):
        try:
            record = segment_and_record(job, index, prep.workdir, run_id)
        except Exception as exc:
            failed[block_id(index)] = f"{type(exc).__name__}: {exc}"
            write_nodata(prep, index)
            continue
        records.append(record)
        if on_block:
            on_block(record)
    return SegmentOutcome(
        prep.plan.n_blocks, len(done), tuple(records), failed, time.perf_counter() - start
    )


def failure_message(prep: Prepared, failed: dict[str, str]) -> str:
    """One line on failed blocks: how many, which, the first error, and what to do."""
    ids = sorted(failed)
    shown = ", ".join(ids[:10]) + (", …" if len(ids) > 10 else "")
    return (
        f"{len(ids)} of {prep.plan.n_blocks} blocks of {prep.options.input} failed after retries "
        f"({shown}; first error: {failed[ids[0]]}); they are nodata in the label array and no "
        f"output was written. Partial results are kept in {prep.workdir}: fix the cause and rerun "
        "with --resume"
    )


# ---------------------------------------------------------------------------------- report


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


def report(prep: Prepared, outcome: SegmentOutcome, stage_seconds: dict[str, float]) -> dict:
    """The run summary (also written as JSON in the work directory and beside the output)."""
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
    workers: dict[str, int] = {}
    for r in outcome.records:
        workers[r.worker] = workers.get(r.worker, 0) + 1
    return {
        "segpipe_version": __version__,
        "input": prep.options.input,
        "output": prep.options.output,
        "workdir": prep.workdir,
        "model": {"name": prep.card.name, "sha256": prep.model_sha256, "path": prep.options.model},
        "image": {"height": prep.info.height, "width": prep.info.width, "bands": list(prep.bands)},
        "tile": prep.plan.tile,
        "halo": prep.plan.halo,
        "extra": prep.plan.extra,
        "margin": prep.geometry.margin,
        "blend": str(prep.options.blend),
        "normalizer": prep.normalizer.to_dict() if prep.normalizer else None,
        "tiles": prep.plan.n_tiles,
        "blocks": outcome.total,
        "blocks_computed": len(outcome.records),
        "blocks_reused": outcome.reused,
        "failed_blocks": dict(sorted(outcome.failed.items())),
        "workers": workers,
        "nodata_pixels": counts.get(nodata, 0),
        "classes": classes,
        "stage_seconds": stage_seconds,
        "megapixels": outcome.megapixels,
        "megapixels_per_second": outcome.megapixels / seconds if seconds else None,
        "warnings": list(prep.warnings),
    }


def summary_markdown(summary: dict) -> str:
    """The summary as a short Markdown report (the Prefect artifact)."""
    lines = [
        f"# segpipe: {Path(summary['input']).name}",
        "",
        f"- input: `{summary['input']}`",
        f"- output: `{summary['output']}`",
        f"- model: {summary['model']['name']} (sha256 `{summary['model']['sha256'][:12]}`)",
        f"- image: {summary['image']['height']} × {summary['image']['width']} px, "
        f"tile {summary['tile']}, halo {summary['halo']}, blend {summary['blend']}",
        f"- tiles: {summary['tiles']}; blocks: {summary['blocks']} "
        f"({summary['blocks_computed']} computed, {summary['blocks_reused']} reused)",
    ]
    mps = summary.get("megapixels_per_second")
    if mps:
        lines.append(f"- speed: {mps:.2f} MP/s")
    if summary["failed_blocks"]:
        failed = ", ".join(f"`{b}`" for b in summary["failed_blocks"])
        lines.append(f"- **failed blocks (nodata)**: {failed}")
    lines += ["", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in summary["stage_seconds"].items()]
    lines += ["", "| label | class | pixels | area |", "|---:|---|---:|---:|"]
    for c in summary["classes"]:
        area = f"{c['area']:.4g} {c['area_unit']}" if "area" in c else ""
        lines.append(f"| {c['label']} | {c['name']} | {c['pixels']} | {area} |")
    lines.append(f"| nodata | | {summary['nodata_pixels']} | |")
    for w in summary["warnings"]:
        lines.append(f"\n> warning: {w}")
    return "\n".join(lines) + "\n"


def artifact_key(input_path: str) -> str:
    """A Prefect artifact key for an input: lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", Path(input_path.rstrip("/")).name.lower()).strip("-")
    return f"segpipe-report-{slug or 'input'}"[:100]


# ------------------------------------------------------------------------------ one process


def run_local(
    options: RunOptions,
    progress: Callable[[BlockRecord], None] | None = None,
    on_start: Callable[[int, float], None] | None = None,
    *,
    resume: bool = False,
) -> dict:
    """Run every stage in this process; returns the summary. The output appears only at the end.

    ``progress`` is called after each block, ``on_start(blocks, megapixels)`` before the first.
    The work directory is the one Prefect runs use, so either may resume the other.
    """
    check_output(options)
    times: dict[str, float] = {}
    t = time.perf_counter()
    device = str(resolve_device(options.device))
    model = load_model(options.model, device=device)
    keep_model(model, device)
    prep = plan_run(options, model)
    for w in prep.warnings:
        log.warning(w)
    prep, manifest, _ = open_run(prep, resume=resume)
    times["plan"] = time.perf_counter() - t
    t = time.perf_counter()
    manifest = ingest_stage(prep, manifest)
    times["ingest"] = time.perf_counter() - t
    t = time.perf_counter()
    prep, manifest = stats_stage(prep, manifest)
    times["stats"] = time.perf_counter() - t
    if on_start:
        todo = pending_blocks(prep.plan, done_blocks(prep.workdir))
        on_start(len(todo), sum(block_pixels(prep.plan, i) for i in todo) / 1e6)
    t = time.perf_counter()
    outcome = segment_local(prep, on_block=progress)
    times["segment"] = time.perf_counter() - t
    if outcome.failed:
        summary = report(prep, outcome, times)
        Path(prep.workdir, "summary.json").write_text(summary_json(summary))
        raise BlocksFailedError(failure_message(prep, outcome.failed))
    t = time.perf_counter()
    manifest = export_stage(prep, manifest)
    times["export"] = time.perf_counter() - t
    summary = report(prep, outcome, times)
    finish(prep, summary)
    return summary


def driver_model(model: str, device: str = "cpu") -> LoadedModel:
    """The model the driver plans with, loaded once per process (a file is keyed by its hash)."""
    path = Path(model)
    if path.is_file():
        return cached_model(model, file_sha256(path), device)
    return cached_model(model, f"name:{model}", device)


def summary_json(summary: dict) -> str:
    """The summary as indented JSON."""
    return json.dumps(summary, indent=2, default=str)
