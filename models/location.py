"""Where a path points: a local file or folder, or an object behind a URL. Decided here only.

segpipe takes inputs, outputs, work directories and models as local paths or as URLs
(``s3://bucket/key``, ``https://…``, any fsspec protocol). Every place that treats the two
differently asks this module, so that the rule is written once: a URL is ``scheme://…``;
anything else is a local path. ``models`` imports nothing else of segpipe, so the model layer
and the pipeline both use it.
"""

from __future__ import annotations

import os

__all__ = ["is_url", "scheme"]


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL (``scheme://…``) rather than a local path."""
    return "://" in os.fspath(path)


def scheme(path: str | os.PathLike[str]) -> str:
    """The URL's scheme in lower case (``s3``, ``https``); ``""`` for a local path."""
    text = os.fspath(path)
    return text.split("://", 1)[0].lower() if is_url(text) else ""

