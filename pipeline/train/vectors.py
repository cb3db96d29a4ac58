"""Vector labels (polygons and points) burnt onto the image grid, window by window.

The features are read once (pyogrio, shapely), reprojected to the image's CRS when both have
one, and converted to pixel coordinates (x = column, y = row; an image without a CRS uses
pixel coordinates directly, as QuPath's GeoJSON does). For each window, the features whose
bounds meet it are burnt with :func:`rasterio.features.rasterize` (pixel centres inside a
polygon; later features over earlier ones); points are burnt after the polygons, as the pixel
that contains them or as a disc of ``point_radius`` pixels around that pixel. Each feature is one
instance (its 1-based index); its class comes from the attribute ``class_field``: a number is
the class index, a name is looked up in the class names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyogrio
import pyogrio.raw
import shapely
from affine import Affine
from rasterio.features import rasterize

from segpipe.models.foundation import InputError, RasterError
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.tiling import Window

__all__ = ["VECTOR_SUFFIXES", "VectorLabels", "read_vector_labels"]

VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite")


@dataclass(frozen=True)
class VectorLabels:
    """Features in pixel coordinates with their class and the image size; burns windows."""

    polygons: np.ndarray  # shapely geometries (pixel coordinates), object array
    polygon_ids: np.ndarray  # 1-based feature index of each polygon
    points: np.ndarray  # (n, 2) integer (row, col) of the pixel holding each point
    point_ids: np.ndarray
    class_of: np.ndarray  # class index per feature id (index 0 unused)
    height: int
    width: int
    point_radius: int = 0

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(classes, instances) of ``window``: class −1 and instance 0 where nothing is burnt."""
        ids = np.zeros((window.height, window.width), np.int32)
        self._burn_polygons(ids, window)
        self._burn_points(ids, window)
        classes = self.class_of[ids]
        classes[ids == 0] = -1
        outside = _outside(window, self.height, self.width)
        classes[outside] = -1
        ids[outside] = 0
        return classes, ids

    def _burn_polygons(self, ids: np.ndarray, window: Window) -> None:
        if not len(self.polygons):
            return
        bounds = shapely.bounds(self.polygons)  # xmin, ymin, xmax, ymax = col, row
        meets = (
            (bounds[:, 0] < window.col_stop) & (bounds[:, 2] > window.col)
            & (bounds[:, 1] < window.row_stop) & (bounds[:, 3] > window.row)
        )
        if not meets.any():
            return
        shapes = zip(self.polygons[meets], self.polygon_ids[meets].tolist())
        rasterize(shapes, out=ids, transform=Affine.translation(window.col, window.row))

    def _burn_points(self, ids: np.ndarray, window: Window) -> None:
        r = self.point_radius
        dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
        disc = dy**2 + dx**2 <= r * r
        for (row, col), fid in zip(self.points.tolist(), self.point_ids.tolist()):
            rows = row - window.row + dy[disc]
            cols = col - window.col + dx[disc]
            keep = (rows >= 0) & (rows < window.height) & (cols >= 0) & (cols < window.width)
            ids[rows[keep], cols[keep]] = fid


def _outside(window: Window, height: int, width: int) -> np.ndarray:
    rows = np.arange(window.row, window.row_stop)
    cols = np.arange(window.col, window.col_stop)
    return ((rows < 0) | (rows >= height))[:, None] | ((cols < 0) | (cols >= width))[None, :]


def read_vector_labels(
    path: str, class_field: str | None, class_names: list[str] | None, info: RasterInfo,
    point_radius: int = 0,
) -> tuple[VectorLabels, list[str] | None]:
    """Read ``path`` onto the grid of ``info``; return the labels and the class names used.

    Class names are returned when the attribute holds names (``class_names``, or the sorted
    distinct names when none are given); None when it holds class numbers.
    """
    if not class_field:
        raise InputError(f"--labels {path} is a vector file: name its class attribute with "
                         "--class-field (e.g. --class-field class)")
    try:
        meta, _, wkb, fields = pyogrio.raw.read(path, columns=[class_field])
    except Exception as exc:
        raise RasterError(f"cannot read vector labels {path}: {exc}") from None
    if class_field not in list(meta["fields"]):
        raise InputError(f"--class-field {class_field!r} is not an attribute of {path}; it has "
                         f"{', '.join(map(str, meta['fields'])) or 'none'}")
    geoms = _to_pixels(shapely.from_wkb(wkb), meta.get("crs"), info, path)
    classes, names = _class_indices(fields[0], class_names, class_field, path)
    keep = ~shapely.is_empty(geoms) & (classes >= 0)
    kinds = shapely.get_type_id(geoms)
    is_point = keep & (kinds == 0)
    is_area = keep & np.isin(kinds, (3, 6))
    ids = np.arange(1, len(geoms) + 1)
    pts = geoms[is_point]
    points = np.floor(np.column_stack([shapely.get_y(pts), shapely.get_x(pts)])).astype(int)
    labels = VectorLabels(
        polygons=geoms[is_area], polygon_ids=ids[is_area], points=points.reshape(-1, 2),
        point_ids=ids[is_point], class_of=np.concatenate([[-1], classes]).astype(np.int64),
        height=info.height, width=info.width, point_radius=point_radius,
    )
    return labels, names


def _to_pixels(geoms: np.ndarray, crs: str | None, info: RasterInfo, path: str) -> np.ndarray:
    """Geometries in the image's pixel coordinates (x = column, y = row)."""
    if info.crs_wkt is None and crs:
        raise InputError(f"--labels {path} has a CRS but the image {info.path} has none: "
                         "give vector labels in pixel coordinates (no CRS)")
    if crs and info.crs_wkt:
        from rasterio.crs import CRS
        from rasterio.warp import transform as warp

        src, dst = CRS.from_user_input(crs), CRS.from_wkt(info.crs_wkt)
        if src != dst:
            def reproject(xy: np.ndarray) -> np.ndarray:
                xs, ys = warp(src, dst, xy[:, 0].tolist(), xy[:, 1].tolist())
                return np.column_stack([xs, ys])

            geoms = shapely.transform(geoms, reproject)
    if info.transform is None:
        return geoms
    inverse = ~Affine(*info.transform)
    a, b, c, d, e, f = inverse[:6]
    return shapely.transform(
        geoms, lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c,
                                           d * xy[:, 0] + e * xy[:, 1] + f])
    )


def _class_indices(
    values: np.ndarray, names: list[str] | None, field: str, path: str
) -> tuple[np.ndarray, list[str] | None]:
    """Class index per feature (−1 for features without a class) and the names, if by name."""
    present = [v for v in values.tolist() if v is not None and v == v]
    if all(isinstance(v, int | float) and float(v).is_integer() for v in present):
        out = np.array([-1 if v is None or v != v else int(v) for v in values.tolist()])
        if (out < -1).any():
            raise InputError(f"{path}: attribute {field!r} has negative class numbers")
        return out, None
    text = [None if v is None else str(v) for v in values.tolist()]
    known = names or sorted({t for t in text if t is not None})
    unknown = sorted({t for t in text if t is not None and t not in known})
    if unknown:
        raise InputError(f"{path}: classes {unknown} of attribute {field!r} are not among "
                         f"--classes {known}; add them to --classes")
    return np.array([-1 if t is None else known.index(t) for t in text]), known
