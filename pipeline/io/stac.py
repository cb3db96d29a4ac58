"""STAC items as input: an item's per-band assets stacked by band common name, on one grid.

A Sentinel-2 or Landsat scene published as a STAC Item is one COG per band, at different
resolutions (10, 20 and 60 m). This reader makes it one raster: each band is an asset band
whose ``eo:bands`` (STAC 1.0's eo extension) or ``bands`` (STAC 1.1, ``eo:common_name``)
entry names a ``common_name`` (``blue``, ``red``, ``nir``, ``swir16``...), and the band's name in
:attr:`RasterInfo.channel_names` is that common name, so ``--bands blue,green,red,nir`` picks
and orders assets by it (:mod:`segpipe.pipeline.bands`).

Which assets: those with band common names whose roles are not ``thumbnail``, ``overview``,
``visual`` or ``metadata`` and whose media type (when given) is an image. One band published
twice (a COG and a JPEG 2000 copy of the same ``eo:bands`` name) is read from the TIFF. The
default order is the eo extension's list of common names by wavelength (coastal, blue, green,
red, ..., swir22, lwir), then the item's own order; a common name held by several bands (three
``rededge`` bands) names each by its band name instead (``rededge1``...).

Which bands and how: :class:`~segpipe.pipeline.io.readeroptions.ReaderOptions`, given to every
open of a run's input. ``bands`` (``--bands`` when it names bands) stacks only those, in that
order, so a band not asked for is neither read nor decides the grid; band numbers index the full
stack. The grid: the finest of the stacked bands (smallest pixel), in the item's CRS (every
asset must share it), so ``--bands nir,swir16,swir22`` lies on the 20 m grid even where the item
has 10 m bands; the coarser bands are resampled onto it by a :class:`rasterio.vrt.WarpedVRT`,
window by window, ``nearest`` by default or ``bilinear`` (``--resampling``). A window reads only
the tiles of each asset it touches: range requests on ``s3://`` and ``https://`` assets, as for
any COG (:mod:`segpipe.pipeline.io.gdal`), under the same AWS and retry settings
(:func:`~segpipe.pipeline.io.remote.gdal_env`). Relative asset hrefs are resolved against the
item's own location (a folder or a bucket prefix). :attr:`RasterInfo.path` stays the item.

The item is recognised by content, not by name alone: a ``.json`` path whose JSON is an object
with ``"type": "Feature"`` and a ``stac_version`` (one small read, once per file: the reader
families' decision is cached). The resume and up-to-date keys cover the stacked assets too
(:func:`stacked_hrefs`, read by :class:`~segpipe.pipeline.keys.InputIdentity`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import numpy as np
import rasterio
from rasterio.enums import Resampling as RioResampling
from rasterio.errors import RasterioIOError
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window as RioWindow

from segpipe.models.foundation import InputError, RasterError
from segpipe.pipeline import storage
from segpipe.pipeline.io.base import MaskKind, RasterInfo, ReaderBase
from segpipe.pipeline.io.readeroptions import ReaderOptions, Resampling
from segpipe.pipeline.io.remote import gdal_env
from segpipe.pipeline.tiling import Window

__all__ = ["StacBand", "StacReader", "is_stac_item", "item_bands", "stacked_hrefs"]

#: The eo extension's common names, by wavelength: the default order of the stacked bands.
COMMON_NAMES = (
    "coastal", "blue", "green", "red", "yellow", "pan", "rededge", "nir", "nir08", "nir09",
    "cirrus", "swir16", "swir22", "lwir", "lwir11", "lwir12",
)
#: asset roles that are not the scene's bands (previews, true-colour composites, metadata)
_SKIPPED_ROLES = frozenset({"thumbnail", "overview", "visual", "metadata"})
#: the largest item JSON read (a STAC item is a few kB; a bigger .json is not one)
_MAX_ITEM_BYTES = 16 << 20


@dataclass(frozen=True)
class StacBand:
    """One band of the stack: its name, its common name, and where its pixels are.

    ``href``: the asset's absolute path or URL; ``index``: the band's 1-based number inside the
    asset (1 for the usual one-band COG).
    """

    name: str
    common_name: str
    href: str
    index: int
    asset: str


# ------------------------------------------------------------------ recognising and parsing


def is_stac_item(path: str) -> bool:
    """Whether ``path`` is a STAC Item: a ``.json`` whose object has type Feature and a version.

    A ``.json`` URL that cannot be fetched counts as one, so that the error says why (not found,
    credentials) instead of another reader's "cannot read as a raster".
    """
    name = urlsplit(path).path if storage.is_url(path) else path
    if not name.lower().endswith(".json"):
        return False
    if not storage.is_url(path):
        p = Path(path)
        if not p.is_file() or p.stat().st_size > _MAX_ITEM_BYTES:
            return False
    try:
        item = _parse(storage.read_bytes(path))
    except OSError:
        return storage.is_url(path)
    except ValueError:
        return False
    return isinstance(item, dict) and item.get("type") == "Feature" and "stac_version" in item


def _parse(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))


def load_item(path: str) -> dict[str, Any]:
    """The item's JSON object; :class:`RasterError` naming the item when it cannot be read."""
    try:
        item = _parse(storage.read_bytes(path))
    except (OSError, ValueError) as exc:
        raise RasterError(f"cannot read the STAC item {path}: {_first_line(exc)}") from None
    if not isinstance(item, dict) or not isinstance(item.get("assets"), dict):
        raise RasterError(f"{path} is not a STAC item with assets")
    return item


def resolve_href(item_path: str, href: str) -> str:
    """``href`` as an absolute path or URL: relative hrefs are relative to the item's folder."""
    if href.startswith("file://"):
        return unquote(urlsplit(href).path)
    if storage.is_url(href):
        return href
    if storage.is_url(item_path):
        parts = urlsplit(item_path)
        path = href if href.startswith("/") else posixpath.join(posixpath.dirname(parts.path),
                                                                 href)
        return f"{parts.scheme}://{parts.netloc}{posixpath.normpath(path)}"
    base = Path(item_path).absolute().parent
    return os.path.normpath(base / href)


def _asset_bands(asset: dict[str, Any]) -> list[dict[str, Any]]:
    """The asset's band entries: ``eo:bands`` (STAC 1.0) or ``bands`` (STAC 1.1)."""
    bands = asset.get("eo:bands") or asset.get("bands") or []
    return [b if isinstance(b, dict) else {} for b in bands] if isinstance(bands, list) else []


def _common_name(band: dict[str, Any]) -> str | None:
    name = band.get("common_name") or band.get("eo:common_name")
    return str(name) if name else None


def _is_band_asset(asset: dict[str, Any]) -> bool:
    roles = asset.get("roles") or []
    media = str(asset.get("type") or "image/")
    return bool(asset.get("href")) and media.startswith("image/") and not (
        _SKIPPED_ROLES & set(roles))


def item_bands(path: str, item: dict[str, Any] | None = None) -> tuple[StacBand, ...]:
    """Every band the item can stack, in the default order (see the module docstring)."""
    item = load_item(path) if item is None else item
    found: dict[str, tuple[StacBand, bool]] = {}  # by band name: the band, whether a TIFF
    for key, asset in item["assets"].items():
        if not isinstance(asset, dict) or not _is_band_asset(asset):
            continue
        tiff = "tiff" in str(asset.get("type", "")).lower()
        for i, entry in enumerate(_asset_bands(asset)):
            common = _common_name(entry)
            if common is None:
                continue
            own = str(entry.get("name") or (key if len(_asset_bands(asset)) == 1 else
                                            f"{key}_{i + 1}"))
            band = StacBand(own, common, resolve_href(path, str(asset["href"])), i + 1, key)
            if own not in found or (tiff and not found[own][1]):
                found[own] = (band, tiff)
    bands = [b for b, _ in found.values()]
    bands.sort(key=lambda b: COMMON_NAMES.index(b.common_name) if b.common_name in
               COMMON_NAMES else len(COMMON_NAMES))
    return _named(bands)


def _named(bands: list[StacBand]) -> tuple[StacBand, ...]:
    """Bands named by common name, or by their own name where the common name is shared."""
    counts: dict[str, int] = {}
    for b in bands:
        counts[b.common_name.casefold()] = counts.get(b.common_name.casefold(), 0) + 1
    return tuple(
        b if counts[b.common_name.casefold()] > 1 else
        StacBand(b.common_name, b.common_name, b.href, b.index, b.asset)
        for b in bands
    )


def choose_bands(path: str, bands: tuple[StacBand, ...],
                 names: Sequence[str] | None) -> tuple[StacBand, ...]:
    """The bands ``names`` asks for, in that order (all by default); a missing name is refused."""
    if names is None:
        if not bands:
            raise InputError(f"{path}: the STAC item has no asset with band common names "
                             "(eo:bands common_name); segpipe stacks bands by them")
        return bands
    by_name = {b.name.casefold(): b for b in bands}
    missing = [n for n in names if n.casefold() not in by_name]
    if missing:
        have = ", ".join(b.name for b in bands) or "none"
        raise InputError(
            f"--bands {','.join(names)}: the STAC item {path} has no band "
            f"{', '.join(missing)}; its bands by common name are {have}"
        )
    return tuple(by_name[n.casefold()] for n in names)


def stacked_hrefs(path: str) -> tuple[str, ...]:
    """The assets a default stack of ``path`` reads (what the resume key must cover)."""
    return tuple(dict.fromkeys(b.href for b in item_bands(path)))


# ------------------------------------------------------------------ the reader


@dataclass(frozen=True)
class _Grid:
    crs_wkt: str
    transform: tuple[float, ...]
    height: int
    width: int

    @property
    def pixel_area(self) -> float:
        a, b, _, d, e, _ = self.transform
        return abs(a * e - b * d)


def _grid(ds: Any) -> _Grid:
    return _Grid(ds.crs.to_wkt() if ds.crs else "", tuple(ds.transform)[:6], ds.height,
                 ds.width)


class StacReader(ReaderBase):
    """The bands of a STAC item stacked on the finest grid among them (level 0 only).

    ``options.bands``: common names to stack, in that order (default: every band, see the
    module docstring); ``options.resampling``: how coarser bands reach the finest grid.
    """

    takes_options: ClassVar[bool] = True  # open_raster gives it the run's ReaderOptions

    def __init__(self, path: str, *, level: int = 0,
                 options: ReaderOptions | None = None) -> None:
        if level:
            raise RasterError(f"{path}: a STAC item is read at its finest grid only (level 0); "
                              f"level {level} does not exist")
        options = options or ReaderOptions()
        self._stack = contextlib.ExitStack()
        try:
            self._open(path, options.bands, options.resampling)
        except BaseException:
            self._stack.close()
            raise

    def _open(self, path: str, names: Sequence[str] | None, resampling: Resampling) -> None:
        chosen = choose_bands(path, item_bands(path), names)
        for scheme_href in {urlsplit(b.href).scheme: b.href for b in chosen}.values():
            self._stack.enter_context(gdal_env(scheme_href))
        datasets = {href: self._open_asset(path, href) for href in
                    dict.fromkeys(b.href for b in chosen)}
        grids = {href: _grid(ds) for href, ds in datasets.items()}
        if len({g.crs_wkt for g in grids.values()}) > 1:
            raise RasterError(f"{path}: the chosen assets are in different CRSs; segpipe stacks "
                              "assets of one CRS (reproject them, or choose others with --bands)")
        grid = min(grids.values(), key=lambda g: g.pixel_area)  # the first finest, by order
        sources = {href: ds if grids[href] == grid else self._warped(ds, grid, resampling)
                   for href, ds in datasets.items()}
        self._bands = [(sources[b.href], b.index) for b in chosen]
        self._names = [b.name for b in chosen]
        dtypes = [datasets[b.href].dtypes[b.index - 1] for b in chosen]
        nodata = _nodata(path, chosen, datasets)
        self.info = RasterInfo(
            path=path, format="stac", height=grid.height, width=grid.width, bands=len(chosen),
            dtype=str(np.result_type(*dtypes)), nodata=nodata, crs_wkt=grid.crs_wkt or None,
            transform=grid.transform, channel_names=tuple(b.name for b in chosen),
            levels=((grid.height, grid.width),),
            mask=MaskKind.NODATA if nodata is not None else None,
            extra={"resampling": str(resampling), "assets": [b.href for b in chosen]},
        )

    def _open_asset(self, path: str, href: str) -> Any:
        try:
            return self._stack.enter_context(rasterio.open(href))
        except RasterioIOError as exc:
            raise RasterError(f"{path}: cannot read its asset {href} ({_first_line(exc)})"
                              ) from None

    def _warped(self, ds: Any, grid: _Grid, resampling: Resampling) -> Any:
        return self._stack.enter_context(WarpedVRT(
            ds, crs=ds.crs, transform=Affine(*grid.transform), width=grid.width,
            height=grid.height, resampling=RioResampling[resampling.value],
        ))

    def read(self, window: Window) -> np.ndarray:
        """Pixels of ``window`` as (bands, h, w), each band read (and resampled) on its own."""
        rio = RioWindow(window.col, window.row, window.width, window.height)
        out = np.empty((len(self._bands), window.height, window.width), self.info.dtype)
        for i, (source, index) in enumerate(self._bands):
            try:
                out[i] = source.read(index, window=rio)
            except RasterioIOError as exc:
                raise RasterError(
                    f"{self.info.path}: reading band {self._names[i]} "
                    f"({source.name}) at rows {window.row}-{window.row_stop - 1} failed "
                    f"({_first_line(exc)}); check the asset"
                ) from None
        return out

    def close(self) -> None:
        """Close every asset (and leave their GDAL environments)."""
        self._stack.close()


def _nodata(path: str, chosen: Sequence[StacBand], datasets: dict[str, Any]) -> float | None:
    """The bands' common nodata value (None when none declares one); refused when they differ."""
    declared = [datasets[b.href].nodatavals[b.index - 1] for b in chosen]
    values = {v for v in declared if v is not None and not math.isnan(v)}
    if any(v is not None and math.isnan(v) for v in declared):
        values.add(math.nan)  # one NaN, however many bands declare it
    if len(values) > 1:
        raise RasterError(f"{path}: the chosen assets declare different nodata values "
                          f"{sorted(values)}")
    return values.pop() if values else None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
