"""segpipe as a Python library: the same engine as ``segpipe run``, on arrays and files.

- :func:`segment` labels a NumPy array, a Dask array (lazily: a graph whose chunks are the
  run's blocks) or an xarray DataArray, with a model file, a bundled model or a
  ``torch.nn.Module``; the keywords are the run's options.
- :func:`open` reads an input lazily as a DataArray, :func:`open_levels` its pyramid levels
  as a dict of DataArrays; :func:`write` writes labels as a run does (COG, OME-TIFF,
  OME-Zarr), ``compute=False`` giving the delayed work.
- :func:`run` is ``segpipe run`` on one input (:class:`RunOptions` by flat names), returning
  its :class:`RunSummary` (a :class:`SkippedRun` when the output was up to date).

The names load on first use (PEP 562): ``import segpipe`` imports neither torch nor Prefect,
so the command line (``segpipe.flows.cli``) still starts quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segpipe.files import open, open_levels, run, write
    from segpipe.pipeline.options import RunOptions
    from segpipe.pipeline.summary import RunSummary, SkippedRun
    from segpipe.segmentation import segment

_EXPORTS = {
    "segment": "segpipe.segmentation",
    "open": "segpipe.files",
    "open_levels": "segpipe.files",
    "write": "segpipe.files",
    "run": "segpipe.files",
    "RunOptions": "segpipe.pipeline.options",
    "RunSummary": "segpipe.pipeline.summary",
    "SkippedRun": "segpipe.pipeline.summary",
}

__all__ = ["RunOptions", "RunSummary", "SkippedRun", "open", "open_levels", "run", "segment",
           "write"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'segpipe' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
