"""The file I/O every contender is charged: segpipe's, done once, directly.

- :func:`read_whole`: the input GeoTIFF read once, GDAL decoding its tiles on every core
  (``GDAL_NUM_THREADS=ALL_CPUS``, as segpipe's streaming stages do);
- :func:`write_cog`: labels held in memory written once as a COG with the settings of segpipe's
  label writer (``pipeline/io/writers/geotiff.py``: GDAL's COG driver, DEFLATE at GDAL's default
  level (segpipe passes none), ``COG_BLOCK``-pixel blocks, ``BIGTIFF=IF_SAFER``,
  ``OVERVIEWS=AUTO`` made with the default ``--overview-resampling``, tiles compressed on every
  core; nodata 255; the input's CRS and transform). The block size and the resampling are
  imported from segpipe, the rest is copied from that writer's ``rasterio.shutil.copy`` call;
- :func:`cog_layout` / :func:`layout_diff`: what a written COG's layout is, so a benchmark checks
  that its COG and segpipe's output are laid out alike (the writer may change: a mismatch is
  reported in the results, never hidden).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: GDAL decodes (and the COG driver encodes) on every core
ALL_CORES = {"GDAL_NUM_THREADS": "ALL_CPUS"}
LABEL_NODATA = 255


def cog_options() -> dict[str, str]:
    """The creation options of segpipe's label COG copy (pipeline/io/writers/geotiff.py)."""
    from segpipe.pipeline.io.writers.geotiff import COG_BLOCK
    from segpipe.pipeline.options import ExportOptions

    return {
        "COMPRESS": "DEFLATE", "NUM_THREADS": "ALL_CPUS", "BLOCKSIZE": str(COG_BLOCK),
        "BIGTIFF": "IF_SAFER", "OVERVIEWS": "AUTO",
        "RESAMPLING": str(ExportOptions().overview_resampling).upper(),
    }


def read_whole(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """All bands of ``path`` (bands, h, w) in one read, and its georeferencing."""
    import rasterio

    with rasterio.Env(**ALL_CORES), rasterio.open(path) as ds:
        return ds.read(), {"crs": ds.crs, "transform": ds.transform}


def write_cog(labels: np.ndarray, georef: dict[str, Any], out: str | Path) -> Path:
    """``labels`` (h, w) uint8 written once as a COG at ``out`` (segpipe's settings)."""
    import rasterio
    import rasterio.shutil

    h, w = labels.shape
    profile = {"driver": "MEM", "width": w, "height": h, "count": 1, "dtype": "uint8",
               "nodata": LABEL_NODATA, **georef}
    with rasterio.Env(**ALL_CORES), rasterio.open("", "w", **profile) as mem:
        mem.write(labels, 1)
        rasterio.shutil.copy(mem, str(out), driver="COG", **cog_options())
    return Path(out)


def cog_layout(path: str | Path) -> dict[str, Any]:
    """What decides a COG's bytes and cost: layout, codec, predictor, blocks, overviews, type."""
    import rasterio

    with rasterio.open(path) as ds:
        structure = ds.tags(ns="IMAGE_STRUCTURE")
        return {
            "layout": structure.get("LAYOUT"), "compression": structure.get("COMPRESSION"),
            "predictor": structure.get("PREDICTOR"), "blocks": list(ds.block_shapes[0]),
            "overviews": ds.overviews(1), "dtype": ds.dtypes[0], "nodata": ds.nodata,
            "count": ds.count, "bytes": Path(path).stat().st_size,
        }


def layout_diff(ours: dict[str, Any], segpipes: dict[str, Any]) -> dict[str, list]:
    """The layout fields (bytes aside: the labels differ) where two COGs differ."""
    return {k: [ours.get(k), segpipes.get(k)] for k in segpipes
            if k != "bytes" and ours.get(k) != segpipes.get(k)}
