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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar

from .cardfields import (
    band_names_field,
    check_keys,
    color_field,
    fail,
    float_field,
    hex_color,
    int_field,
    json_dict_field,
    opt_int_field,
    size_range_field,
    str_field,
)
from .cardnorm import Normalization, NormMethod, SensorScaling
from .foundation import ModelError

__all__ = [
    "ClassInfo",
    "Domain",
    "ModelCard",
    "NormMethod",
    "Normalization",
    "SensorScaling",
    "default_palette",
]

class Domain(StrEnum):
    """What kind of image a model was trained on.

    ``geo``: georeferenced rasters (satellite or aerial; the input must have a CRS).
    ``microscopy``: images without a CRS (slides, fluorescence, OME files).
    """

    GEO = "geo"
    MICROSCOPY = "microscopy"


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
        str_field("classes[].name", self.name, empty=False)
        object.__setattr__(self, "color", color_field(f"classes[{self.name!r}].color", self.color))

    def to_dict(self) -> dict[str, str]:
        """JSON form: ``{"name": ..., "color": "#rrggbb"}``."""
        return {"name": self.name, "color": hex_color(self.color)}


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
    normalization: Normalization = Normalization(NormMethod.SCALE)  # noqa: RUF009 (frozen)
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
        str_field("name", self.name, empty=False)
        int_field("bands", self.bands, 1)
        classes = self.classes
        if isinstance(classes, str | bytes) or not isinstance(classes, Sequence) or not classes:
            raise fail("classes", classes, "use a non-empty list of classes")
        if not all(isinstance(c, ClassInfo) for c in classes):
            raise fail("classes", classes, "use ClassInfo(name, color) items")
        names = [c.name for c in classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise fail("classes", duplicates, "class names must be unique")
        object.__setattr__(self, "classes", tuple(classes))
        norm = self.normalization
        if isinstance(norm, str):
            norm = Normalization.from_dict(norm)
        if not isinstance(norm, Normalization):
            raise fail("normalization", norm, "use a Normalization")
        object.__setattr__(self, "normalization", norm)
        sensor_maps = [v for s in norm.sensors or () for v in (s.offset, s.scale)]
        for stats in (norm.mean, norm.std, *sensor_maps):
            if stats is not None and len(stats) not in (1, self.bands):
                raise fail(
                    "normalization.mean/std",
                    list(stats),
                    f"give 1 value or one per band ({self.bands})",
                )
        opt_int_field("margin", self.margin, 0)
        opt_int_field("halo", self.halo, 0)
        opt_int_field("stride", self.stride, 1)
        if self.pixel_size is not None:
            size = float_field("pixel_size", self.pixel_size)
            if size <= 0:
                raise fail("pixel_size", self.pixel_size, "use a number > 0")
            object.__setattr__(self, "pixel_size", size)
        if self.pixel_size_unit is not None:
            str_field("pixel_size_unit", self.pixel_size_unit, empty=False)
        self._check_input_description()
        if self.architecture is not None:
            arch = json_dict_field("architecture", self.architecture)
            if not isinstance(arch.get("name"), str) or not arch["name"]:
                raise fail("architecture.name", arch.get("name"), "use the registry name")
            if not isinstance(arch.get("config", {}), dict):
                raise fail("architecture.config", arch["config"], "use a JSON object")
            object.__setattr__(self, "architecture", arch)
        for key in ("license", "training_data", "description"):
            str_field(key, getattr(self, key))
        object.__setattr__(self, "metrics", json_dict_field("metrics", self.metrics))

    def _check_input_description(self) -> None:
        """Validate ``band_names``, ``domain`` and ``pixel_size_range`` (all optional)."""
        if self.band_names is not None:
            object.__setattr__(self, "band_names", band_names_field(self.band_names, self.bands))
        if self.domain is not None:
            try:
                object.__setattr__(self, "domain", Domain(self.domain))
            except ValueError:
                choices = ", ".join(d.value for d in Domain)
                raise fail("domain", self.domain, f"use one of {choices}") from None
        if self.pixel_size_range is not None:
            low, high = size_range_field(self.pixel_size_range)
            if self.pixel_size_unit is None:
                raise fail(
                    "pixel_size_unit", None, "give the unit of pixel_size_range (e.g. \"m\")"
                )
            if self.pixel_size is not None and not low <= self.pixel_size <= high:
                raise fail(
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
        int_field("num_classes", num_classes, 1)
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
        check_keys("", data, {f.name for f in fields(cls)})
        for key in cls._REQUIRED:
            if key not in data:
                raise fail(key, None, "it is required")
        raw_classes = data["classes"]
        if isinstance(raw_classes, str | bytes) or not isinstance(raw_classes, Sequence):
            raise fail("classes", raw_classes, 'use a list of {"name": ..., "color": ...}')
        classes = []
        for i, item in enumerate(raw_classes):
            if not isinstance(item, Mapping):
                raise fail(f"classes[{i}]", item, 'use {"name": ..., "color": "#rrggbb"}')
            check_keys(f"classes[{i}]", item, {"name", "color"})
            if "name" not in item or "color" not in item:
                raise fail(f"classes[{i}]", dict(item), "give both name and color")
            classes.append(
                ClassInfo(
                    name=str_field(f"classes[{i}].name", item["name"], empty=False),
                    color=color_field(f"classes[{i}].color", item["color"]),
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
        except RecursionError:
            raise ModelError(
                "model card is nested too deeply to be a card; fix the card file"
            ) from None
        except (ValueError, TypeError) as exc:
            raise ModelError(f"model card is not valid JSON ({exc}); fix the card file") from None
        return cls.from_dict(data)
