"""Which sensor made the input, for a card whose normalization is per sensor family (``sensor``).

A card with method ``sensor`` carries a fixed map ``(x − offset) · scale`` for each sensor family
it knows (say landsat7, landsat8, sentinel2): digital numbers of different sensors mean different
things, and the map puts them on one scale, the same for every scene. The family comes from
``--sensor NAME``, else from the input's file name when it is a Landsat or Sentinel-2 product
name (``LE07_L1…`` landsat7, ``LC08_L1…``/``LC09_L1…`` landsat8, ``S2A_MSIL1C…`` or a
Sentinel-2 L1C band file ``T33UUU_…`` sentinel2), else the card's default with a warning that
the scaling is a guess; a card without a default refuses (exit 2) naming ``--sensor``.
"""

from __future__ import annotations

import re
from pathlib import PurePath

from segpipe.models.card import Normalization, NormMethod
from segpipe.models.foundation import InputError

__all__ = ["detect_sensor", "resolve_normalization"]

_PRODUCT_NAMES = (
    (re.compile(r"^LE07_L1"), "landsat7"),
    (re.compile(r"^L[CO]0[89]_L1"), "landsat8"),
    (re.compile(r"^S2[A-D]_MSIL1C"), "sentinel2"),
    (re.compile(r"^T\d{2}[A-Z]{3}_\d{8}T\d{6}_"), "sentinel2"),
)


def detect_sensor(path: str) -> str | None:
    """The sensor family a Landsat or Sentinel-2 product name says, or None."""
    name = PurePath(str(path).rstrip("/")).name.upper()
    for pattern, family in _PRODUCT_NAMES:
        if pattern.match(name):
            return family
    return None


def resolve_normalization(
    norm: Normalization, sensor: str | None, path: str, warnings: list[str]
) -> Normalization:
    """``norm`` with a ``sensor`` method replaced by the chosen family's fixed map."""
    if norm.method is not NormMethod.SENSOR:
        if sensor is not None:
            warnings.append(f"--sensor {sensor} has no effect: the model's normalization is "
                            f"{norm.method.value}, not per sensor")
        return norm
    known = [s.name for s in norm.sensors or ()]
    choices = ", ".join(known)
    if sensor is not None:
        if sensor.casefold() not in known:
            raise InputError(f"--sensor {sensor} is not a sensor the model's card scales: use "
                             f"one of {choices}")
        return norm.for_sensor(sensor.casefold())
    detected = detect_sensor(path)
    if detected in known:
        return norm.for_sensor(str(detected))
    if norm.sensor is None:
        raise InputError(
            f"{path} does not say which sensor made it and the model scales each sensor family "
            f"differently: pass --sensor NAME ({choices})"
        )
    warnings.append(
        f"{path} does not say which sensor made it: scaling it as {norm.sensor} (the card's "
        f"default), which is a guess; pass --sensor NAME ({choices})"
    )
    return norm.for_sensor(norm.sensor)
