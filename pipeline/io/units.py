"""Length units: the OME symbol a :class:`RasterInfo` holds, its NGFF name and size in metres."""

from __future__ import annotations

__all__ = ["LENGTH_UNITS", "ngff_unit", "normalize_unit", "unit_in_meters"]

# The OME symbol (what RasterInfo.pixel_unit holds) → the NGFF (UDUNITS-2) name and the size in
# metres.
LENGTH_UNITS: dict[str, tuple[str, float]] = {
    "Å": ("angstrom", 1e-10),
    "pm": ("picometer", 1e-12),
    "nm": ("nanometer", 1e-9),
    "µm": ("micrometer", 1e-6),
    "mm": ("millimeter", 1e-3),
    "cm": ("centimeter", 1e-2),
    "dm": ("decimeter", 1e-1),
    "m": ("meter", 1.0),
    "km": ("kilometer", 1e3),
    "in": ("inch", 0.0254),
    "ft": ("foot", 0.3048),
    "yd": ("yard", 0.9144),
    "mi": ("mile", 1609.344),
}
_ALIASES = {
    "um": "µm", "μm": "µm", "micron": "µm", "microns": "µm", "\\u00b5m": "µm",
    "micrometre": "µm", "micrometres": "µm", "micrometers": "µm",
    "metre": "m", "metres": "m", "meters": "m", "nanometre": "nm", "millimetre": "mm",
    "centimetre": "cm", "inches": "in", "feet": "ft", "angstroms": "Å",
}
_ALIASES.update({name: symbol for symbol, (name, _) in LENGTH_UNITS.items()})


def normalize_unit(unit: str | None) -> str | None:
    """The OME symbol of a length unit (``"micron"``, ``"um"``, ``"micrometer"`` → ``"µm"``).

    An empty unit is None; an unknown one is returned as given (stripped), never guessed.
    """
    if unit is None or not str(unit).strip():
        return None
    text = str(unit).strip()
    if text in LENGTH_UNITS:
        return text
    return _ALIASES.get(text.lower(), _ALIASES.get(text, text))


def ngff_unit(unit: str | None) -> str | None:
    """The NGFF axis unit name of ``unit`` (``"µm"`` → ``"micrometer"``), None if not a length."""
    symbol = normalize_unit(unit)
    return LENGTH_UNITS[symbol][0] if symbol in LENGTH_UNITS else None


def unit_in_meters(unit: str | None) -> float | None:
    """How many metres one ``unit`` is, None if it is not a known length unit."""
    symbol = normalize_unit(unit)
    return LENGTH_UNITS[symbol][1] if symbol in LENGTH_UNITS else None
