"""The plan stage: check input, model and options together, before any block is scheduled.

:func:`plan_run` opens the raster once (level 0; other levels are derived from its metadata),
loads the model once (on the device asked for, which is checked here), probes the model's
geometry once (margin, stride, class count), and refuses with a :class:`SegpipeError` anything
that would make blocks fail: a missing device, a band count the model does not take, a tile that
is not a multiple of the stride, a halo below a valid model's margin, an output that exists or
cannot be written. The result, a :class:`RunPlan`, is all the later stages need; it holds small
values only (paths, the tile plan, the card), never the model or arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from segpipe.models.card import ModelCard, Normalization
from segpipe.models.foundation import InputError, ModelError, RasterError, resolve_device
from segpipe.models.loading import LoadedModel, load_model_cached
from segpipe.models.probe import Geometry, probe_geometry
from segpipe.pipeline.io.base import RasterInfo, open_raster
from segpipe.pipeline.io.pyramid import choose_level, info_at_level
from segpipe.pipeline.io.units import unit_in_meters
from segpipe.pipeline.io.zarrstore import direct_source
from segpipe.pipeline.keys import InputIdentity, LabelKey
from segpipe.pipeline.labels import nodata_label
from segpipe.pipeline.normalize import Normalizer
from segpipe.pipeline.options import Blend, RunOptions, SourceOptions
from segpipe.pipeline.outputs import (
    check_output_exists,
    check_output_path,
    default_workdir,
    is_segpipe_output,
)
from segpipe.pipeline.segment import SegmentJob
from segpipe.pipeline.tiling import TilePlan
from segpipe.pipeline.workdir import WorkDir

__all__ = ["RunPlan", "plan_run", "preflight"]

log = logging.getLogger("segpipe")

DEFAULT_SAME_HALO = 32


@dataclass(frozen=True)
class RunPlan:
    """A checked run: input, model, geometry, tiles, normalization and work directory."""

    options: RunOptions
    info: RasterInfo
    identity: InputIdentity
    card: ModelCard
    model_sha256: str
    geometry: Geometry
    tiles: TilePlan
    bands: tuple[int, ...]
    normalization: Normalization
    workdir: WorkDir
    source_array: str | None = None
    warnings: tuple[str, ...] = ()
    normalizer: Normalizer | None = field(default=None)

    @property
    def name(self) -> str:
        """A short name for the input (its file name)."""
        return Path(self.options.input.rstrip("/")).name

    @property
    def num_classes(self) -> int:
        """Classes of the labels (2 for a one-channel model)."""
        return self.geometry.num_classes

    @property
    def nodata(self) -> int:
        """The label value of nodata."""
        return nodata_label(self.num_classes)

    @property
    def image_path(self) -> str:
        """The image the blocks read: the input's own Zarr array, or the ingested copy."""
        return self.source_array or self.workdir.image

    @property
    def probabilities_path(self) -> str | None:
        """The probability array, when asked for."""
        return self.workdir.probabilities if self.options.inference.probabilities else None

    def label_key(self) -> LabelKey:
        """Everything that changes what the blocks write (guards ``--resume``)."""
        o = self.options
        return LabelKey(self.identity, self.model_sha256, {
            "bands": [b + 1 for b in self.bands],
            "level": self.info.level,
            "tile": self.tiles.tile,
            "halo": self.tiles.halo,
            "blend": o.tiling.blend,
            "normalize": self.normalization.to_dict(),
            "precision": o.inference.precision,
            "block": self.tiles.block,
            "probabilities": o.inference.probabilities,
        })

    def export_key(self) -> dict[str, Any]:
        """The output-only settings: changing them only writes the output again."""
        e = self.options.export
        return {
            "format": self.options.output_format,
            "overview_resampling": e.overview_resampling,
            "ngff_version": e.ngff_version,
            "probabilities_dtype": e.probabilities_dtype,
        }

    def with_normalizer(self, normalizer: Normalizer) -> RunPlan:
        """The same plan with its normalization statistics."""
        return replace(self, normalizer=normalizer)

    def job(self) -> SegmentJob:
        """What every block task receives (small, picklable)."""
        if self.normalizer is None:
            raise RuntimeError("the normalization statistics are not computed yet (stats stage)")
        o = self.options.inference
        return SegmentJob(
            image_path=self.image_path, labels_path=self.workdir.labels,
            probabilities_path=self.probabilities_path, model=_absolute_if_file(o.model),
            model_sha256=self.model_sha256, tiles=self.tiles, margin=self.geometry.margin,
            num_classes=self.num_classes, bands=self.bands, normalizer=self.normalizer,
            nodata=self.info.nodata, blend=self.options.tiling.blend, batch_size=o.batch_size,
            device=o.device, precision=o.precision, workdir=self.workdir,
        )


def _absolute_if_file(path: str) -> str:
    """Local files as absolute paths (workers may run elsewhere); names and URLs unchanged."""
    p = Path(path)
    return str(p.resolve()) if "://" not in path and p.exists() else path


def preflight(options: RunOptions) -> str:
    """The checks that need neither the model nor the raster; returns the resolved device.

    The output's extension and folder, the input's existence, an existing output that segpipe
    did not write (without ``--overwrite``), and the device. The command line runs them for
    every input before starting Prefect or Dask; :func:`plan_run` runs them again.
    """
    check_output_path(options)
    if "://" not in options.input and not Path(options.input).exists():
        raise RasterError(f"--input {options.input}: file not found; check the path")
    if not options.overwrite and not is_segpipe_output(options.output):
        check_output_exists(options)
    return str(resolve_device(options.inference.device))


def plan_run(options: RunOptions) -> RunPlan:
    """Check ``options`` against the input and the model and build the plan (reads no pixels)."""
    device = preflight(options)
    model = load_model_cached(options.inference.model, device)
    with open_raster(options.input) as reader:
        base = reader.info
    info = info_at_level(base, choose_input_level(options.source, base, model.card))
    bands = select_bands(info, options.source.bands, _expected_bands(model))
    stride = model.card.stride if model.card and model.card.stride else None
    geometry = probe_geometry(model, len(bands), stride=stride)
    card = _card(model, options, len(bands), geometry)
    tiles, warnings = _tile_plan(options, info, card, geometry)
    norm = card.normalization
    if options.inference.normalize is not None:
        norm = Normalization(options.inference.normalize)
    workdir = WorkDir(str(Path(options.workdir or default_workdir(options.output)).absolute()))
    return RunPlan(
        options=options, info=info, identity=InputIdentity.of(options.input), card=card,
        model_sha256=model.sha256, geometry=geometry, tiles=tiles, bands=bands,
        normalization=norm, workdir=workdir, warnings=tuple(warnings),
        source_array=direct_source(_absolute_if_file(options.input), info, tiles.tile),
    )


def _expected_bands(model: LoadedModel) -> int | None:
    return model.card.bands if model.card else model.in_channels


def _card(model: LoadedModel, options: RunOptions, bands: int, geometry: Geometry) -> ModelCard:
    """The model's card (checked against the probed class count), or a default one."""
    card = model.card
    if card is None:
        return ModelCard.default(Path(options.inference.model).stem, bands, geometry.num_classes)
    if card.num_classes != geometry.num_classes:
        raise ModelError(
            f"the model card lists {card.num_classes} classes but the model outputs "
            f"{geometry.out_channels} channels; fix the card's classes"
        )
    return card


def _tile_plan(
    options: RunOptions, info: RasterInfo, card: ModelCard, geometry: Geometry
) -> tuple[TilePlan, list[str]]:
    tiling = options.tiling
    if tiling.tile % geometry.stride:
        lower = tiling.tile - tiling.tile % geometry.stride
        raise InputError(
            f"--tile {tiling.tile} is not a multiple of the model's stride {geometry.stride}:"
            f" use {lower or geometry.stride} or {lower + geometry.stride}"
        )
    warnings: list[str] = []
    halo = choose_halo(tiling.halo, card, geometry, warnings)
    size = tiling.tile + 2 * halo
    ring = 1 if tiling.blend is Blend.GAUSSIAN and halo > geometry.margin else 0
    tiles = TilePlan(
        info.height, info.width, tiling.tile, halo, geometry.fit(size) - size,
        block=max(1, tiling.block_pixels // tiling.tile), ring=ring,
    )
    return tiles, warnings


def select_bands(
    info: RasterInfo, bands: tuple[int, ...] | None, expected: int | None
) -> tuple[int, ...]:
    """0-based band indices from 1-based ``--bands`` (default: all bands, which must fit)."""
    if bands is None:
        if expected is None or info.bands == expected:
            return tuple(range(info.bands))
        example = ",".join(map(str, range(1, min(expected, info.bands) + 1)))
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


def choose_input_level(source: SourceOptions, info: RasterInfo, card: ModelCard | None) -> int:
    """The pyramid level to read: ``--level``, ``--pixel-size``, else the card's pixel size.

    The card's pixel size (in its own length unit) is used only for inputs with several levels
    whose pixel size is in a known length unit too; otherwise level 0.
    """
    if source.level is not None or source.pixel_size is not None:
        return choose_level(info, level=source.level, pixel_size=source.pixel_size)
    if card is None or card.pixel_size is None or len(info.levels) < 2:
        return 0
    card_m = unit_in_meters(card.pixel_size_unit)
    input_m = _input_unit_in_meters(info)
    if card_m is None or input_m is None:
        return 0
    return choose_level(info, level=None, pixel_size=card.pixel_size * card_m / input_m)


def _input_unit_in_meters(info: RasterInfo) -> float | None:
    if info.pixel_unit:
        return unit_in_meters(info.pixel_unit)
    if info.crs_wkt:
        from rasterio.crs import CRS

        crs = CRS.from_wkt(info.crs_wkt)
        return crs.linear_units_factor[1] if crs.is_projected else None
    return None


def choose_halo(halo: int | None, card: ModelCard, g: Geometry, warnings: list[str]) -> int:
    """``--halo``, else the card's, else the model's margin; never below a valid model's margin."""
    if halo is None and card.halo is not None:
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
