"""Export: from the label array in the work directory to the file the output extension asks for.

Every writer streams from the label Zarr and derives pyramid levels from level 0 (nearest or
mode, never by running the model again); every output appears atomically at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from segpipe.pipeline import __version__
from segpipe.pipeline.infer import nodata_label
from segpipe.pipeline.io.levels import (
    OutputFormat,
    companion_path,
    probabilities_path,
    write_probabilities,
)
from segpipe.pipeline.quicklook import write_quicklook

if TYPE_CHECKING:
    from segpipe.pipeline.run import Prepared

__all__ = ["OutputFormat", "export", "provenance_tags"]


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


def export(prep: Prepared) -> list[str]:
    """Write the outputs the extension asks for from the work arrays; returns their paths.

    Beside the labels: ``<name>.quicklook.png`` (coloured classes and a legend) and, with
    ``--probabilities``, ``<name>.probabilities.<ext>``.
    """
    out = prep.options.output
    fmt = OutputFormat.from_path(out)
    names = [c.name for c in prep.card.classes]
    colors = [c.color for c in prep.card.classes]
    nodata = nodata_label(prep.num_classes)
    if fmt is OutputFormat.GEOTIFF:
        from segpipe.pipeline.io.geotiff import write_label_cog

        write_label_cog(
            prep.labels_path, out, prep.info, class_names=names, colors=colors, nodata=nodata,
            tags=provenance_tags(prep), workdir=prep.workdir,
            overview_resampling=prep.options.overview_resampling,
        )
    elif fmt is OutputFormat.OME_TIFF:
        from segpipe.pipeline.io.ometiff import write_label_ome_tiff

        write_label_ome_tiff(
            prep.labels_path, out, prep.info, class_names=names, colors=colors, nodata=nodata,
            tags=provenance_tags(prep),
        )
    else:
        from segpipe.pipeline.io.omezarr import write_label_ome_zarr

        write_label_ome_zarr(
            prep.labels_path, out, prep.info, class_names=names, colors=colors, nodata=nodata,
            image_path=prep.image_path if Path(prep.image_path).exists() else None,
            ngff_version=prep.options.ngff_version,
        )
    written = [out]
    quicklook = companion_path(out, "quicklook", ".png")
    write_quicklook(prep.labels_path, quicklook, class_names=names, colors=colors, nodata=nodata)
    written.append(str(quicklook))
    if prep.probabilities_path:
        probs_out = probabilities_path(out)
        write_probabilities(prep.probabilities_path, probs_out, prep.info, fmt,
                            class_names=names if prep.out_channels > 1 else [names[-1]],
                            as_uint8=prep.options.probabilities_uint8)
        written.append(str(probs_out))
    return written
