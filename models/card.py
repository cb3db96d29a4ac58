"""The model card: the input contract and provenance that travel with a model's weights.

A card names the bands the model expects, its classes (names and display colors), how pixels
are normalized before the forward pass, its geometry (margin or halo, stride), the pixel size it
was trained at, and its license, training data and metrics. It is stored as JSON inside the
model file (exported program, TorchScript, checkpoint, ONNX metadata) or in a sidecar ``.json``.

In JSON, colors are ``"#rrggbb"`` strings and tuples are lists. Every validation problem raises
:class:`~segpipe.models.foundation.ModelError` naming the offending field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar

from .foundation import ModelError

__all__ = [
    "ClassInfo",
    "Domain",
    "ModelCard",
    "NormMethod",
    "Normalization",
    "default_palette",
]

_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class NormMethod(StrEnum):
    """How input pixels are normalized before the model sees them.

    ``none``: raw values as float32. ``scale``: divide by the dtype's maximum (uint8 → /255).
    ``meanstd``: ``(x − mean) / std`` per band, with the card's fixed training statistics when it
    gives ``mean`` and ``std``, else statistics computed once from the image. ``percentile``:
    per band, map the ``low`` and ``high`` percentiles of the image to 0 and 1.
    """

    NONE = "none"
    SCALE = "scale"
    MEANSTD = "meanstd"
    PERCENTILE = "percentile"


class Domain(StrEnum):
    """What kind of image a model was trained on.

    ``geo``: georeferenced rasters (satellite or aerial; the input must have a CRS).
    ``microscopy``: images without a CRS (slides, fluorescence, OME files).
    """

    GEO = "geo"
    MICROSCOPY = "microscopy"


def _fail(where: str, value: object, rule: str) -> ModelError:
    return ModelError(f"model card field {where!r} = {value!r} is invalid; {rule}")


def _int(where: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(where, value, f"use an integer >= {low}")
    return value


def _opt_int(where: str, value: object, low: int) -> int | None:
    return None if value is None else _int(where, value, low)


def _float(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, value, "use a finite number")
    return float(value)


def _str(where: str, value: object, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise _fail(where, value, "use a non-empty string" if not empty else "use a string")
    return value


def _floats(where: str, value: object) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise _fail(where, value, "use a non-empty list of numbers, one per band")
    return tuple(_float(f"{where}[{i}]", v) for i, v in enumerate(value))


def _json_dict(where: str, value: object) -> dict[str, Any]:
    """Validate a JSON-compatible dict and return a normalized deep copy (tuples → lists)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _fail(where, value, "use a JSON object with string keys")
    try:
        copied: dict[str, Any] = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        rule = f"it must be plain JSON (numbers, strings, lists): {exc}"
        raise _fail(where, value, rule) from None
    return copied


def _color(where: str, value: object) -> tuple[int, int, int]:
    if isinstance(value, str):
        if not _HEX_COLOR.match(value):
            raise _fail(where, value, 'use "#rrggbb" (hex) or [r, g, b] with 0..255')
        return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)
    if (
        isinstance(value, Sequence)
        and len(value) == 3
        and all(not isinstance(c, bool) and isinstance(c, int) and 0 <= c <= 255 for c in value)
    ):
        return int(value[0]), int(value[1]), int(value[2])
    raise _fail(where, value, 'use "#rrggbb" (hex) or [r, g, b] with 0..255')


def _hex(color: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def default_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """Return ``n`` fixed, pairwise distinct colors (the PASCAL VOC color map; class 0 black)."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)


@dataclass(frozen=True)
class ClassInfo:
    """One output class: its name and its display color (r, g, b in 0..255)."""

    name: str
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        """Validate the name and normalize the color (a list or "#rrggbb" becomes a tuple)."""
        _str("classes[].name", self.name, empty=False)
        object.__setattr__(self, "color", _color(f"classes[{self.name!r}].color", self.color))

    def to_dict(self) -> dict[str, str]:
        """JSON form: ``{"name": ..., "color": "#rrggbb"}``."""
        return {"name": self.name, "color": _hex(self.color)}


@dataclass(frozen=True)
class Normalization:
    """How to normalize input pixels; see :class:`NormMethod`.

    ``mean``/``std`` (one value per band, or one for all bands) are fixed training statistics
    and only apply to ``meanstd``; ``low``/``high`` are percentiles for ``percentile``.
    """

    method: NormMethod
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    low: float = 1.0
    high: float = 99.0

    def __post_init__(self) -> None:
        """Validate the method, the statistics and the percentiles."""
        try:
            method = NormMethod(self.method)
        except ValueError:
            choices = ", ".join(m.value for m in NormMethod)
            raise _fail("normalization.method", self.method, f"use one of {choices}") from None
        object.__setattr__(self, "method", method)
        mean = _floats("normalization.mean", self.mean)
        std = _floats("normalization.std", self.std)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if (mean is None) != (std is None):
            raise _fail(
                "normalization.mean" if mean is None else "normalization.std",
                None,
                "give both mean and std (fixed statistics) or neither (computed from the image)",
            )
        if mean is not None and method != NormMethod.MEANSTD:
            raise _fail(
                "normalization.mean",
                list(mean),
                f"mean/std only apply to method 'meanstd', "
                f"not {method.value!r}; remove them or use method 'meanstd'",
            )
        if mean is not None and std is not None:
            if len(mean) != len(std):
                raise _fail(
                    "normalization.std", list(std), f"give as many values as mean ({len(mean)})"
                )
            if any(s <= 0 for s in std):
                raise _fail("normalization.std", list(std), "every std must be > 0")
        low = _float("normalization.low", self.low)
        high = _float("normalization.high", self.high)
        if not 0.0 <= low < high <= 100.0:
            raise _fail("normalization.low/high", (low, high), "need 0 <= low < high <= 100")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, every field written."""
        return {
            "method": self.method.value,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "low": self.low,
            "high": self.high,
        }

    @classmethod
    def from_dict(cls, data: object) -> Normalization:
        """Build from JSON: a method name (``"scale"``) or an object with the fields."""
        if isinstance(data, str):
            return cls(data)  # type: ignore[arg-type]  # validated in __post_init__
        if not isinstance(data, Mapping):
            raise _fail("normalization", data, 'use a method name or {"method": ..., ...}')
        _check_keys("normalization", data, {f.name for f in fields(cls)})
        if "method" not in data:
            raise _fail("normalization.method", None, "it is required")
        return cls(
            method=data["method"],
            mean=data.get("mean"),
            std=data.get("std"),
            low=data.get("low", 1.0),
            high=data.get("high", 99.0),
        )


def _band_names(value: object, bands: int) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise _fail("band_names", value, f"use a list of {bands} band names, one per band")
    names = tuple(_str(f"band_names[{i}]", v, empty=False) for i, v in enumerate(value))
    if len(names) != bands:
        raise _fail("band_names", list(names), f"give one name per band ({bands})")
    folded = [n.casefold() for n in names]
    duplicates = sorted({n for n in names if folded.count(n.casefold()) > 1})
    if duplicates:
        raise _fail("band_names", duplicates, "band names must be unique (case-insensitive)")
    return names


def _size_range(value: object) -> tuple[float, float]:
    rule = "use [min, max] pixel sizes with 0 < min <= max"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
        raise _fail("pixel_size_range", value, rule)
    low = _float("pixel_size_range[0]", value[0])
    high = _float("pixel_size_range[1]", value[1])
    if not 0 < low <= high:
        raise _fail("pixel_size_range", [low, high], rule)
    return low, high


def _check_keys(where: str, data: Mapping[str, Any], known: set[str]) -> None:
    import difflib

    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            place = f"model card {where}" if where else "model card"
            raise ModelError(
                f"{place} has unknown field {key!r}{hint} (known: {', '.join(sorted(known))})"
            )


@dataclass(frozen=True)
class ModelCard:
    """What a model expects and produces, and where it came from.

    ``margin``: pixels a valid-padding model consumes on each side (output = input − 2·margin).
    ``halo``: recommended tile halo for same-padding models. ``stride``: total down-sampling;
    tile sizes must be multiples of it. ``architecture``: for built-in nets,
    ``{"name": "unet", "config": {...}}``. ``band_names``: the name of each input band, in
    order (e.g. ``("blue", "green", "red", "nir")``); ``domain``: georeferenced or microscopy
    images; ``pixel_size_range``: the (min, max) pixel sizes, in ``pixel_size_unit``, the model
    works at. These three are optional; segpipe uses them to choose a bundled model for an
    input (:mod:`segpipe.models.bundled`).
    """

    name: str
    bands: int
    classes: tuple[ClassInfo, ...]
    normalization: Normalization = Normalization(NormMethod.SCALE)
    margin: int | None = None
    halo: int | None = None
    stride: int | None = None
    pixel_size: float | None = None
    pixel_size_unit: str | None = None
    architecture: dict[str, Any] | None = None
    license: str = ""
    training_data: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    band_names: tuple[str, ...] | None = None
    domain: Domain | None = None
    pixel_size_range: tuple[float, float] | None = None

    _REQUIRED: ClassVar[tuple[str, ...]] = ("name", "bands", "classes")

    def __post_init__(self) -> None:
        """Validate every field; normalize lists to tuples and dicts to plain JSON."""
        _str("name", self.name, empty=False)
        _int("bands", self.bands, 1)
        classes = self.classes
        if isinstance(classes, str | bytes) or not isinstance(classes, Sequence) or not classes:
            raise _fail("classes", classes, "use a non-empty list of classes")
        if not all(isinstance(c, ClassInfo) for c in classes):
            raise _fail("classes", classes, "use ClassInfo(name, color) items")
        names = [c.name for c in classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise _fail("classes", duplicates, "class names must be unique")
        object.__setattr__(self, "classes", tuple(classes))
        norm = self.normalization
        if isinstance(norm, str):
            norm = Normalization.from_dict(norm)
        if not isinstance(norm, Normalization):
            raise _fail("normalization", norm, "use a Normalization")
        object.__setattr__(self, "normalization", norm)
        for stats in (norm.mean, norm.std):
            if stats is not None and len(stats) not in (1, self.bands):
                raise _fail(
                    "normalization.mean/std",
                    list(stats),
                    f"give 1 value or one per band ({self.bands})",
                )
        _opt_int("margin", self.margin, 0)
        _opt_int("halo", self.halo, 0)
        _opt_int("stride", self.stride, 1)
        if self.pixel_size is not None:
            size = _float("pixel_size", self.pixel_size)
            if size <= 0:
                raise _fail("pixel_size", self.pixel_size, "use a number > 0")
            object.__setattr__(self, "pixel_size", size)
        if self.pixel_size_unit is not None:
            _str("pixel_size_unit", self.pixel_size_unit, empty=False)
        self._check_input_description()
        if self.architecture is not None:
            arch = _json_dict("architecture", self.architecture)
            if not isinstance(arch.get("name"), str) or not arch["name"]:
                raise _fail("architecture.name", arch.get("name"), "use the registry name")
            if not isinstance(arch.get("config", {}), dict):
                raise _fail("architecture.config", arch["config"], "use a JSON object")
            object.__setattr__(self, "architecture", arch)
        for key in ("license", "training_data", "description"):
            _str(key, getattr(self, key))
        object.__setattr__(self, "metrics", _json_dict("metrics", self.metrics))

    def _check_input_description(self) -> None:
        """Validate ``band_names``, ``domain`` and ``pixel_size_range`` (all optional)."""
        if self.band_names is not None:
            object.__setattr__(self, "band_names", _band_names(self.band_names, self.bands))
        if self.domain is not None:
            try:
                object.__setattr__(self, "domain", Domain(self.domain))
            except ValueError:
                choices = ", ".join(d.value for d in Domain)
                raise _fail("domain", self.domain, f"use one of {choices}") from None
        if self.pixel_size_range is not None:
            low, high = _size_range(self.pixel_size_range)
            if self.pixel_size_unit is None:
                raise _fail(
                    "pixel_size_unit", None, "give the unit of pixel_size_range (e.g. \"m\")"
                )
            if self.pixel_size is not None and not low <= self.pixel_size <= high:
                raise _fail(
                    "pixel_size", self.pixel_size,
                    f"it must lie within pixel_size_range [{low}, {high}]",
                )
            object.__setattr__(self, "pixel_size_range", (low, high))

    def __hash__(self) -> int:
        """Hash of the JSON form (the dict fields rule out the generated field hash)."""
        return hash(self.to_json())

    @property
    def num_classes(self) -> int:
        """Number of classes (label values 0 .. num_classes − 1)."""
        return len(self.classes)

    @classmethod
    def default(cls, name: str, bands: int, num_classes: int, **kw: Any) -> ModelCard:
        """Build a card with classes ``class_0 ..`` colored by :func:`default_palette`.

        ``kw`` sets any other field (``normalization``, ``margin``, ``stride``, ...).
        """
        _int("num_classes", num_classes, 1)
        classes = tuple(
            ClassInfo(f"class_{i}", color) for i, color in enumerate(default_palette(num_classes))
        )
        return cls(name=name, bands=bands, classes=classes, **kw)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (colors as ``"#rrggbb"``, tuples as lists)."""
        return {
            "name": self.name,
            "bands": self.bands,
            "classes": [c.to_dict() for c in self.classes],
            "normalization": self.normalization.to_dict(),
            "margin": self.margin,
            "halo": self.halo,
            "stride": self.stride,
            "pixel_size": self.pixel_size,
            "pixel_size_unit": self.pixel_size_unit,
            "architecture": self.architecture,
            "license": self.license,
            "training_data": self.training_data,
            "metrics": self.metrics,
            "description": self.description,
            "band_names": None if self.band_names is None else list(self.band_names),
            "domain": None if self.domain is None else self.domain.value,
            "pixel_size_range": (
                None if self.pixel_size_range is None else list(self.pixel_size_range)
            ),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Build and validate a card from its JSON dict; unknown fields are refused."""
        if not isinstance(data, Mapping):
            raise ModelError(
                f"model card must be a JSON object, got {type(data).__name__}; "
                'write {"name": ..., "bands": ..., "classes": [...]}'
            )
        _check_keys("", data, {f.name for f in fields(cls)})
        for key in cls._REQUIRED:
            if key not in data:
                raise _fail(key, None, "it is required")
        raw_classes = data["classes"]
        if isinstance(raw_classes, str | bytes) or not isinstance(raw_classes, Sequence):
            raise _fail("classes", raw_classes, 'use a list of {"name": ..., "color": ...}')
        classes = []
        for i, item in enumerate(raw_classes):
            if not isinstance(item, Mapping):
                raise _fail(f"classes[{i}]", item, 'use {"name": ..., "color": "#rrggbb"}')
            _check_keys(f"classes[{i}]", item, {"name", "color"})
            if "name" not in item or "color" not in item:
                raise _fail(f"classes[{i}]", dict(item), "give both name and color")
            classes.append(
                ClassInfo(
                    name=_str(f"classes[{i}].name", item["name"], empty=False),
                    color=_color(f"classes[{i}].color", item["color"]),
                )
            )
        kwargs = {k: v for k, v in data.items() if k != "classes" and v is not None}
        if "normalization" in kwargs:
            kwargs["normalization"] = Normalization.from_dict(kwargs["normalization"])
        for key in ("license", "training_data", "description"):
            if key in data and data[key] is None:
                kwargs[key] = ""
        return cls(classes=tuple(classes), **kwargs)

    def to_json(self) -> str:
        """Serialize to a JSON string (UTF-8 text, indented)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        """Parse and validate a card from JSON text."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise ModelError(f"model card is not valid JSON ({exc}); fix the card file") from None
        return cls.from_dict(data)
