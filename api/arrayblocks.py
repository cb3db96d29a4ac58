"""One block's labels and the normalization statistics, from pixels read through a function.

``read(window) -> (selected bands, h, w)`` reads image pixels inside the array; everything
else is the run's own code: the statistics from the run's sampled windows
(:func:`~segpipe.pipeline.normalize.compute_normalizer`), the mirror padding
(:func:`~segpipe.pipeline.tiling.read_mirrored`) and the block's labels
(:func:`~segpipe.pipeline.segment.label_block`). The eager and the lazy API share these.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from segpipe.arrayplan import ArrayPlan
from segpipe.models.card import NormMethod
from segpipe.models.foundation import InputError
from segpipe.pipeline.labels import label_dtype, nodata_label
from segpipe.pipeline.normalize import Normalizer, compute_normalizer, invalid_values
from segpipe.pipeline.segment import Labeller, label_block
from segpipe.pipeline.tiling import Window, mirror_indices, read_mirrored

__all__ = ["block_labels", "needs_statistics", "normalizer", "source_box"]

Read = Callable[[Window], np.ndarray]


def needs_statistics(plan: ArrayPlan) -> bool:
    """Whether the normalization is computed from the image (else it reads no pixel)."""
    norm = plan.normalization
    return norm.method is NormMethod.PERCENTILE or (
        norm.method is NormMethod.MEANSTD and norm.mean is None
    )


def normalizer(plan: ArrayPlan, read: Read | None) -> Normalizer:
    """The run's normalizer for the array; ``read`` is called on the sampled windows only.

    ``meanstd`` from image statistics refuses a constant band, as a run's plan does
    (:func:`~segpipe.pipeline.inputchecks.check_meanstd_bands`), from the same windows.
    """
    ranges = _Ranges(read, plan.nodata) if read is not None else None
    result = compute_normalizer(
        plan.normalization, dtype=plan.dtype, bands=len(plan.bands), nodata=plan.nodata,
        read=ranges, shape=(plan.tiles.height, plan.tiles.width),
    )
    if ranges is not None and plan.normalization.method is NormMethod.MEANSTD:
        ranges.refuse_constant(plan.bands)
    return result


class _Ranges:
    """A ``read`` that also keeps each band's lowest and highest valid value."""

    def __init__(self, read: Read, nodata: float | None) -> None:
        self.read, self.nodata = read, nodata
        self.low: np.ndarray | None = None
        self.high: np.ndarray | None = None

    def __call__(self, window: Window) -> np.ndarray:
        x = self.read(window)
        invalid = invalid_values(x, self.nodata)
        if self.low is None or self.high is None:
            self.low, self.high = np.full(len(x), np.inf), np.full(len(x), -np.inf)
        for b in range(len(x)):
            values = x[b] if invalid is None else x[b][~invalid[b]]
            if values.size:
                self.low[b] = min(self.low[b], float(values.min()))
                self.high[b] = max(self.high[b], float(values.max()))
        return x

    def refuse_constant(self, bands: tuple[int, ...]) -> None:
        if self.low is None or self.high is None:
            return
        constant = [b for b in range(len(bands)) if self.low[b] == self.high[b]]
        if constant:
            b = constant[0]
            raise InputError(
                f"normalize='meanstd': band {bands[b] + 1} of the array is constant (every "
                f"valid pixel is {self.low[b]:g}), so its standard deviation is 0 and meanstd "
                "cannot scale it; use normalize='scale' or 'none', or leave the band out with "
                "bands="
            )


def source_box(window: Window, height: int, width: int) -> Window:
    """The image pixels the mirror-extended ``window`` reads: what ``read_mirrored`` asks for."""
    rows = mirror_indices(window.row, window.row_stop, height)
    cols = mirror_indices(window.col, window.col_stop, width)
    r0, c0 = int(rows.min()), int(cols.min())
    return Window(r0, c0, int(rows.max()) + 1 - r0, int(cols.max()) + 1 - c0)


def block_labels(labeller: Labeller, index: tuple[int, int], read: Read) -> np.ndarray:
    """Labels of block ``index``'s core; all nodata when its read window is (no model run)."""
    tiles = labeller.tiles
    block = tiles.block_at(*index)
    model = labeller.load()
    pixels = read_mirrored(read, block.read, tiles.height, tiles.width)
    done = label_block(labeller, block, pixels, model)
    if done is not None:
        return done.labels
    shape = (block.core.height, block.core.width)
    return np.full(shape, nodata_label(labeller.num_classes), label_dtype(labeller.num_classes))
