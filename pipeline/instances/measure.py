"""Per-instance measurements, with the definitions of ``skimage.measure.regionprops``.

Each block measures the objects it owns (:class:`~segpipe.pipeline.instances.block.
BlockInstances`) in its read window, so the pass streams: an owned object lies within the core
plus halo (under the "objects smaller than the halo" contract), and every property here depends
only on the object's own pixels (and the intensities under them), not on where the window was
cut. Rows come out per block; the writer concatenates them (order: the global ids given).

Columns (:func:`columns`): ``id``, ``class``, ``area_pixels``, ``area`` (× the pixel area, in the
output's area unit), ``perimeter`` (regionprops' 4-connected ``perimeter``, pixels),
``centroid_row``/``centroid_col`` (image pixels, pixel centres at integer indices),
``centroid_x``/``centroid_y`` (through the affine of pixel corners, so at ``col + 0.5, row + 0.5``),
``bbox_row_min``/``bbox_col_min``/``bbox_row_max``/``bbox_col_max`` (image pixels, max
exclusive, as regionprops), ``equivalent_diameter`` (``equivalent_diameter_area``, pixels),
``eccentricity``, ``solidity``, then ``mean_<c>`` and ``std_<c>`` for each input channel ``c``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from affine import Affine
from skimage.measure import regionprops_table

from segpipe.models.foundation import InputError

__all__ = ["Scale", "columns", "measure_objects"]

_SHAPE = ["perimeter", "equivalent_diameter_area", "eccentricity", "solidity"]


@dataclass(frozen=True)
class Scale:
    """Physical size of pixels: one pixel's area, and the affine of pixel corners.

    ``pixel_area`` is in the output's area unit (µm², m², or 1 for pixels); ``transform`` maps
    pixel corner coordinates (col, row) to physical or map (x, y). Both constant over the image
    (for a geographic CRS the caller gives an area per pixel it accepts as constant).
    """

    pixel_area: float = 1.0
    transform: Affine = field(default_factory=Affine.identity)


def columns(channels: int) -> list[str]:
    """The measurement columns, in order, for an input of ``channels`` channels."""
    fixed = ["id", "class", "area_pixels", "area", "perimeter", "centroid_row", "centroid_col",
             "centroid_x", "centroid_y", "bbox_row_min", "bbox_col_min", "bbox_row_max",
             "bbox_col_max", "equivalent_diameter", "eccentricity", "solidity"]
    return fixed + [f"{s}_{c}" for c in range(channels) for s in ("mean", "std")]


def measure_objects(ids: np.ndarray, origin: tuple[int, int], *, global_ids: np.ndarray,
                    classes: np.ndarray, intensity: np.ndarray,
                    scale: Scale) -> dict[str, np.ndarray]:
    """The measurements of the objects ``1 … n`` of ``ids``, one row each, by ``global_ids``.

    ``ids`` labels a window whose top-left pixel is image pixel ``origin`` (0 background, local
    ids 1 … n, n = ``len(global_ids)``); ``global_ids[i - 1]`` and ``classes[i - 1]`` belong
    to local id ``i``. ``intensity`` is the input over the same window, (h, w) or (h, w, C).
    Rows are sorted by global id.
    """
    channels = intensity[..., None] if intensity.ndim == 2 else intensity
    if channels.shape[:2] != ids.shape:
        raise InputError(f"intensity of shape {intensity.shape} does not cover the "
                         f"{ids.shape} window")
    count = len(global_ids)
    names = columns(channels.shape[2])
    if count == 0:
        return {name: np.zeros(0, np.float64) for name in names}
    table = regionprops_table(
        ids.astype(np.int64), intensity_image=channels,
        properties=["label", "area", "centroid", "bbox", *_SHAPE, "intensity_mean",
                    "intensity_std"])
    if len(table["label"]) != count:
        raise InputError(f"{len(table['label'])} objects in the window, {count} global ids")
    local = table["label"] - 1
    rows = table["centroid-0"] + origin[0]
    cols = table["centroid-1"] + origin[1]
    x, y = scale.transform @ (cols + 0.5, rows + 0.5)
    out: dict[str, np.ndarray] = {
        "id": np.asarray(global_ids)[local], "class": np.asarray(classes)[local],
        "area_pixels": table["area"], "area": table["area"] * scale.pixel_area,
        "perimeter": table["perimeter"], "centroid_row": rows, "centroid_col": cols,
        "centroid_x": np.asarray(x, np.float64), "centroid_y": np.asarray(y, np.float64),
        "bbox_row_min": table["bbox-0"] + origin[0], "bbox_col_min": table["bbox-1"] + origin[1],
        "bbox_row_max": table["bbox-2"] + origin[0], "bbox_col_max": table["bbox-3"] + origin[1],
        "equivalent_diameter": table["equivalent_diameter_area"],
        "eccentricity": table["eccentricity"], "solidity": table["solidity"],
    }
    for c in range(channels.shape[2]):
        out[f"mean_{c}"] = table[f"intensity_mean-{c}"]
        out[f"std_{c}"] = table[f"intensity_std-{c}"]
    order = np.argsort(out["id"], kind="stable")
    return {name: out[name][order] for name in names}
