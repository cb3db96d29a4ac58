"""What every reader returns and promises, and the dispatch from a path to a reader.

A reader is a context manager over one raster level with ``info`` (a :class:`RasterInfo`) and
``read(window) -> (bands, h, w)`` for windows inside the image. Workers never receive an open
reader: they receive the path and options and call :func:`open_raster` themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np

from segpipe.models.foundation import RasterError
from segpipe.pipeline.tiling import Window


@dataclass(frozen=True)
class RasterInfo:
    """Shape, type and metadata of one raster level.

    Geospatial inputs carry ``crs_wkt`` and ``transform`` (the six affine coefficients a, b, c,
    d, e, f in rasterio's order); microscopy inputs carry ``pixel_size`` as (y, x) with
    ``pixel_unit``. Either may be None: nothing is invented when the input has none.
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
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

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
    def window(self) -> Window:
        """The whole image as a window."""
        return Window(0, 0, self.height, self.width)

    def with_level(self, level: int, height: int, width: int, scale: float) -> RasterInfo:
        """The info of pyramid level ``level``, ``scale`` times coarser than level 0."""
        transform = None
        if self.transform is not None:
            a, b, c, d, e, f = self.transform
            transform = (a * scale, b * scale, c, d * scale, e * scale, f)
        pixel_size = None
        if self.pixel_size is not None:
            pixel_size = (self.pixel_size[0] * scale, self.pixel_size[1] * scale)
        return replace(
            self, level=level, height=height, width=width, transform=transform,
            pixel_size=pixel_size,
        )


class Reader(Protocol):
    """An open raster level."""

    info: RasterInfo

    def read(self, window: Window) -> np.ndarray:
        """Pixels of ``window`` (inside the image) as an array (bands, height, width)."""
        ...

    def close(self) -> None:
        """Release the file."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class ReaderBase:
    """Context-manager plumbing shared by the readers."""

    info: RasterInfo

    def close(self) -> None:
        """Release the file (nothing to do by default)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Opener = Callable[..., Reader]
# (predicate on the path, opener) in order of preference; readers register themselves on import.
_OPENERS: list[tuple[Callable[[str], bool], Opener]] = []


def register_reader(accepts: Callable[[str], bool], opener: Opener) -> None:
    """Add a reader family: ``accepts(path)`` says whether ``opener(path, level=...)`` applies."""
    _OPENERS.append((accepts, opener))


def open_raster(path: str | os.PathLike[str], *, level: int = 0) -> Reader:
    """Open pyramid level ``level`` of the raster at ``path`` with the reader for its family."""
    from segpipe.pipeline.io import readers  # noqa: F401  (registers the reader families)

    text = os.fspath(path)
    if "://" not in text and not Path(text).exists():
        raise RasterError(f"input not found: {text}")
    for accepts, opener in _OPENERS:
        if accepts(text):
            return opener(text, level=level)
    raise RasterError(f"no reader for {text}")
