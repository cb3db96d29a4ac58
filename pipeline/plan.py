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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from segpipe.models.card import ModelCard, Normalization, NormMethod
from segpipe.models.foundation import (
    InputError,
    ModelError,
    RasterError,
    resolve_device,
)
from segpipe.models.loading import LoadedModel, load_model_cached
from segpipe.models.location import is_url
from segpipe.models.pinning import check_pinned
from segpipe.models.probe import Geometry, probe_geometry
from segpipe.pipeline.access import check_run_urls
from segpipe.pipeline.areas import needs_row_counts
from segpipe.pipeline.bands import select_bands
from segpipe.pipeline.boundedcache import BoundedCache
from segpipe.pipeline.diskspace import check_free_space
from segpipe.pipeline.feed import Feed
from segpipe.pipeline.inputchecks import check_meanstd_bands, check_pixel_type
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.heldreader import input_reader
from segpipe.pipeline.io.integrity import check_tiff_holds_data
from segpipe.pipeline.io.preview import decimation_step
from segpipe.pipeline.io.pyramid import choose_input_level, info_at_level
from segpipe.pipeline.io.readeroptions import ReaderOptions
from segpipe.pipeline.io.zarrstore import direct_source
from segpipe.pipeline.keys import InputIdentity, LabelKey
from segpipe.pipeline.labels import nodata_label
from segpipe.pipeline.mask import RegionMask, region_mask
from segpipe.pipeline.normalize import Normalizer
from segpipe.pipeline.options import (
    InferenceOptions,
    RunOptions,
)
from segpipe.pipeline.outputs import (
    check_output_carries_georeferencing,
    check_output_exists,
    check_output_path,
    cut_off_output,
    is_segpipe_output,
    workdir_of,
)
from segpipe.pipeline.quicklook import MAX_SIDE as QUICKLOOK_SIDE
from segpipe.pipeline.segment import SegmentJob
from segpipe.pipeline.sensor import resolve_normalization
from segpipe.pipeline.tilechoice import (
    check_stride,
    choose_halo,
    choose_tile,
    tile_plan,
)
from segpipe.pipeline.tiling import TilePlan
from segpipe.pipeline.workdir import WorkDir

__all__ = [
    "RunPlan",
    "check_model_name",
    "check_stride",
    "choose_halo",
    "choose_tile",
    "expected_bands",
    "model_card",
    "plan_run",
    "plan_tiles",
    "preflight",
    "probe_cached",
    "run_normalization",
    "tile_plan",
]

log = logging.getLogger("segpipe")

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
    mask: RegionMask | None = None

    @property
    def name(self) -> str:
        """A short name for the input (its file name)."""
        return Path(self.options.input.rstrip("/")).name

    @property
    def model(self) -> str:
        """The model file (or registry name) the run uses: ``--model`` or the chosen one."""
        model = self.options.inference.model
        if model is None:
            raise RuntimeError("a plan always names its model (plan_run fills it in)")
        return model

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
    def valid_path(self) -> str | None:
        """The ingested mask band (True where valid), when the input's GDAL mask is a band."""
        mask = self.info.mask
        band = mask is not None and mask.is_band and not self.source_array
        return self.workdir.valid if band else None

    @property
    def reader_options(self) -> ReaderOptions:
        """What every open of the input is given: a STAC item's stacked bands and resampling."""
        return self.options.source.reader

    def reading(self) -> dict[str, Any]:
        """How segpipe made the input's pixels, where it made them: a STAC item's resampling.

        In the label key (other pixels, other labels) and what the summary says of the input;
        empty for any other input, which is read as it is.
        """
        if self.info.format != "stac":
            return {}
        return {"resampling": str(self.reader_options.resampling)}

    def _band_key(self) -> list[int] | list[str]:
        """The label key's bands: numbers, or a STAC item's names (its stack varies with them)."""
        names = self.info.channel_names
        if self.info.format == "stac" and names:
            return [names[b] for b in self.bands]
        return [b + 1 for b in self.bands]

    @property
    def probabilities_path(self) -> str | None:
        """The probability array, when asked for."""
        return self.workdir.probabilities if self.options.inference.probabilities else None

    def label_key(self) -> LabelKey:
        """Everything that changes what the blocks write (guards ``--resume``)."""
        o = self.options
        return LabelKey(self.identity, self.model_sha256, {
            "bands": self._band_key(),
            "level": self.info.level,
            "tile": self.tiles.tile,
            "halo": self.tiles.halo,
            "blend": o.tiling.blend,
            "normalize": self.normalization.to_dict(),
            "precision": o.inference.precision,
            "block": self.tiles.block,
            "probabilities": o.inference.probabilities,
            "nodata": self.info.nodata,
            **({"mask": self.mask.key()} if self.mask is not None else {}),
            **({"gdal_mask": str(self.info.mask)} if self.valid_path else {}),
            **({"backend": o.inference.backend} if o.inference.backend != "eager" else {}),
            **self.reading(),
        })

    def export_key(self) -> dict[str, Any]:
        """The output-only settings: changing them only writes the output again."""
        e = self.options.export
        return {
            "format": self.options.output_format,
            "overview_resampling": e.overview_resampling,
            "ngff_version": e.ngff_version,
            "probabilities_dtype": e.probabilities_dtype,
            **({"vectors": e.vectors if is_url(e.vectors) else str(Path(e.vectors).absolute()),
                "vectors_min_area": e.vectors_min_area} if e.vectors else {}),
            **({"instances": asdict(self.options.instances)}  # never in the label key
               if self.options.instances.wanted else {}),
        }

    def with_normalizer(self, normalizer: Normalizer) -> RunPlan:
        """The same plan with its normalization statistics."""
        return replace(self, normalizer=normalizer)

    def job(self) -> SegmentJob:
        """What every block task receives (small, picklable)."""
        if self.normalizer is None:
            raise RuntimeError("the normalization statistics are not computed yet (stats stage)")
        from segpipe.pipeline.backends import block_model

        o = self.options.inference
        model, sha256 = block_model(self)
        return SegmentJob(
            image_path=self.image_path, labels_path=self.workdir.labels,
            probabilities_path=self.probabilities_path, model=_absolute_if_file(model),
            model_sha256=sha256, tiles=self.tiles, margin=self.geometry.margin,
            num_classes=self.num_classes, bands=self.bands, normalizer=self.normalizer,
            nodata=self.info.nodata, blend=self.options.tiling.blend, batch_size=o.batch_size,
            device=o.device, precision=o.precision, workdir=self.workdir, mask=self.mask,
            compiled=o.backend == "compile", row_counts=needs_row_counts(self.info),
            valid_path=self.valid_path, feed=self.feed(),
        )

    def feed(self) -> Feed | None:
        """How the blocks' input is copied ahead of them; None when they read it in place."""
        if self.source_array:
            return None
        info = self.info
        step = decimation_step(info.height, info.width, QUICKLOOK_SIDE) if info.level == 0 else 0
        return Feed(
            source=_absolute_if_file(self.options.input), level=info.level,
            image_path=self.workdir.image, workdir=self.workdir.path,
            valid_path=self.valid_path, preview_step=step, reader=self.reader_options,
        )


def _absolute_if_file(path: str) -> str:
    """Local files as absolute paths (workers may run elsewhere); names and URLs unchanged."""
    p = Path(path)
    return str(p.resolve()) if not is_url(path) and p.exists() else path


def preflight(options: RunOptions) -> str:
    """The checks that need neither the model nor the raster; returns the resolved device.

    The output's extension and folder, the input's existence, an existing output that segpipe
    did not write (without ``--overwrite``), an architecture name without ``--random-weights``,
    and the device. The command line runs them for every input before starting Prefect or
    Dask; :func:`plan_run` runs them again.
    """
    check_output_path(options)
    if not is_url(options.input) and not Path(options.input).exists():
        raise RasterError(f"--input {options.input}: file not found; check the path")
    check_run_urls(options, workdir_of(options))  # buckets, credentials, write permission
    if not (options.overwrite or is_segpipe_output(options.output) or cut_off_output(options)):
        check_output_exists(options)
    check_model_name(options.inference)
    if options.inference.model and options.inference.model_sha256:  # hashed before it is read
        check_pinned(options.inference.model, options.inference.model_sha256)
    mask = options.source.mask
    if mask and mask.strip().lower() != "tissue" and not Path(mask).exists():
        raise InputError(
            f"--mask {mask}: file not found; give a mask raster, a polygon file or 'tissue'"
        )
    return str(resolve_device(options.inference.device))


def check_model_name(inference: InferenceOptions) -> None:
    """Refuse an architecture name (random weights) unless ``--random-weights`` asks for it."""
    model = inference.model
    if model is None:  # a bundled model is chosen; --random-weights alone is refused earlier
        return
    if not is_url(model) and Path(model).exists():
        if inference.random_weights:
            raise InputError(
                f"--random-weights applies to architecture names, but --model {model} is a "
                "model file: drop --random-weights"
            )
        return
    from segpipe.models.registry import list_models

    if model in list_models() and not inference.random_weights:
        raise InputError(
            f"--model {model} is an architecture, not a trained model: its weights would be "
            "random and its labels meaningless. Pass a trained model file with --model PATH "
            "(train one with segpipe train; segpipe models lists the bundled models), or add "
            "--random-weights to try the pipeline"
        )


def plan_run(options: RunOptions, *, preflighted: bool = False) -> RunPlan:
    """Check ``options`` against the input and the model and build the plan.

    Reads no pixels, except to refuse a constant band under ``meanstd`` from image statistics
    (:mod:`segpipe.pipeline.inputchecks`). With no ``--model`` the bundled model that fits the
    input is chosen (:mod:`segpipe.pipeline.choose`); the plan's options then name it. The free
    disk for a new work directory is checked last (:mod:`segpipe.pipeline.diskspace`).
    ``preflighted``: :func:`preflight` already ran for ``options`` (not again: it lists buckets
    and hashes a pinned model).
    """
    device = str(resolve_device(options.inference.device)) if preflighted else preflight(options)
    check_tiff_holds_data(options.input)  # before a reader trusts the sizes in its header
    base = _input_info(options)
    check_pixel_type(base)
    check_output_carries_georeferencing(options, base)
    warnings: list[str] = []
    if options.inference.model is None:
        reader = options.source.reader
        options = _with_bundled_model(options, base, warnings)
        if options.source.reader != reader:  # the bands chosen by name: a STAC item's stack
            base = _input_info(options)
    model = load_model_cached(options.inference.model or "", device,
                              options.inference.model_sha256)
    info = info_at_level(base, choose_input_level(options.source, base, model.card))
    bands = select_bands(info, options.source.bands, expected_bands(model))
    stride = model.card.stride if model.card and model.card.stride else None
    geometry = probe_cached(model, len(bands), stride)
    card = model_card(model, options, len(bands), geometry)
    tiles = plan_tiles(options, info, card, geometry, warnings)
    norm = run_normalization(card, options, options.input, warnings)
    check_meanstd_bands(info, bands, norm, [str(b + 1) for b in bands], options.source.reader)
    workdir = WorkDir(workdir_of(options))
    mask = region_mask(options.source.mask, info, workdir.path) if options.source.mask else None
    plan = RunPlan(
        options=options, info=info, identity=InputIdentity.of(options.input), card=card,
        model_sha256=model.sha256, geometry=geometry, tiles=tiles, bands=bands,
        normalization=norm, workdir=workdir, warnings=tuple(warnings),
        source_array=direct_source(_absolute_if_file(options.input), info, tiles.tile),
        mask=mask,
    )
    check_free_space(plan)
    return plan


def _input_info(options: RunOptions) -> RasterInfo:
    """The input's level-0 metadata, opened as every later open is (``--nodata`` applied)."""
    with input_reader(options.input, options=options.source.reader) as reader:  # held: stats
        base = reader.info
    if options.source.nodata is not None:
        base = replace(base, nodata=options.source.nodata)
    return base


#: Probed geometries by (model sha256, bands, stride, fixed size): a few models per process.
_GEOMETRIES: BoundedCache[tuple[str, int, int | None, int | None], Geometry] = BoundedCache(
    8, "model geometries")


def run_normalization(
    card: ModelCard, options: RunOptions, name: str, warnings: list[str]
) -> Normalization:
    """The card's normalization, or ``--normalize``, resolved for the input's sensor family."""
    norm = card.normalization
    asked = options.inference.normalize
    if asked is NormMethod.SENSOR and norm.method is not NormMethod.SENSOR:
        raise InputError("--normalize sensor needs a model card with a sensors table; this "
                         "model's card has none")
    if asked not in (None, NormMethod.SENSOR):
        norm = Normalization(asked)
    return resolve_normalization(norm, options.source.sensor, name, warnings)


def probe_cached(model: LoadedModel, bands: int, stride: int | None) -> Geometry:
    """The model's geometry, probed once per process for a model (the inputs of a batch).

    Kept in :data:`_GEOMETRIES`, this module's bounded cache (the last few models probed).
    """
    key = (model.sha256, bands, stride, model.fixed_size)
    return _GEOMETRIES.get_or_make(key, lambda: probe_geometry(
        model, bands, stride=stride, fixed_size=model.fixed_size))


def _with_bundled_model(options: RunOptions, info: RasterInfo, warnings: list[str]) -> RunOptions:
    """``options`` naming the bundled model that fits the input (and the bands it reads)."""
    from segpipe.models.bundled import bundled_models
    from segpipe.pipeline.choose import choose_bundled, with_choice

    choice = choose_bundled(info, options.source, bundled_models())
    warnings.append(choice.reason)
    inference = replace(options.inference, model=str(choice.model.path))
    return replace(options, inference=inference, source=with_choice(options.source, choice))


def expected_bands(model: LoadedModel) -> int | None:
    """The band count the model takes: its card's, else its first layer's (None: unknown)."""
    return model.card.bands if model.card else model.in_channels


def _model_name(options: RunOptions) -> str:
    return Path(options.inference.model or "model").name


def model_card(
    model: LoadedModel, options: RunOptions, bands: int, geometry: Geometry
) -> ModelCard:
    """The model's card (checked against the probed class count), or a default one.

    A model without a card gets raw pixels as float32 (normalization ``none``) and default
    class names and colours.
    """
    card = model.card
    if card is None:
        return ModelCard.default(
            Path(_model_name(options)).stem, bands, geometry.num_classes,
            normalization=Normalization(NormMethod.NONE),
        )
    if card.num_classes != geometry.num_classes:
        raise ModelError(
            f"the model card lists {card.num_classes} classes but the model outputs "
            f"{geometry.out_channels} channels; fix the card's classes"
        )
    return card


def plan_tiles(
    options: RunOptions, info: RasterInfo, card: ModelCard, geometry: Geometry,
    warnings: list[str],
) -> TilePlan:
    """The halo and tile for the model (``--halo``, ``--tile`` or chosen) and their tile plan."""
    halo = choose_halo(options.tiling.halo, card, geometry, warnings)
    tile = choose_tile(options.tiling.tile, halo, geometry, _model_name(options), card, warnings)
    check_stride(tile, geometry)
    return tile_plan(info, options.tiling, tile, halo, geometry)
