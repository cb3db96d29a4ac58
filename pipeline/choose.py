"""With no ``--model``: choose the bundled model whose card fits the input.

A bundled model (:mod:`segpipe.models.bundled`) fits an input when

- its ``domain`` agrees: a ``geo`` model needs a georeferenced input (a CRS), a ``microscopy``
  model one without a CRS (so a 3-band photo or slide never gets a land-cover model);
- its bands are there: every name of the card's ``band_names`` names a band of the input (then
  those bands are read, in the card's order), or else the input has as many bands as the card
  (a match on count alone, which is reported with the band order to check); ``--bands``
  selects the bands to compare;
- its ``pixel_size_range`` holds the input's pixel size (of the level that would be read). An
  input without a known pixel size, or a card without a range, is not refused for that: the
  scale is reported as unchecked.

Among fitting models a match by band names beats one by count, and a checked scale beats an
unchecked one; then the name decides. The one-line reason is returned for the log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from segpipe.models.bundled import BundledModel
from segpipe.models.card import Domain, ModelCard
from segpipe.models.foundation import InputError
from segpipe.pipeline.bands import band_index
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.pyramid import choose_input_level, info_at_level, pixel_size_in_meters
from segpipe.pipeline.io.units import unit_in_meters
from segpipe.pipeline.options import SourceOptions

__all__ = ["WATER_RECALL_TARGET", "Choice", "choose_bundled", "with_choice"]

#: Open-water recall on an unseen scene below which the choice says the model misses water.
WATER_RECALL_TARGET = 0.8


@dataclass(frozen=True)
class Choice:
    """The chosen bundled model, the ``--bands`` to read with it, and why it was chosen."""

    model: BundledModel
    bands: tuple[int | str, ...] | None
    reason: str


@dataclass(frozen=True)
class _Fit:
    model: BundledModel
    bands: tuple[int | str, ...] | None
    by_names: bool
    scale_checked: bool
    notes: tuple[str, ...]

    @property
    def rank(self) -> tuple[bool, bool, str]:
        """Sort key: by names first, then a checked scale, then the name."""
        return (not self.by_names, not self.scale_checked, self.model.name)


def choose_bundled(
    info: RasterInfo, source: SourceOptions, models: Sequence[BundledModel]
) -> Choice:
    """The bundled model that fits the input ``info`` best; :class:`InputError` when none does."""
    if not models:
        raise InputError(
            "no --model given and segpipe has no bundled models installed: pass a trained "
            "model with --model PATH (or --model unet --random-weights to try the pipeline)"
        )
    fits: list[_Fit] = []
    refusals: list[str] = []
    for model in models:
        fit = _fit(info, source, model)
        if isinstance(fit, str):
            refusals.append(f"{model.name} ({fit})")
        else:
            fits.append(fit)
    if not fits:
        raise InputError(
            f"no --model given and no bundled model fits {info.path} ({_describe(info)}): "
            f"{'; '.join(refusals)}; pass a model with --model PATH (segpipe models lists "
            "the bundled ones)"
        )
    best = min(fits, key=lambda f: f.rank)
    reason = (
        f"no --model given: using the bundled model {best.model.name!r} "
        f"({'; '.join(best.notes)}){_water_caveat(best.model.card)}; pass --model to choose "
        "another"
    )
    return Choice(best.model, best.bands, reason)


def _water_caveat(card: ModelCard) -> str:
    """A plain warning when the card's own measurement says the model does not find water."""
    transfer = card.metrics.get("transfer") or {}
    recall = transfer.get("open_water_recall")
    if recall is None or recall >= WATER_RECALL_TARGET:
        return ""
    return (f"; it DOES NOT FIND WATER (its card: {recall:.0%} of open water found on a scene "
            "it never saw): give blue, green, red and nir bands for a model that does")


def _describe(info: RasterInfo) -> str:
    where = "georeferenced" if info.crs_wkt else "not georeferenced"
    size = pixel_size_in_meters(info)
    scale = f", {_length(size)} pixels" if size is not None else ""
    return f"{info.bands} band{'s' if info.bands != 1 else ''}, {where}{scale}"


def _fit(info: RasterInfo, source: SourceOptions, model: BundledModel) -> _Fit | str:
    """How ``model`` fits the input, or why it does not (a short phrase)."""
    card = model.card
    fits, domain = _domain(info, card)
    if not fits:
        return domain
    bands = _bands(info, source, card)
    if isinstance(bands, str):
        return bands
    selected, by_names, band_note = bands
    level = info_at_level(info, choose_input_level(source, info, card))
    fits, scale, checked = _scale(level, card)
    if not fits:
        return scale
    return _Fit(model, selected, by_names, checked, (band_note, domain, scale))


def _domain(info: RasterInfo, card: ModelCard) -> tuple[bool, str]:
    """(fits, note) for the card's domain."""
    georeferenced = info.crs_wkt is not None
    if card.domain is Domain.GEO and not georeferenced:
        return False, "a georeferenced (geo) model: the input has no CRS"
    if card.domain is Domain.MICROSCOPY and georeferenced:
        return False, "a microscopy model: the input is georeferenced"
    return True, "georeferenced input" if georeferenced else "input without a CRS"


def _bands(
    info: RasterInfo, source: SourceOptions, card: ModelCard
) -> tuple[tuple[int | str, ...] | None, bool, str] | str:
    """(bands to read, matched by names, note), or why the bands do not fit."""
    wanted = card.band_names
    if source.bands is not None:
        picked = [band_index(info, b) for b in source.bands]
        if len(picked) != card.bands:
            return f"takes {card.bands} bands, --bands selects {len(picked)}"
        names = _names(info, picked)
        if wanted and names == [w.casefold() for w in wanted]:
            return source.bands, True, f"bands matched by name: {','.join(wanted)}"
        return source.bands, False, _order_note(card)
    if wanted and info.channel_names:
        have = [n.casefold() for n in info.channel_names]
        if all(have.count(w.casefold()) == 1 for w in wanted):
            return tuple(wanted), True, f"bands matched by name: {','.join(wanted)}"
    if len(info.image_bands) != card.bands:  # an alpha band is a mask, not an image band
        plural = "s" if card.bands != 1 else ""
        return f"takes {card.bands} band{plural}, the input has {len(info.image_bands)}"
    return None, False, _order_note(card)


def _names(info: RasterInfo, picked: list[int]) -> list[str] | None:
    if not info.channel_names:
        return None
    return [info.channel_names[i].casefold() for i in picked]


def _order_note(card: ModelCard) -> str:
    n = f"{card.bands} band{'s' if card.bands != 1 else ''}"
    if card.band_names:
        order = ",".join(card.band_names)
        return f"{n} matched by count only: check that the band order is {order}"
    return f"{n} matched by count only: check the band order against the model's card"


def _scale(info: RasterInfo, card: ModelCard) -> tuple[bool, str, bool]:
    """(fits, note, checked) for the input's pixel size against the card's range."""
    unchecked = "the scale could not be checked"
    if card.pixel_size_range is None:
        return True, f"the card gives no pixel-size range: {unchecked}", False
    unit = unit_in_meters(card.pixel_size_unit)
    if unit is None:
        return True, f"the card's unit {card.pixel_size_unit!r} is unknown: {unchecked}", False
    size = pixel_size_in_meters(info)
    if size is None:
        return True, f"the input's pixel size is unknown: {unchecked}", False
    low, high = (v * unit for v in card.pixel_size_range)
    span = f"{_length(low)}–{_length(high)}"
    if not low * (1 - 1e-9) <= size <= high * (1 + 1e-9):
        return False, f"made for {span} pixels, the input's are {_length(size)}", True
    return True, f"pixel size {_length(size)} within {span}", True


def _length(meters: float) -> str:
    """A length in the unit that reads best (``30 m``, ``0.65 µm``)."""
    for unit, factor in (("km", 1e3), ("m", 1.0), ("mm", 1e-3), ("µm", 1e-6)):
        if meters >= factor or unit == "µm":
            value = meters / factor
            return f"{value:.3g} {unit}" if math.isfinite(value) else f"{meters} m"
    raise AssertionError("unreachable")


def with_choice(source: SourceOptions, choice: Choice) -> SourceOptions:
    """``source`` reading the bands the choice needs (by name when it matched by name)."""
    return replace(source, bands=choice.bands) if choice.bands is not None else source
