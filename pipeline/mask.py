"""``--mask``: segment only inside a region; outside it the labels are nodata and cost nothing.

Three kinds of region, all answered per window of the image being segmented (the chosen
level's pixel grid) by :meth:`RegionMask.inside`:

- a **raster** (any format segpipe reads): non-zero, non-nodata pixels are inside. It covers the
  image's extent at any resolution and is sampled by nearest neighbour;
- **polygons** (any vector file pyogrio reads: GeoPackage, GeoJSON, Shapefile …), an area of
  interest, burnt into each window with ``rasterio.features.rasterize``: in the image's CRS
  (reprojected when the file has another), or in pixel coordinates (x = column, y = row) for an
  image without georeferencing, such as a slide;
- ``tissue``: computed once from a low-resolution level of the input (Otsu's threshold on the
  HSV saturation of the first three bands, or on darkness for one band; small holes filled and
  the region grown by a margin so tissue edges are kept), stored in the work directory as a small
  array. The glass of a whole-slide scan then costs nothing.

A block whose core lies wholly outside is written as nodata without reading or running the
model; inside a block, pixels outside are set to nodata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

import numpy as np

from segpipe.models.foundation import InputError
from segpipe.pipeline.io.base import RasterInfo, open_raster
from segpipe.pipeline.tiling import Window

__all__ = ["TISSUE", "MaskKind", "RegionMask", "region_mask", "tissue_mask"]

TISSUE = "tissue"
#: The tissue mask is computed at the level whose longer side is the smallest at least this.
TISSUE_SIDE = 1024
#: Tissue is grown by this share of the mask's longer side (so edges are never cut).
TISSUE_MARGIN = 0.01

_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".parquet")


class MaskKind(StrEnum):
    """What a ``--mask`` is."""

    RASTER = "raster"
    POLYGONS = "polygons"
    TISSUE = "tissue"


@dataclass(frozen=True)
class RegionMask:
    """A region over an image of ``height`` × ``width`` (small and picklable: paths only)."""

    kind: MaskKind
    path: str
    height: int
    width: int
    transform: tuple[float, ...] | None = None
    crs_wkt: str | None = None

    def key(self) -> dict:
        """What identifies the region (part of the label key: another mask, other labels)."""
        if self.kind is MaskKind.TISSUE:
            return {"kind": str(self.kind), "side": TISSUE_SIDE, "margin": TISSUE_MARGIN}
        st = os.stat(self.path)
        return {"kind": str(self.kind), "path": self.path, "size": st.st_size,
                "mtime_ns": st.st_mtime_ns}

    def prepare(self, input_path: str, info: RasterInfo) -> None:
        """Compute what must be computed once (the tissue mask of ``info``'s image)."""
        if self.kind is MaskKind.TISSUE and not Path(self.path).exists():
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(self.path).with_suffix(".partial.npy")
            np.save(tmp, tissue_mask(input_path, info))
            tmp.replace(self.path)

    def inside(self, window: Window) -> np.ndarray:
        """Boolean (h, w): which pixels of ``window`` (inside the image) are in the region."""
        if self.kind is MaskKind.POLYGONS:
            return _burn(self.path, self.crs_wkt, self.transform, window)
        grid = _low_res(self.path, _mtime(self.path)) if self.kind is MaskKind.TISSUE else None
        if grid is not None:
            return _sample(grid, window, self.height, self.width)
        with open_raster(self.path) as reader:
            info = reader.info
            rows, cols = _nearest(window, self.height, self.width, info.height, info.width)
            r0, c0 = int(rows.min()), int(cols.min())
            src = reader.read(Window(r0, c0, int(rows.max()) - r0 + 1,
                                     int(cols.max()) - c0 + 1))[0]
            nodata = info.nodata
        values = src[np.ix_(rows - r0, cols - c0)]
        inside = values != 0
        if nodata is not None:
            inside &= values != nodata
        if np.issubdtype(values.dtype, np.floating):
            inside &= ~np.isnan(values)
        return np.asarray(inside)


def _nearest(window: Window, height: int, width: int, mh: int, mw: int):
    rows = np.minimum(((np.arange(window.row, window.row_stop) + 0.5) * mh / height)
                      .astype(np.int64), mh - 1)
    cols = np.minimum(((np.arange(window.col, window.col_stop) + 0.5) * mw / width)
                      .astype(np.int64), mw - 1)
    return rows, cols


def _sample(grid: np.ndarray, window: Window, height: int, width: int) -> np.ndarray:
    rows, cols = _nearest(window, height, width, *grid.shape)
    return np.asarray(grid[np.ix_(rows, cols)])


def _mtime(path: str) -> int:
    return os.stat(path).st_mtime_ns


@lru_cache(maxsize=2)
def _low_res(path: str, mtime_ns: int) -> np.ndarray:
    return np.load(path)


def _geometries(path: str, crs_wkt: str | None) -> tuple:
    """The polygons of a vector file, in the image's CRS when both have one (cached)."""
    return _read_geometries(path, crs_wkt, _mtime(path))


@lru_cache(maxsize=2)
def _read_geometries(path: str, crs_wkt: str | None, mtime_ns: int) -> tuple:
    import shapely
    from pyogrio.raw import read

    try:
        meta, _, geometry, _ = read(path, read_geometry=True, columns=[])
    except Exception as exc:
        raise InputError(f"--mask {path}: cannot read it as polygons ({exc})") from None
    geoms = shapely.from_wkb(geometry)
    source_crs = meta.get("crs")
    if source_crs and crs_wkt:
        from pyproj import CRS, Transformer

        if CRS.from_user_input(source_crs) != CRS.from_wkt(crs_wkt):
            t = Transformer.from_crs(source_crs, CRS.from_wkt(crs_wkt), always_xy=True)
            geoms = shapely.transform(geoms, lambda xy: np.column_stack(t.transform(*xy.T)))
    return tuple(g for g in geoms if g is not None and not g.is_empty)


def _burn(path: str, crs_wkt: str | None, transform: tuple[float, ...] | None,
          window: Window) -> np.ndarray:
    from affine import Affine
    from rasterio.features import rasterize

    base = Affine(*transform[:6]) if transform else Affine.identity()
    local = base @ Affine.translation(window.col, window.row)
    geoms = _geometries(path, crs_wkt if transform else None)
    if not geoms:
        return np.zeros((window.height, window.width), bool)
    burnt = rasterize(geoms, out_shape=(window.height, window.width), transform=local,
                      fill=0, default_value=1, dtype="uint8")
    return burnt.astype(bool)


def region_mask(spec: str, info: RasterInfo, workdir: str) -> RegionMask:
    """The region ``--mask spec`` names over the image ``info`` (checked; reads no pixels).

    ``tissue`` is computed later, once, by :meth:`RegionMask.prepare` (the ingest stage).
    """
    common = dict(height=info.height, width=info.width, transform=info.transform,
                  crs_wkt=info.crs_wkt)
    if spec.strip().lower() == TISSUE:
        path = Path(workdir) / "tissue_mask.npy"
        return RegionMask(MaskKind.TISSUE, str(path), **common)
    if not Path(spec).exists():
        raise InputError(
            f"--mask {spec}: file not found; give a mask raster, a polygon file or 'tissue'"
        )
    if spec.lower().endswith(_VECTOR_SUFFIXES):
        _geometries(os.path.abspath(spec), info.crs_wkt if info.transform else None)
        return RegionMask(MaskKind.POLYGONS, os.path.abspath(spec), **common)
    try:
        with open_raster(spec):
            pass
    except Exception:
        raise InputError(
            f"--mask {spec}: neither a raster segpipe reads nor a polygon file "
            f"({', '.join(_VECTOR_SUFFIXES)})"
        ) from None
    return RegionMask(MaskKind.RASTER, os.path.abspath(spec), **common)


def tissue_mask(input_path: str, info: RasterInfo) -> np.ndarray:
    """Tissue (True) vs background at low resolution, from the input's levels or a decimation."""
    level, factor = _low_level(info)
    with open_raster(input_path, level=level) as reader:
        h, w = reader.info.height, reader.info.width
        strips = []
        step = max(1, 4096 // max(1, w // factor)) * factor
        for r in range(0, h, step):
            window = Window(r, 0, min(step, h - r), w)
            strips.append(reader.read(window)[:3, ::factor, ::factor])
    pixels = np.concatenate(strips, axis=1).astype(np.float32)
    return _tissue(pixels)


def _low_level(info: RasterInfo) -> tuple[int, int]:
    """The level to read (the smallest with a side ≥ TISSUE_SIDE) and a decimation factor."""
    levels = info.levels or ((info.height, info.width),)
    best = 0
    for i, (h, w) in enumerate(levels):
        if max(h, w) >= TISSUE_SIDE:
            best = i
    h, w = levels[best]
    return best, max(1, max(h, w) // TISSUE_SIDE)


def _tissue(pixels: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    if pixels.shape[0] >= 3:
        rgb = pixels[:3]
        top, low = rgb.max(axis=0), rgb.min(axis=0)
        signal = np.where(top > 0, (top - low) / np.maximum(top, 1e-6), 0.0)  # HSV saturation
    else:
        signal = pixels[0].max() - pixels[0]  # darkness: stained tissue on bright glass
    tissue = signal > otsu_threshold(signal)
    tissue = ndimage.binary_opening(tissue, iterations=1)
    tissue = ndimage.binary_fill_holes(tissue)
    grow = max(1, round(TISSUE_MARGIN * max(tissue.shape)))
    return np.asarray(ndimage.binary_dilation(tissue, iterations=grow))


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut between two classes that maximizes their between-class variance."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.min() == finite.max():
        return float(finite.min()) if finite.size else 0.0
    hist, edges = np.histogram(finite, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])
