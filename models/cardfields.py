"""Validation of model-card fields read from JSON.

Each helper checks one kind of value and raises :class:`~segpipe.models.foundation.ModelError`
naming the field, the value and the rule.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .foundation import ModelError

_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


def fail(where: str, value: object, rule: str) -> ModelError:
    return ModelError(f"model card field {where!r} = {value!r} is invalid; {rule}")


def int_field(where: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise fail(where, value, f"use an integer >= {low}")
    return value


def opt_int_field(where: str, value: object, low: int) -> int | None:
    return None if value is None else int_field(where, value, low)


def float_field(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise fail(where, value, "use a finite number")
    return float(value)


def str_field(where: str, value: object, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise fail(where, value, "use a non-empty string" if not empty else "use a string")
    return value


def floats_field(where: str, value: object) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise fail(where, value, "use a non-empty list of numbers, one per band")
    return tuple(float_field(f"{where}[{i}]", v) for i, v in enumerate(value))


def json_dict_field(where: str, value: object) -> dict[str, Any]:
    """Validate a JSON-compatible dict and return a normalized deep copy (tuples → lists)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise fail(where, value, "use a JSON object with string keys")
    try:
        copied: dict[str, Any] = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        rule = f"it must be plain JSON (numbers, strings, lists): {exc}"
        raise fail(where, value, rule) from None
    return copied


def color_field(where: str, value: object) -> tuple[int, int, int]:
    if isinstance(value, str):
        if not _HEX_COLOR.match(value):
            raise fail(where, value, 'use "#rrggbb" (hex) or [r, g, b] with 0..255')
        return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)
    if (
        isinstance(value, Sequence)
        and len(value) == 3
        and all(not isinstance(c, bool) and isinstance(c, int) and 0 <= c <= 255 for c in value)
    ):
        return int(value[0]), int(value[1]), int(value[2])
    raise fail(where, value, 'use "#rrggbb" (hex) or [r, g, b] with 0..255')


def hex_color(color: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def band_names_field(value: object, bands: int) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise fail("band_names", value, f"use a list of {bands} band names, one per band")
    names = tuple(str_field(f"band_names[{i}]", v, empty=False) for i, v in enumerate(value))
    if len(names) != bands:
        raise fail("band_names", list(names), f"give one name per band ({bands})")
    folded = [n.casefold() for n in names]
    duplicates = sorted({n for n in names if folded.count(n.casefold()) > 1})
    if duplicates:
        raise fail("band_names", duplicates, "band names must be unique (case-insensitive)")
    return names


def size_range_field(value: object) -> tuple[float, float]:
    rule = "use [min, max] pixel sizes with 0 < min <= max"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
        raise fail("pixel_size_range", value, rule)
    low = float_field("pixel_size_range[0]", value[0])
    high = float_field("pixel_size_range[1]", value[1])
    if not 0 < low <= high:
        raise fail("pixel_size_range", [low, high], rule)
    return low, high


def check_keys(where: str, data: Mapping[str, Any], known: set[str]) -> None:
    import difflib

    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            place = f"model card {where}" if where else "model card"
            raise ModelError(
                f"{place} has unknown field {key!r}{hint} (known: {', '.join(sorted(known))})"
            )
