"""OME-TIFF: the reader (tifffile). The writers are in :mod:`segpipe.pipeline.io.writers.ometiff`.

Reading: series 0 of the file, its pyramid levels from SubIFDs (or however tifffile finds them),
channels as bands (an RGB channel's three samples as three bands), the physical pixel size and
unit from the OME-XML ``Pixels`` element (``PhysicalSizeY``, ``PhysicalSizeX``; the schema's
default unit is µm) and the channel names. Without ``PhysicalSize*`` there is no pixel size.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Any

import tifffile

from segpipe.pipeline.io.tiff import AxisLayout, TifffileReader, classify_tiff
from segpipe.pipeline.io.units import normalize_unit, unit_in_meters


def accepts(path: str) -> bool:
    """Whether :class:`OmeTiffReader` is the reader for ``path`` (an OME-TIFF, not a GeoTIFF)."""
    return classify_tiff(path) == "ome"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def ome_pixels(xml: str, height: int, width: int) -> ET.Element | None:
    """The ``Pixels`` element of the first OME ``Image`` of size ``width`` × ``height``."""
    try:
        root = ET.fromstring(xml.encode() if isinstance(xml, str) else xml)
    except ET.ParseError:
        return None
    pixels = [p for image in _children(root, "Image") for p in _children(image, "Pixels")]
    for p in pixels:
        if (p.get("SizeY"), p.get("SizeX")) == (str(height), str(width)):
            return p
    return pixels[0] if pixels else None


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number > 0 and math.isfinite(number) else None


class OmeTiffReader(TifffileReader):
    """One level of series 0 of an OME-TIFF (format ``"ome-tiff"``)."""

    format = "ome-tiff"

    def _metadata(self, series: tifffile.TiffPageSeries) -> dict[str, Any]:
        layout = AxisLayout.of(series.axes, series.shape, self._tif.filename)
        meta: dict[str, Any] = {"extra": {"ome_name": series.name or None}}
        pixels = ome_pixels(self._tif.ome_metadata or "", layout.height, layout.width)
        if pixels is None:
            return meta
        size_y, size_x = _float(pixels.get("PhysicalSizeY")), _float(pixels.get("PhysicalSizeX"))
        unit_y = normalize_unit(pixels.get("PhysicalSizeYUnit", "µm"))
        unit_x = normalize_unit(pixels.get("PhysicalSizeXUnit", "µm"))
        if size_y is not None and size_x is not None and unit_y is not None and unit_x is not None:
            if unit_y != unit_x:  # one unit for both axes: express y in x's unit
                factor_y, factor_x = unit_in_meters(unit_y), unit_in_meters(unit_x)
                if factor_y is not None and factor_x is not None:
                    size_y = size_y * factor_y / factor_x
                    unit_y = unit_x
            if unit_y == unit_x:
                meta["pixel_size"], meta["pixel_unit"] = (size_y, size_x), unit_x
        channels = _children(pixels, "Channel")
        names = [c.get("Name") or f"channel_{i}" for i, c in enumerate(channels)]
        if len(names) == layout.bands:
            meta["channel_names"] = tuple(names)
        elif len(channels) == 1 and layout.bands in (3, 4):
            meta["channel_names"] = ("red", "green", "blue", "alpha")[: layout.bands]
        return meta
