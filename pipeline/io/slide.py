"""Whole-slide formats only OpenSlide reads well: Hamamatsu NDPI (and VMS/VMU), 3DHistech MRXS.

OpenSlide is an optional extra (``pip install segpipe[openslide]``); without it these files
raise a :class:`RasterError` saying so. Aperio SVS and generic pyramidal TIFFs do not need it:
they go to :mod:`segpipe.pipeline.io.tiff`.

Pixels come from ``OpenSlide.read_region`` (whose location is in level-0 coordinates) as RGBA
with premultiplied alpha; the transparent parts (outside the scanned regions of an MRXS, for
example) are composited onto the slide's background colour (``openslide.background-color``,
white when absent), so the reader returns three bands: red, green, blue. Microns per pixel come
from ``openslide.mpp-x`` / ``openslide.mpp-y``; without them there is no pixel size.

Levels: OpenSlide's own. A window of level N is read at level-0 location ``round(col * d)``
with ``d`` OpenSlide's downsample of the level; when the level size is not an exact fraction of
level 0 (e.g. 410 → 103 columns, d = 3.98...), OpenSlide resamples by the sub-pixel remainder,
so reads there are close to, not bit-identical with, the stored level. Level 0 and levels of
integer downsample are exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segpipe.models.foundation import RasterError
from segpipe.pipeline.io.base import RasterInfo, ReaderBase
from segpipe.pipeline.io.pyramid import info_at_level
from segpipe.pipeline.io.tiff import _positive
from segpipe.pipeline.tiling import Window

# extensions sent to OpenSlide (all other slide formats are TIFFs tifffile reads)
SUFFIXES = frozenset({".ndpi", ".mrxs", ".vms", ".vmu"})


def accepts(path: str) -> bool:
    """Whether :class:`OpenSlideReader` is the reader for ``path`` (by extension)."""
    return Path(path).suffix.lower() in SUFFIXES and Path(path).is_file()


def _import_openslide() -> Any:
    try:
        import openslide
    except ImportError as exc:  # also raised when the OpenSlide library itself is missing
        raise RasterError(
            f"reading NDPI/MRXS slides needs OpenSlide ({exc}); install it with "
            "`pip install segpipe[openslide]`"
        ) from None
    return openslide


class OpenSlideReader(ReaderBase):
    """One level of a slide read with OpenSlide (format ``"slide"``)."""

    def __init__(self, path: str, *, level: int = 0) -> None:
        openslide = _import_openslide()
        try:
            self._slide = openslide.OpenSlide(path)
        except (openslide.OpenSlideError, OSError) as exc:
            raise RasterError(f"cannot read {path} as a slide: {exc}") from None
        try:
            self.info = self._info(path, level)
        except BaseException:
            self._slide.close()
            raise
        self._level = level
        self._downsample = float(self._slide.level_downsamples[level])
        background = self._slide.properties.get("openslide.background-color") or "FFFFFF"
        try:
            rgb = [int(background[i : i + 2], 16) for i in (0, 2, 4)]
        except ValueError:
            rgb = [255, 255, 255]
        self._background = np.array(rgb, np.float32)[:, None, None]

    def _info(self, path: str, level: int) -> RasterInfo:
        slide = self._slide
        levels = tuple((h, w) for w, h in slide.level_dimensions)
        props = slide.properties
        mpp_x = _positive(props.get("openslide.mpp-x"))
        mpp_y = _positive(props.get("openslide.mpp-y"))
        pixel_size = (mpp_y, mpp_x) if mpp_x is not None and mpp_y is not None else None
        extra: dict[str, Any] = {"vendor": props.get("openslide.vendor"), "backend": "openslide"}
        if (power := _positive(props.get("openslide.objective-power"))) is not None:
            extra["objective_power"] = power
        height, width = levels[0]
        info0 = RasterInfo(
            path=path,
            format="slide",
            height=height,
            width=width,
            bands=3,
            dtype="uint8",
            pixel_size=pixel_size,
            pixel_unit="µm" if pixel_size else None,
            channel_names=("red", "green", "blue"),
            levels=levels,
            extra=extra,
        )
        return info_at_level(info0, level)

    def read(self, window: Window) -> np.ndarray:
        """Pixels of ``window`` as (3, h, w) uint8."""
        # OpenSlide divides the level-0 location by the level's downsample: exact when that is
        # an integer (levels of exact halvings), otherwise a fraction of a pixel off, which
        # OpenSlide resamples (see the module docstring)
        location = (
            round(window.col * self._downsample),
            round(window.row * self._downsample),
        )
        region = self._slide.read_region(location, self._level, (window.width, window.height))
        rgba = np.asarray(region, dtype=np.uint8).transpose(2, 0, 1)
        rgb, alpha = rgba[:3], rgba[3:]
        if alpha.min() == 255:
            return np.ascontiguousarray(rgb)
        # premultiplied alpha: colour + background * (1 - alpha)
        out = rgb.astype(np.float32) + self._background * (1 - alpha.astype(np.float32) / 255)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def close(self) -> None:
        """Close the slide."""
        self._slide.close()
