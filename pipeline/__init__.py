"""segpipe's library: readers and writers, tiling, normalization, inference, stitching, stats.

Works on paths, windows and arrays; knows nothing of Prefect.
"""

from segpipe.models.foundation import __version__

__all__ = ["__version__"]
