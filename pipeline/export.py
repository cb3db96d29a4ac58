"""Export: from the label array in the work directory to the file the output extension asks for.

Every writer streams from the label Zarr and derives pyramid levels from level 0 (nearest or
mode, never by running the model again); every output appears atomically at the end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from segpipe.models.errors import InputError
from segpipe.pipeline import __version__
from segpipe.pipeline.infer import nodata_label

if TYPE_CHECKING:
    from segpipe.pipeline.run import Prepared


class OutputFormat:
    """Output format from the file name."""

    GEOTIFF = "geotiff"
    OME_TIFF = "ome-tiff"
    OME_ZARR = "ome-zarr"

    @staticmethod
    def of(path: str | os.PathLike[str]) -> str:
        """The format a path's extension asks for."""
        name = Path(path).name.lower()
        if name.endswith((".ome.tif", ".ome.tiff")):
            return OutputFormat.OME_TIFF
        if name.endswith(".ome.zarr"):
            return OutputFormat.OME_ZARR
        if name.endswith((".tif", ".tiff")):
            return OutputFormat.GEOTIFF
        raise InputError(
            f"--output {path}: unknown extension; use .tif/.tiff (GeoTIFF, COG layout), "
            ".ome.tif (OME-TIFF) or .ome.zarr (OME-Zarr labels)"
        )



def provenance_tags(prep: Prepared) -> dict[str, str]:
    """Tags written into outputs: model hash, version and the tiling parameters."""
    return {
        "SEGPIPE_VERSION": __version__,
        "SEGPIPE_MODEL": prep.card.name,
        "SEGPIPE_MODEL_SHA256": prep.model_sha256,
        "SEGPIPE_TILE": str(prep.plan.tile),
        "SEGPIPE_HALO": str(prep.plan.halo),
        "SEGPIPE_BLEND": str(prep.options.blend),
        "SEGPIPE_NORMALIZE": str(prep.normalizer.method),
    }


def export(prep: Prepared) -> str:
    """Write the output file the extension asks for from the label array; returns its path."""
    fmt = OutputFormat.of(prep.options.output)
    classes = prep.card.classes
    if fmt == OutputFormat.GEOTIFF:
        from segpipe.pipeline.io.geotiff import write_label_cog

        write_label_cog(
            prep.labels_path, prep.options.output, prep.info,
            class_names=[c.name for c in classes], colors=[c.color for c in classes],
            nodata=nodata_label(prep.num_classes), tags=provenance_tags(prep),
            workdir=prep.workdir, overview_resampling=prep.options.overview_resampling,
        )
        return prep.options.output
    raise InputError(f"output format {fmt} is not available yet")


