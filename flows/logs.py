"""Console logging for the command line: segpipe's warnings, Prefect's and Dask's only on request.

Prefect still sends its run logs to its API (the UI shows them); only the console is filtered.
"""

from __future__ import annotations

import logging

__all__ = ["configure_logging"]


class _DropLibraryRecords(logging.Filter):
    """Drops Prefect's and distributed's records from the console (they stay in the API)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(("prefect", "distributed"))


def configure_logging(verbose: bool) -> None:
    """Console logging for the CLI: quiet Prefect and Dask unless ``verbose``.

    Prefect still sends its run logs to the API (the UI shows them); only the console is
    filtered. ``verbose`` shows them, and segpipe's own INFO messages, among them every retry
    of an object-store request (botocore's and s3fs's, :mod:`segpipe.models.objectstore`).
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    if verbose:
        from segpipe.models.objectstore import log_s3fs_retries

        logging.getLogger("segpipe").setLevel(logging.INFO)
        log_s3fs_retries()
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.setLevel(logging.CRITICAL + 1)
        elif not any(isinstance(f, _DropLibraryRecords) for f in handler.filters):
            handler.addFilter(_DropLibraryRecords())
