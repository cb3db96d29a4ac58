"""``segpipe inspect``: what segpipe reads from an input and how ``segpipe run`` would cut it.

:func:`inspect_input` opens the input once (metadata only) and returns an
:class:`InspectReport`: format and reader; size, bands, dtype and nodata; the CRS and the pixel
size with its unit (metres or the CRS's unit for projected rasters, degrees for geographic
ones, the physical unit for microscopy); the pyramid levels; and the tile plan, built by the
functions ``segpipe run`` plans with (:mod:`segpipe.pipeline.plan`). Without ``--model`` it
names the bundled model ``run`` would choose (:mod:`segpipe.pipeline.choose`) and plans with
``--tile`` (default 512) and ``--halo`` (default 0).

With ``--model`` it loads and probes the model as ``run`` does, takes the level ``run`` would
read, runs ``run``'s checks and lists what ``run`` would refuse (band count, tile against
stride, halo against margin, the card's classes, a fixed input size) as problems instead of
stopping at the first; when there is none it reads one tile and estimates the run's time and
memory (:mod:`segpipe.pipeline.estimate`).

:meth:`InspectReport.to_dict` is the ``--json`` schema (:data:`SCHEMA`), documented in the
README; keys are only ever added to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from segpipe.models.foundation import InputError, ModelError, resolve_device
from segpipe.pipeline.bands import select_bands
from segpipe.pipeline.io.base import RasterInfo, open_raster
from segpipe.pipeline.io.pyramid import choose_input_level, info_at_level
from segpipe.pipeline.options import DEFAULT_TILE, RunOptions, TilingOptions
from segpipe.pipeline.rasterdescribe import (
    CrsSummary,
    LevelSummary,
    PixelSize,
    RasterSummary,
    describe_raster,
)
from segpipe.pipeline.tiling import TilePlan, read_mirrored

if TYPE_CHECKING:
    from segpipe.models.card import ModelCard
    from segpipe.models.loading import LoadedModel
    from segpipe.models.probe import Geometry
    from segpipe.pipeline.estimate import Estimate

__all__ = [
    "SCHEMA",
    "CrsSummary",
    "InspectReport",
    "LevelSummary",
    "ModelSummary",
    "PixelSize",
    "PlanSummary",
    "RasterSummary",
    "inspect_input",
]

#: The name and version of the ``--json`` schema.
SCHEMA = "segpipe.inspect/1"

T = TypeVar("T")


# ----------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class PlanSummary:
    """The tile plan over the level that would be read."""

    level: int
    tiles: TilePlan
    from_model: bool

    @property
    def padded_size(self) -> tuple[int, int]:
        """(height, width) of the mirror-extended image the tiles' read windows cover."""
        rows, cols = self.tiles.grid
        t = self.tiles
        return rows * t.tile + 2 * t.halo + t.extra, cols * t.tile + 2 * t.halo + t.extra

    def to_dict(self) -> dict[str, Any]:
        """The ``plan`` object of ``--json``."""
        t = self.tiles
        (rows, cols), (brows, bcols) = t.grid, t.block_grid
        height, width = self.padded_size
        return {
            "level": self.level, "width": t.width, "height": t.height, "tile": t.tile,
            "halo": t.halo, "extra": t.extra, "input_size": t.input_size,
            "tiles": {"rows": rows, "cols": cols, "total": t.n_tiles},
            "blocks": {"rows": brows, "cols": bcols, "total": t.n_blocks,
                       "tiles_per_side": t.block, "ring": t.ring},
            "padded": {"width": width, "height": height},
            "from_model": self.from_model,
        }


@dataclass(frozen=True)
class ModelSummary:
    """The model as ``run`` would load it, and what ``run`` would make of it."""

    model: str
    format: str
    card: str | None
    bands: int | None
    band_names: tuple[str, ...] | None
    bands_read: tuple[int, ...] | None
    classes: tuple[str, ...]
    margin: int | None
    stride: int | None
    device: str
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        """The ``model`` object of ``--json``."""
        return {
            "model": self.model, "format": self.format, "card": self.card, "bands": self.bands,
            "band_names": list(self.band_names) if self.band_names else None,
            "bands_read": [b + 1 for b in self.bands_read] if self.bands_read else None,
            "classes": list(self.classes), "margin": self.margin, "stride": self.stride,
            "device": self.device, "batch_size": self.batch_size,
        }


@dataclass(frozen=True)
class InspectReport:
    """Everything ``segpipe inspect`` shows; :meth:`to_dict` is the ``--json`` schema."""

    raster: RasterSummary
    plan: PlanSummary
    model: ModelSummary | None = None
    bundled: str | None = None
    bundled_reason: str | None = None
    estimate: Estimate | None = None
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object (see the README's ``segpipe inspect`` section)."""
        bundled = None
        if self.model is None:
            bundled = {"model": self.bundled, "reason": self.bundled_reason}
        return {
            "schema": SCHEMA,
            "input": self.raster.to_dict(),
            "plan": self.plan.to_dict(),
            "model": self.model.to_dict() if self.model else None,
            "bundled_choice": bundled,
            "estimate": self.estimate.to_dict() if self.estimate is not None else None,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }


# --------------------------------------------------------------------------- the raster




def inspect_input(options: RunOptions, *, estimate: bool = True) -> InspectReport:
    """Inspect ``options.input`` with the settings ``segpipe run`` would get from ``options``.

    Raises :class:`SegpipeError` (exit 2) only when inspecting itself is impossible: an input
    that cannot be read, a model that cannot be loaded, a device that is not there, a level
    that does not exist. What ``run`` would refuse is listed in ``problems``. ``estimate``:
    time one tile through the model (when there is a model and no problem).
    """
    with open_raster(options.input, options=options.source.reader) as reader:
        base, reader_name = reader.info, type(reader).__name__
    if options.source.nodata is not None:
        base = replace(base, nodata=options.source.nodata)
    raster = describe_raster(base, reader_name)
    if options.inference.model is None:
        return _without_model(options, base, raster)
    return _with_model(options, base, raster, estimate)


def _attempt(problems: list[str], check: Callable[[], T], fallback: T) -> T:
    """``check()``, or ``fallback`` with the refusal added to ``problems``."""
    try:
        return check()
    except (InputError, ModelError) as exc:
        if str(exc) not in problems:
            problems.append(str(exc))
        return fallback


def _without_model(options: RunOptions, base: RasterInfo, raster: RasterSummary) -> InspectReport:
    """The report without a model: the bundled choice, and a plan from --tile and --halo."""
    from segpipe.models.bundled import bundled_models
    from segpipe.pipeline.choose import choose_bundled
    from segpipe.pipeline.plan import tile_plan

    problems: list[str] = []
    choice = _attempt(problems, lambda: choose_bundled(base, options.source, bundled_models()),
                      None)
    level = choose_input_level(options.source, base, None)
    tiling = options.tiling
    tiles = tile_plan(info_at_level(base, level), tiling, tiling.tile or DEFAULT_TILE,
                      tiling.halo or 0, None)
    return InspectReport(
        raster=raster, plan=PlanSummary(level, tiles, from_model=False),
        bundled=str(choice.model.path) if choice else None,
        bundled_reason=choice.reason if choice else (problems[0] if problems else None),
        problems=tuple(problems),
    )


@dataclass(frozen=True)
class _Probed:
    """The model part of ``run``'s plan: the model, the level and bands read, its geometry."""

    model: LoadedModel
    device: str
    info: RasterInfo
    bands: tuple[int, ...] | None
    channels: int
    geometry: Geometry | None
    seconds: float
    model_bytes: int


def _with_model(
    options: RunOptions, base: RasterInfo, raster: RasterSummary, estimate: bool
) -> InspectReport:
    """The report with a model: ``run``'s plan, its problems and, without any, the estimate."""
    from segpipe.pipeline.plan import check_model_name

    problems: list[str] = []
    warnings: list[str] = []
    _attempt(problems, lambda: check_model_name(options.inference), None)
    probed = _probe(options, base, problems)
    card, tiles = _card_and_plan(options, probed, problems, warnings)
    result = None
    if estimate and not problems:
        result = _estimate(options, probed, tiles)
    return InspectReport(
        raster=raster,
        plan=PlanSummary(probed.info.level, tiles, from_model=probed.geometry is not None),
        model=_model_summary(options, probed, card), estimate=result,
        problems=tuple(problems), warnings=tuple(warnings),
    )


def _probe(options: RunOptions, base: RasterInfo, problems: list[str]) -> _Probed:
    """Load the model, choose the level, select the bands and probe, as ``plan_run`` does."""
    from segpipe.models.loading import load_model
    from segpipe.models.pinning import check_pinned
    from segpipe.models.probe import probe_geometry
    from segpipe.pipeline.estimate import resident_bytes
    from segpipe.pipeline.plan import expected_bands

    device = str(resolve_device(options.inference.device))
    if options.inference.model and options.inference.model_sha256:  # before a byte is loaded
        check_pinned(options.inference.model, options.inference.model_sha256)
    start, before = time.perf_counter(), resident_bytes()
    model = load_model(options.inference.model or "", device)
    model_bytes = max(0, resident_bytes() - before)
    info = info_at_level(base, choose_input_level(options.source, base, model.card))
    expected = expected_bands(model)
    bands = _attempt(problems, lambda: select_bands(info, options.source.bands, expected), None)
    channels = len(bands) if bands is not None else expected or len(info.image_bands)
    stride = model.card.stride if model.card and model.card.stride else None
    geometry = _attempt(problems, lambda: probe_geometry(
        model, channels, stride=stride, fixed_size=model.fixed_size), None)
    return _Probed(model, device, info, bands, channels, geometry,
                   time.perf_counter() - start, model_bytes)


def _card_and_plan(
    options: RunOptions, p: _Probed, problems: list[str], warnings: list[str]
) -> tuple[ModelCard | None, TilePlan]:
    """The card ``run`` would use (checked) and its tile plan; the options' plan unprobed."""
    from segpipe.pipeline.plan import model_card

    tiling = options.tiling
    if p.geometry is None:
        tiles = _plain_plan(p.info, tiling, tiling.tile or DEFAULT_TILE, tiling.halo or 0)
        return p.model.card, tiles
    g = p.geometry
    _attempt(problems, lambda: model_card(p.model, options, p.channels, g), None)
    card = p.model.card or model_card(p.model, options, p.channels, g)
    return card, _model_plan(options, p.info, card, g, problems, warnings)


def _model_summary(options: RunOptions, p: _Probed, card: ModelCard | None) -> ModelSummary:
    own = p.model.card
    return ModelSummary(
        model=options.inference.model or "", format=p.model.format.value,
        card=own.name if own else None, bands=own.bands if own else p.model.in_channels,
        band_names=own.band_names if own else None, bands_read=p.bands,
        classes=tuple(c.name for c in card.classes) if card else (),
        margin=p.geometry.margin if p.geometry else None,
        stride=p.geometry.stride if p.geometry else None, device=p.device,
        batch_size=options.inference.batch_size,
    )


def _plain_plan(info: RasterInfo, tiling: TilingOptions, tile: int, halo: int) -> TilePlan:
    from segpipe.pipeline.plan import tile_plan

    return tile_plan(info, tiling, tile, halo, None)


def _model_plan(
    options: RunOptions, info: RasterInfo, card: ModelCard, geometry: Geometry,
    problems: list[str], warnings: list[str],
) -> TilePlan:
    """``run``'s tile plan (``plan._tile_plan``'s steps), recording refusals as problems."""
    from segpipe.pipeline.plan import check_stride, choose_halo, choose_tile, tile_plan

    tiling = options.tiling
    asked = tiling.halo if tiling.halo is not None else card.halo or 0
    halo = _attempt(problems, lambda: choose_halo(tiling.halo, card, geometry, warnings), asked)
    name = Path(options.inference.model or "model").name
    tile = _attempt(
        problems, lambda: choose_tile(tiling.tile, halo, geometry, name, card, warnings),
        tiling.tile or DEFAULT_TILE,
    )
    _attempt(problems, lambda: check_stride(tile, geometry), None)
    planned = _attempt(problems, lambda: tile_plan(info, tiling, tile, halo, geometry), None)
    return planned or _plain_plan(info, tiling, tile, halo)


def _estimate(options: RunOptions, p: _Probed, tiles: TilePlan) -> Estimate | None:
    """Time one tile of the input through the model; the run's time and memory from it."""
    from segpipe.pipeline.estimate import (
        BlockBuffers,
        batch_size_for,
        estimate,
        resident_bytes,
        time_forward,
    )

    if p.bands is None or p.geometry is None:
        return None
    inference = options.inference
    process_bytes = resident_bytes()
    tile = _one_tile(options, p.info, tiles, p.bands)
    batch = batch_size_for(tiles, inference.batch_size)
    timing = time_forward(p.model, tile, inference.precision, batch)
    block = BlockBuffers.of(
        tiles, bands=len(p.bands), bands_read=p.info.bands,
        itemsize=np.dtype(p.info.dtype).itemsize, classes=p.geometry.out_channels,
        blend=options.tiling.blend, probabilities=inference.probabilities,
    )
    return estimate(
        timing, tiles, plan_seconds=p.seconds, process_bytes=process_bytes,
        model_bytes=p.model_bytes, block=block, device=p.device,
    )


def _one_tile(
    options: RunOptions, info: RasterInfo, tiles: TilePlan, bands: tuple[int, ...]
) -> np.ndarray:
    """The centre tile's read window (halo, mirror padding), as float32 scaled to [0, 1].

    The values only need to be plausible: a convolutional network's time does not depend on
    them (non-finite values, which could slow some kernels, become 0).
    """
    rows, cols = tiles.grid
    window = tiles.tile_at(rows // 2, cols // 2).read
    picked = list(bands)
    with open_raster(options.input, level=info.level, options=options.source.reader) as reader:
        pixels = read_mirrored(lambda w: reader.read(w)[picked], window, info.height, info.width)
    x = np.nan_to_num(pixels.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.abs(x).max()) if x.size else 0.0
    return x / peak if peak > 0 else x
