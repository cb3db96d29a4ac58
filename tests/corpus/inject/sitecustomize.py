"""Injected from outside segpipe: ``shutil.disk_usage`` reports ``CORPUS_DISK_FREE_BYTES`` free.

Used by the corpus's small-disk case only where a size-limited filesystem cannot be mounted.
"""

import os
import shutil

_FREE = os.environ.get("CORPUS_DISK_FREE_BYTES")

if _FREE:
    _real = shutil.disk_usage

    def _disk_usage(path):
        usage = _real(path)
        return type(usage)(usage.total, usage.total - int(_FREE), int(_FREE))

    shutil.disk_usage = _disk_usage
