"""``segpipe.segment``: labels for a NumPy array, a Dask array or an xarray DataArray.

The same engine as ``segpipe run``: the keywords are the run's options (validated by the same
option groups, so a bad value is refused with the same message), the plan is made by the run's
functions (:mod:`segpipe.arrayplan`), the statistics come from the run's sampled windows and
each block is labelled by the run's block function. So the labels equal those of a run on the
same pixels written to a file, and a run's exactness contract (tiled = whole image) holds.

It returns the kind it is given: NumPy in, NumPy out (computed now); Dask in, Dask out (lazy:
nothing is read until it is computed); a DataArray gives a DataArray, lazy when its data is
a Dask array.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

from segpipe.arrayplan import ArrayInput, ArrayPlan, plan_array, with_model
from segpipe.dataarray import band_first, grid_info, is_dataarray, labels_like, spatial_input
from segpipe.models.card import ModelCard
from segpipe.models.foundation import InputError
from segpipe.modelsource import model_source
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.options import RunOptions

__all__ = ["segment"]


def segment(
    data: Any,
    model: Any = None,
    *,
    tile: int | None = None,
    halo: int | None = None,
    blend: str = "crop",
    bands: Any = None,
    normalize: str | None = None,
    nodata: float | None = None,
    sensor: str | None = None,
    device: str = "auto",
    precision: str = "fp32",
    batch_size: int | None = None,
    backend: str = "eager",
    block_pixels: int = 1024,
    model_sha256: str | None = None,
    random_weights: bool = False,
    card: ModelCard | None = None,
) -> Any:
    """Segment ``data`` with ``model``; labels of the same kind, H × W, uint8 (uint16 > 254).

    ``data``: (bands, H, W) or (H, W); a DataArray has dims ``y``, ``x`` and one band dim.
    ``model``: a model file, a bundled model name, a URL or a ``torch.nn.Module`` (with
    ``card=`` its card, else none). None chooses a bundled model for a DataArray by its CRS,
    pixel size and band names, as a run does for a file (the reason is a Python warning);
    a bare array says too little and is refused. The keywords are the run's
    options of the same names (``segpipe run --help``); nodata pixels get label 255 (65535).
    """
    options = RunOptions.of(
        "", "", tile=tile, halo=halo, blend=blend, bands=bands, normalize=normalize,
        nodata=nodata, sensor=sensor, device=device, precision=precision,
        batch_size=batch_size, backend=backend, block_pixels=block_pixels,
    )
    if is_dataarray(data):
        grid = band_first(data)
        described = spatial_input(grid)
        plan = _plan(described, grid_info(grid, described), model, card, options,
                     model_sha256, random_weights)
        return labels_like(data, _labels(grid.data, plan), plan)
    array = _band_first(data)
    shape = tuple(int(n) for n in array.shape)
    described = ArrayInput(shape[0], shape[1], shape[2], str(array.dtype))
    plan = _plan(described, None, model, card, options, model_sha256, random_weights)
    return _labels(array, plan)


def _plan(
    data: ArrayInput, info: RasterInfo | None, model: Any, card: ModelCard | None,
    options: RunOptions, sha256: str | None, random_weights: bool,
) -> ArrayPlan:
    """The array's plan; ``info``: what a DataArray says of its grid (None for a bare array)."""
    if model is None:
        options = _bundled(info, options)
    else:
        selected = len(options.source.bands) if options.source.bands else data.bands
        options = with_model(options, model_source(model, card, selected))
    inference = replace(options.inference, model_sha256=sha256, random_weights=random_weights)
    return plan_array(data, replace(options, inference=inference))


def _bundled(info: RasterInfo | None, options: RunOptions) -> RunOptions:
    """``options`` naming the bundled model the data fits, chosen as a run chooses for a file.

    A DataArray says what a file says (CRS, pixel size, band names), so the run's choice
    applies, with its refusals when no bundled model fits. A bare array says nothing of the
    kind: a land-cover and a nuclei model would both "fit" a 1-band array, so it is refused.
    """
    if info is None:
        raise InputError(
            "segment() needs model= for a NumPy or Dask array (it has no CRS, pixel size or "
            "band names to choose a bundled model by): give a model file, a bundled model "
            "name (segpipe models lists them) or a torch.nn.Module, or pass an xarray "
            "DataArray"
        )
    from segpipe.models.bundled import bundled_models
    from segpipe.pipeline.choose import choose_bundled, with_choice

    choice = choose_bundled(info, options.source, bundled_models())
    warnings.warn(choice.reason, stacklevel=4)
    options = replace(options, source=with_choice(options.source, choice))
    return with_model(options, str(choice.model.path))


def _band_first(data: Any) -> Any:
    """A NumPy or Dask array as (bands, H, W)."""
    if not hasattr(data, "ndim") or not hasattr(data, "dtype"):
        raise InputError(
            f"segment() takes a NumPy array, a Dask array or an xarray DataArray, not "
            f"{type(data).__name__}"
        )
    if data.ndim == 2:
        return data[None]
    if data.ndim != 3:
        raise InputError(f"segment() takes (bands, H, W) or (H, W) arrays; got {data.shape}")
    return data


def _labels(array: Any, plan: ArrayPlan) -> Any:
    """Eager labels for NumPy, lazy ones for Dask."""
    if _is_dask(array):
        from .lazy import segment_dask

        return segment_dask(array, plan)
    import numpy as np

    from segpipe.eager import segment_numpy

    return segment_numpy(np.asarray(array), plan)


def _is_dask(array: Any) -> bool:
    return type(array).__module__.startswith("dask.") and hasattr(array, "dask")
