"""One exception hierarchy for segpipe.

Every error a user can cause derives from :class:`SegpipeError`; the CLI prints its message on
one line (``error: ...``) and exits 2. Messages name the parameter, the value, the constraint and
the fix. Subclasses also derive from the matching built-in so callers may catch those.
"""

from __future__ import annotations


class SegpipeError(Exception):
    """Base class of every error segpipe raises on purpose."""


class InputError(SegpipeError, ValueError):
    """A bad argument or option value (tile size, bands, normalization, ...)."""


class RasterError(SegpipeError, OSError):
    """An input raster that is missing, unreadable or not a raster."""


class ModelError(SegpipeError, ValueError):
    """A model file, name or card that cannot be used."""


class OutputExistsError(SegpipeError, FileExistsError):
    """An output that already exists and ``--overwrite`` was not given."""


class ResumeError(SegpipeError, ValueError):
    """A work directory whose manifest does not match the run being resumed."""
