"""The choices a reader makes where the input leaves them open: :class:`ReaderOptions`.

Most inputs are read as they are. A STAC item is a stack segpipe builds (:mod:`.stac`): which
assets (the bands asked by name), on which grid (the finest of those bands) and how coarser bands
are brought onto it (:class:`Resampling`). These choices change the pixels, so every open of one
run's input must make the same ones: planning, the statistics, the feed threads (on Dask workers
too: the pickled :class:`~segpipe.pipeline.feed.Feed` carries them), the quicklook. They travel as
this one small frozen record, through :func:`~segpipe.pipeline.io.base.open_raster`'s
``options``, never as a global; readers of other formats ignore it.

This module imports nothing heavy: :mod:`segpipe.pipeline.options` takes its enum from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from segpipe.models.foundation import InputError

__all__ = ["ReaderOptions", "Resampling"]


class Resampling(StrEnum):
    """How a STAC item's coarser bands reach the finest grid: ``nearest`` (default) or bilinear."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"


@dataclass(frozen=True)
class ReaderOptions:
    """What a reader of a stacked input (a STAC item) needs besides the path and the level.

    ``bands``: the band names to stack, in that order (None: every band the item has). Only
    names: band numbers index the item's full stack, so they leave the stack whole.
    """

    resampling: Resampling = Resampling.NEAREST
    bands: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "resampling", _resampling(self.resampling))
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(self.bands))

    @classmethod
    def of(cls, bands: Sequence[int | str] | None, resampling: Resampling | str) -> ReaderOptions:
        """The options for ``--bands`` and ``--resampling``: the bands kept when all are names.

        A name asked twice is stacked once (the band selection maps both to it).
        """
        names: tuple[str, ...] | None = None
        if isinstance(bands, str):
            bands = (bands,)
        if bands and all(isinstance(b, str) for b in bands):
            kept: dict[str, str] = {}
            for b in bands:
                kept.setdefault(str(b).casefold(), str(b))
            names = tuple(kept.values())
        return cls(_resampling(resampling), names)


def _resampling(value: Resampling | str) -> Resampling:
    """``value`` as a :class:`Resampling`; :class:`InputError` naming the choices otherwise."""
    try:
        return Resampling(str(value).strip().lower())
    except ValueError:
        raise InputError(f"--resampling {value!r} is not one of "
                         f"{', '.join(Resampling)}") from None
