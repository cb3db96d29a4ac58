"""Which bands of the input the model reads: ``--bands`` by number or by name.

``--bands`` holds 1-based band numbers and band or channel names, mixed as the user likes
(``1,2,3``, ``red,green,blue``, ``DAPI``). Names are matched, case-insensitively, against the
raster's :attr:`~segpipe.pipeline.io.base.RasterInfo.channel_names`: OME channel names,
OME-Zarr channel labels, GDAL band descriptions (``band_N`` when a band has none), and
``red``/``green``/``blue`` for RGB slides.
"""

from __future__ import annotations

from collections.abc import Sequence

from segpipe.models.foundation import InputError
from segpipe.pipeline.io.base import RasterInfo

__all__ = ["band_index", "select_bands"]


def select_bands(
    info: RasterInfo, bands: Sequence[int | str] | None, expected: int | None
) -> tuple[int, ...]:
    """0-based band indices from ``--bands`` (default: the image bands, which must fit the model).

    The image bands are all bands but an alpha band (a mask, read only when ``--bands`` names
    it).
    """
    if bands is None:
        return _default_bands(info, expected)
    bad = [b for b in bands if isinstance(b, int) and not 1 <= b <= info.bands]
    if bad:
        shown = ",".join(map(str, bad))
        raise InputError(
            f"--bands {shown} is out of range: {info.path} has bands 1..{info.bands}; give "
            f"numbers from 1 to {info.bands}"
        )
    indices = tuple(band_index(info, b) for b in bands)
    if expected is not None and len(indices) != expected:
        raise InputError(f"--bands selects {len(indices)} bands but the model expects {expected}")
    return indices


def _default_bands(info: RasterInfo, expected: int | None) -> tuple[int, ...]:
    """All bands but an alpha band, refused (naming ``--bands``) when the model takes others."""
    image = info.image_bands
    n = len(image)
    if expected is None or n == expected:
        return image
    has = f"{info.path} has {n} band{'s' if n > 1 else ''}"
    if info.alpha_band is not None:
        has = (f"{info.path} has {n} image band{'s' if n > 1 else ''} (and the alpha band "
               f"{info.alpha_band + 1}, a mask: name it in --bands to give it to the model)")
    if n < expected and expected > info.bands:
        raise InputError(
            f"{has} but the model expects {expected}: use an input with {expected} bands, or a "
            f"model made for {n}"
        )
    example = ",".join(str(b + 1) for b in (image[:expected] if n > expected else
                                            range(expected)))
    raise InputError(
        f"{has} but the model expects {expected}: choose {expected} with --bands (e.g. --bands "
        f"{example})"
    )


def band_index(info: RasterInfo, band: int | str) -> int:
    """The 0-based index of one ``--bands`` item: a 1-based number or a band name."""
    if isinstance(band, int):
        return band - 1
    names = info.channel_names
    if not names:
        raise InputError(
            f"--bands {band}: {info.path} has no band names; give band numbers 1..{info.bands}"
        )
    matches = [i for i, name in enumerate(names) if name.casefold() == band.casefold()]
    if not matches:
        raise InputError(
            f"--bands {band}: {info.path} has no band of that name; its bands are "
            f"{', '.join(names)} (or give numbers 1..{info.bands})"
        )
    if len(matches) > 1:
        numbers = ", ".join(str(i + 1) for i in matches)
        raise InputError(
            f"--bands {band}: {info.path} has several bands of that name ({numbers}); "
            "give the band number instead"
        )
    return matches[0]
