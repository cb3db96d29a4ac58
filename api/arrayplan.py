"""From what an array says of itself and the keywords of :func:`segpipe.segment` to a plan.

The same checks and choices as the run's plan (:func:`segpipe.pipeline.plan.plan_run`), made
with the same functions, on an :class:`ArrayInput` instead of a raster file: the model loaded
and probed once, the bands selected (by number or name), the halo and tile chosen, the stride
checked, the tile plan cut, the card's normalization (or ``normalize=``) resolved. No pixel is
read here: the normalization statistics are computed later, from the same sampled windows as a
run's (:func:`segpipe.pipeline.normalize.sample_windows`), by whoever reads the pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

from segpipe.models.card import ModelCard, Normalization
from segpipe.models.foundation import InputError, resolve_device
from segpipe.models.probe import Geometry
from segpipe.pipeline.bands import select_bands
from segpipe.pipeline.inputchecks import check_pixel_type
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.labels import label_dtype, nodata_label
from segpipe.pipeline.normalize import Normalizer
from segpipe.pipeline.options import Backend, RunOptions
from segpipe.pipeline.plan import (
    check_model_name,
    expected_bands,
    model_card,
    plan_tiles,
    probe_cached,
    run_normalization,
)
from segpipe.pipeline.segment import Labeller
from segpipe.pipeline.tiling import TilePlan

__all__ = ["ArrayInput", "ArrayPlan", "plan_array"]

#: How messages and band errors name an array input (it has no path).
ARRAY_NAME = "the array"


@dataclass(frozen=True)
class ArrayInput:
    """An array's shape, pixel type and metadata: what planning needs without its pixels."""

    bands: int
    height: int
    width: int
    dtype: str
    band_names: tuple[str, ...] | None = None
    nodata: float | None = None
    crs_wkt: str | None = None
    transform: tuple[float, ...] | None = None

    def info(self) -> RasterInfo:
        """The array as the raster metadata the run's checks read."""
        return RasterInfo(
            path=ARRAY_NAME, format="array", height=self.height, width=self.width,
            bands=self.bands, dtype=self.dtype, nodata=self.nodata, crs_wkt=self.crs_wkt,
            transform=self.transform, channel_names=self.band_names,
        )


@dataclass(frozen=True)
class ArrayPlan:
    """A checked segmentation of one array: the model, its card, the tiles, the bands."""

    options: RunOptions
    model_sha256: str
    device: str
    card: ModelCard
    geometry: Geometry
    tiles: TilePlan
    bands: tuple[int, ...]
    normalization: Normalization
    nodata: float | None
    dtype: str

    @property
    def num_classes(self) -> int:
        """Classes of the labels (2 for a one-channel model)."""
        return self.geometry.num_classes

    @property
    def label_dtype(self) -> str:
        """uint8 up to 254 classes, uint16 beyond."""
        return str(label_dtype(self.num_classes))

    @property
    def nodata_label(self) -> int:
        """The label value of nodata (255 or 65535)."""
        return nodata_label(self.num_classes)

    def labeller(self, normalizer: Normalizer) -> Labeller:
        """What every block needs, once the normalization statistics are known."""
        o = self.options.inference
        return Labeller(
            model=self.options.inference.model or "", model_sha256=self.model_sha256,
            device=self.device, precision=o.precision, tiles=self.tiles,
            margin=self.geometry.margin, num_classes=self.num_classes, normalizer=normalizer,
            nodata=self.nodata, blend=self.options.tiling.blend, batch_size=o.batch_size,
            compiled=o.backend is Backend.COMPILE,
        )

    def attrs(self) -> dict[str, object]:
        """What labels carry for people: class names and colours, nodata, model and tiling."""
        return {
            "class_names": [c.name for c in self.card.classes],
            "class_colors": [list(c.color) for c in self.card.classes],
            "nodata": self.nodata_label,
            "segpipe_model": self.card.name,
            "segpipe_model_sha256": self.model_sha256,
            "segpipe_tile": self.tiles.tile,
            "segpipe_halo": self.tiles.halo,
            "segpipe_blend": str(self.options.tiling.blend),
            "segpipe_normalize": str(self.normalization.method),
        }


def plan_array(data: ArrayInput, options: RunOptions) -> ArrayPlan:
    """Check ``options`` against the array and the model, as a run's plan does for a file.

    Warnings the run would log (a guessed halo, a fixed-size model's tile) are Python warnings.
    """
    from segpipe.models.loading import load_model_cached

    inference = options.inference
    if inference.backend is Backend.ONNXRUNTIME:
        raise InputError("backend='onnxruntime' is for runs on files; segment() runs the model "
                         "eagerly or compiled (backend='compile'); pass an ONNX file as model=")
    check_model_name(inference)
    device = str(resolve_device(inference.device))
    info = data.info()
    check_pixel_type(info)
    model = load_model_cached(inference.model or "", device, inference.model_sha256)
    bands = select_bands(info, options.source.bands, expected_bands(model))
    stride = model.card.stride if model.card and model.card.stride else None
    geometry = probe_cached(model, len(bands), stride)
    card = model_card(model, options, len(bands), geometry)
    notes: list[str] = []
    tiles = plan_tiles(options, info, card, geometry, notes)
    norm = run_normalization(card, options, ARRAY_NAME, notes)
    for note in notes:
        warnings.warn(note, stacklevel=3)
    nodata = data.nodata if options.source.nodata is None else options.source.nodata
    return ArrayPlan(options, model.sha256, device, card, geometry, tiles, bands, norm, nodata,
                     data.dtype)


def with_model(options: RunOptions, model: str) -> RunOptions:
    """``options`` naming ``model`` as ``--model``."""
    return replace(options, inference=replace(options.inference, model=model))
