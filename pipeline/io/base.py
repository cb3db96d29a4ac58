"""What every reader returns and promises, and the dispatch from a path to a reader.

A reader is a context manager over one raster level with ``info`` (a :class:`RasterInfo`) and
``read(window) -> (bands, h, w)`` for windows inside the image. Workers never receive an open
reader: they receive the path and options and call :func:`open_raster` themselves (the reader
options, :class:`~segpipe.pipeline.io.readeroptions.ReaderOptions`, among them).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np

from segpipe.models.foundation import RasterError
from segpipe.models.location import is_url
from segpipe.pipeline.io.georef import Gcp, scale_gcps, scale_rpcs
from segpipe.pipeline.io.readeroptions import ReaderOptions
from segpipe.pipeline.tiling import Window


class MaskKind(StrEnum):
    """The mask GDAL reports for a raster's bands (rasterio's ``mask_flag_enums``).

    ``per_dataset``: a mask band shared by all bands (an internal or ``.msk`` mask);
    ``alpha``: an alpha band; ``nodata``: the bands' declared nodata value. Pixels the mask
    marks invalid are nodata.
    """

    PER_DATASET = "per_dataset"
    ALPHA = "alpha"
    NODATA = "nodata"

    @property
    def is_band(self) -> bool:
        """Whether the mask is a band of its own, read beside the pixels (not a value)."""
        return self is not MaskKind.NODATA


@dataclass(frozen=True)
class RasterInfo:
    """Shape, type and metadata of one raster level.

    Geospatial inputs carry ``crs_wkt`` and ``transform`` (the six affine coefficients a, b, c,
    d, e, f in rasterio's order), or ``gcps`` (``(row, col, x, y, z)``) with ``gcp_crs_wkt``,
    and ``rpcs`` (rasterio's ``RPC.to_dict()``); microscopy inputs carry ``pixel_size`` as
    (y, x) with ``pixel_unit``. Either may be None: nothing is invented when the input has none.
    ``mask``: the mask GDAL reports (:class:`MaskKind`), ``alpha_band`` the 0-based index of
    an alpha band (a mask, not an image band, unless ``--bands`` names it).
    """

    path: str
    format: str
    height: int
    width: int
    bands: int
    dtype: str
    nodata: float | None = None
    crs_wkt: str | None = None
    transform: tuple[float, ...] | None = None
    pixel_size: tuple[float, float] | None = None
    pixel_unit: str | None = None
    channel_names: tuple[str, ...] | None = None
    levels: tuple[tuple[int, int], ...] = ()
    level: int = 0
    gcps: tuple[Gcp, ...] = ()
    gcp_crs_wkt: str | None = None
    rpcs: dict[str, Any] | None = field(default=None, hash=False)
    mask: MaskKind | None = None
    alpha_band: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.mask is not None and not isinstance(self.mask, MaskKind):
            object.__setattr__(self, "mask", MaskKind(self.mask))  # from JSON

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (without the free-form ``extra``)."""
        d = asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RasterInfo:
        """Inverse of :meth:`to_dict` (lists from JSON become tuples)."""

        def tup(v: Any) -> Any:
            return tuple(tup(x) for x in v) if isinstance(v, list | tuple) else v

        return cls(**{k: tup(v) for k, v in d.items() if k != "extra"})

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of this level."""
        return self.height, self.width

    @property
    def image_bands(self) -> tuple[int, ...]:
        """The 0-based bands a model reads by default: all but an alpha band."""
        return tuple(b for b in range(self.bands) if b != self.alpha_band)

    @property
    def window(self) -> Window:
        """The whole image as a window."""
        return Window(0, 0, self.height, self.width)

    def with_level(self, level: int, height: int, width: int, scale: float,
                   scale_x: float | None = None) -> RasterInfo:
        """The info of pyramid level ``level``, ``scale`` times coarser than level 0.

        ``scale_x``: the columns' own factor where it differs from the rows' (GDAL scales an
        overview's transform by each axis's size ratio); GCPs and RPCs scale by ``scale``.
        """
        sx = scale if scale_x is None else scale_x
        transform = None
        if self.transform is not None:
            a, b, c, d, e, f = self.transform
            transform = (a * sx, b * scale, c, d * sx, e * scale, f)
        pixel_size = None
        if self.pixel_size is not None:
            pixel_size = (self.pixel_size[0] * scale, self.pixel_size[1] * sx)
        return replace(
            self, level=level, height=height, width=width, transform=transform,
            pixel_size=pixel_size, gcps=scale_gcps(self.gcps, scale),
            rpcs=scale_rpcs(self.rpcs, scale),
        )


class Reader(Protocol):
    """An open raster level."""

    info: RasterInfo

    def read(self, window: Window) -> np.ndarray:
        """Pixels of ``window`` (inside the image) as an array (bands, height, width)."""
        ...

    def read_mask(self, window: Window) -> np.ndarray | None:
        """Where ``window``'s pixels are valid (bool (h, w)) by a mask band; None: no mask band."""
        ...

    def close(self) -> None:
        """Release the file."""
        ...

    def at_level(self, level: int) -> Reader:
        """A new reader of pyramid level ``level`` of the same raster (the caller closes it)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class ReaderBase:
    """Context-manager plumbing shared by the readers."""

    info: RasterInfo

    def read_mask(self, window: Window) -> np.ndarray | None:
        """No mask band (readers of formats that have one override this)."""
        return None

    def close(self) -> None:
        """Release the file (nothing to do by default)."""

    def at_level(self, level: int) -> Reader:
        """Level ``level`` of the same raster, opened anew.

        Readers that can reuse what this one read (the GDAL reader's description of the file)
        override this.
        """
        return open_raster(self.info.path, level=level)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Opener = Callable[..., Reader]
# (predicate on the path, opener) in order of preference; readers register themselves on import.
_OPENERS: list[tuple[Callable[[str], bool], Opener]] = []


def register_reader(accepts: Callable[[str], bool], opener: Opener) -> None:
    """Add a reader family: ``accepts(path)`` says whether ``opener(path, level=...)`` applies.

    An opener whose ``takes_options`` attribute is true (a class attribute of the reader) is
    also given ``options=``, a :class:`ReaderOptions`; the others read their files as they are.
    """
    _OPENERS.append((accepts, opener))


def open_raster(path: str | os.PathLike[str], *, level: int = 0,
                options: ReaderOptions | None = None) -> Reader:
    """Open pyramid level ``level`` of the raster at ``path`` with the reader for its family.

    ``options``: what a stacked input (a STAC item) is built with; every open of one run's
    input passes the same (default: :class:`ReaderOptions`' defaults).
    """
    from segpipe.pipeline.io import readers  # noqa: F401  (registers the reader families)

    text = os.fspath(path)
    if not is_url(text) and not Path(text).exists():
        raise RasterError(f"input not found: {text}")
    family = _family(text, file_signature(text))
    if family is None:
        raise RasterError(f"no reader for {text}")
    opener = _OPENERS[family][1]
    if getattr(opener, "takes_options", False):
        return opener(text, level=level, options=options or ReaderOptions())
    return opener(text, level=level)


def file_signature(path: str) -> tuple[int, ...]:
    """What changes when a local file is replaced or rewritten; an object's URL: nothing.

    Size, mtime, inode and the inode's change time: a rewrite in place that keeps the size and
    sets the mtime back still moves the change time (``os.utime`` cannot set it), so what is
    cached per signature (a TIFF's header and digest) is read again.
    """
    if is_url(path):
        return ()
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


@functools.lru_cache(maxsize=256)
def _family(path: str, signature: tuple[int, ...]) -> int | None:
    """The index of the reader family of ``path``, decided once per file (and version of it).

    Deciding reads the file's header (a TIFF's first IFD: one open, one request on a bucket);
    a run opens its input many times (plan, each ingest thread, the quicklook), each of them
    would decide again.
    """
    for i, (accepts, _) in enumerate(_OPENERS):
        if accepts(path):
            return i
    return None
