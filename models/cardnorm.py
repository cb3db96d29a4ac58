"""The model card's normalization: how input pixels are mapped before the forward pass.

One of the card's sections (:mod:`segpipe.models.card` holds the card and re-exports these):
the method (:class:`NormMethod`), its parameters (:class:`Normalization`: fixed statistics,
percentiles, or per-sensor fixed maps, :class:`SensorScaling`) and their JSON form. Every
validation problem raises :class:`~segpipe.models.foundation.ModelError` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from .cardfields import check_keys, fail, float_field, floats_field, str_field

__all__ = ["NormMethod", "Normalization", "SensorScaling"]


class NormMethod(StrEnum):
    """How input pixels are normalized before the model sees them.

    ``none``: raw values as float32. ``scale``: divide by the dtype's maximum (uint8 → /255).
    ``meanstd``: ``(x − mean) / std`` per band, with the card's fixed training statistics when it
    gives ``mean`` and ``std``, else statistics computed once from the image. ``percentile``:
    per band, map the ``low`` and ``high`` percentiles of the image to 0 and 1. ``sensor``: a
    fixed per-band affine map ``(x − offset) · scale`` for each sensor family the card lists
    (e.g. digital numbers of Landsat 7 or 8, Sentinel-2 L1C) to one common scale, so the same
    surface gets the same inputs in every scene; never statistics of the image.
    """

    NONE = "none"
    SCALE = "scale"
    MEANSTD = "meanstd"
    PERCENTILE = "percentile"
    SENSOR = "sensor"


@dataclass(frozen=True)
class SensorScaling:
    """One sensor family's fixed map ``(x − offset) · scale`` per band (one value, or per band)."""

    name: str
    offset: tuple[float, ...]
    scale: tuple[float, ...]

    def __post_init__(self) -> None:
        """Validate the name and the numbers (scales must be > 0)."""
        where = f"normalization.sensors.{self.name}"
        str_field("normalization.sensors", self.name, empty=False)
        offset = floats_field(f"{where}.offset", self.offset)
        scale = floats_field(f"{where}.scale", self.scale)
        if offset is None or scale is None:
            raise fail(where, None, "give offset and scale, one value per band")
        if len(offset) != len(scale):
            raise fail(f"{where}.scale", list(scale), f"give as many values as offset "
                       f"({len(offset)})")
        if any(v <= 0 for v in scale):
            raise fail(f"{where}.scale", list(scale), "every scale must be > 0")
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "scale", scale)

    def as_meanstd(self) -> Normalization:
        """The same map as fixed ``meanstd`` statistics: mean = offset, std = 1 / scale."""
        return Normalization(NormMethod.MEANSTD, mean=self.offset,
                             std=tuple(1.0 / v for v in self.scale))


@dataclass(frozen=True)
class Normalization:
    """How to normalize input pixels; see :class:`NormMethod`.

    ``mean``/``std`` (one value per band, or one for all bands) are fixed training statistics
    and only apply to ``meanstd``; ``low``/``high`` are percentiles for ``percentile``;
    ``sensors`` (the fixed map of each sensor family) and ``sensor`` (the family assumed when
    the input does not say, or None: then ``--sensor`` is required) only apply to ``sensor``.
    """

    method: NormMethod
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    low: float = 1.0
    high: float = 99.0
    sensors: tuple[SensorScaling, ...] | None = None
    sensor: str | None = None

    def __post_init__(self) -> None:
        """Validate the method, the statistics and the percentiles."""
        try:
            method = NormMethod(self.method)
        except ValueError:
            choices = ", ".join(m.value for m in NormMethod)
            raise fail("normalization.method", self.method, f"use one of {choices}") from None
        object.__setattr__(self, "method", method)
        mean = floats_field("normalization.mean", self.mean)
        std = floats_field("normalization.std", self.std)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if (mean is None) != (std is None):
            raise fail(
                "normalization.mean" if mean is None else "normalization.std",
                None,
                "give both mean and std (fixed statistics) or neither (computed from the image)",
            )
        if mean is not None and method != NormMethod.MEANSTD:
            raise fail(
                "normalization.mean",
                list(mean),
                f"mean/std only apply to method 'meanstd', "
                f"not {method.value!r}; remove them or use method 'meanstd'",
            )
        if mean is not None and std is not None:
            if len(mean) != len(std):
                raise fail(
                    "normalization.std", list(std), f"give as many values as mean ({len(mean)})"
                )
            if any(s <= 0 for s in std):
                raise fail("normalization.std", list(std), "every std must be > 0")
        low = float_field("normalization.low", self.low)
        high = float_field("normalization.high", self.high)
        if not 0.0 <= low < high <= 100.0:
            raise fail("normalization.low/high", (low, high), "need 0 <= low < high <= 100")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        self._check_sensors(method)

    def _check_sensors(self, method: NormMethod) -> None:
        if (self.sensors is not None) != (method is NormMethod.SENSOR):
            raise fail("normalization.sensors", None if self.sensors is None else "...",
                       "method 'sensor' needs the sensors table, and only it takes one")
        if self.sensors is None:
            if self.sensor is not None:
                raise fail("normalization.sensor", self.sensor, "only method 'sensor' takes it")
            return
        object.__setattr__(self, "sensors", tuple(self.sensors))
        names = [s.name for s in self.sensors]
        if not names or len(set(names)) != len(names):
            raise fail("normalization.sensors", names, "give each sensor family once")
        if self.sensor is not None and self.sensor not in names:
            raise fail("normalization.sensor", self.sensor, f"use one of {', '.join(names)}")

    def for_sensor(self, name: str) -> Normalization:
        """The fixed map of sensor family ``name`` (a key of ``sensors``) as ``meanstd``."""
        for scaling in self.sensors or ():
            if scaling.name == name:
                return scaling.as_meanstd()
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, every field written (``sensors``/``sensor`` only for method sensor)."""
        out: dict[str, Any] = {
            "method": self.method.value,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "low": self.low,
            "high": self.high,
        }
        if self.sensors is not None:
            out["sensors"] = {
                s.name: {"offset": list(s.offset), "scale": list(s.scale)} for s in self.sensors
            }
            out["sensor"] = self.sensor
        return out

    @classmethod
    def from_dict(cls, data: object) -> Normalization:
        """Build from JSON: a method name (``"scale"``) or an object with the fields."""
        if isinstance(data, str):
            return cls(data)  # type: ignore[arg-type]  # validated in __post_init__
        if not isinstance(data, Mapping):
            raise fail("normalization", data, 'use a method name or {"method": ..., ...}')
        check_keys("normalization", data, {f.name for f in fields(cls)})
        if "method" not in data:
            raise fail("normalization.method", None, "it is required")
        return cls(
            method=data["method"],
            mean=data.get("mean"),
            std=data.get("std"),
            low=data.get("low", 1.0),
            high=data.get("high", 99.0),
            sensors=_sensors(data.get("sensors")),
            sensor=data.get("sensor"),
        )


def _sensors(data: object) -> tuple[SensorScaling, ...] | None:
    """``{"landsat8": {"offset": [...], "scale": [...]}, ...}`` from JSON."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise fail("normalization.sensors", data, 'use {"NAME": {"offset": [...], "scale": [...]}}')
    out = []
    for name, entry in data.items():
        if not isinstance(entry, Mapping):
            rule = 'use {"offset": [...], "scale": [...]}'
            raise fail(f"normalization.sensors.{name}", entry, rule)
        check_keys(f"normalization.sensors.{name}", entry, {"offset", "scale"})
        out.append(SensorScaling(name, entry.get("offset", ()), entry.get("scale", ())))
    return tuple(out)
