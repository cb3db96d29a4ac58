"""segpipe's library: readers and writers, tiling, normalization, inference, stitching, stats.

Works on paths, windows and arrays; knows nothing of Prefect.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("segpipe")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
