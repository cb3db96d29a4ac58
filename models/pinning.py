"""A model pinned by its sha256 (``--model-sha256``): the bytes are hashed before they are read.

``segpipe run --model unet.pt2 --model-sha256 HEX`` refuses the file unless its sha256 is HEX,
before torch or onnxruntime sees a byte of it: a swapped or tampered file is never unpickled,
evaluated or loaded. A URL is downloaded into the model cache (:mod:`.remote`, hashed while it
streams) and checked the same way. The hash is :func:`~.foundation.file_sha256`, the one the
run records and its workers verify.
"""

from __future__ import annotations

import re
from pathlib import Path

from .foundation import InputError, ModelError, file_sha256
from .remote import fetch_model, is_url

__all__ = ["check_pinned", "parse_sha256"]

_HEX = re.compile(r"^[0-9a-f]{64}$")


def parse_sha256(text: str) -> str:
    """``--model-sha256``'s value: 64 hex digits, lowercased (``sha256:`` prefix allowed)."""
    value = text.strip().lower().removeprefix("sha256:")
    if not _HEX.match(value):
        raise InputError(
            f"--model-sha256 {text!r} is not a sha256: give its 64 hex digits, as printed by "
            "`sha256sum MODEL`"
        )
    return value


def check_pinned(source: str, expected: str) -> Path:
    """The local file of model ``source`` (a path or URL), whose sha256 must be ``expected``.

    Raises :class:`ModelError` naming the file and both hashes when it differs (nothing of the
    file is read but its bytes, to hash them), or when the file is missing.
    """
    if is_url(source):
        path = fetch_model(source)  # streamed into the cache and hashed, never parsed
    else:
        path = Path(source)
        if not path.is_file():
            raise ModelError(f"--model {source}: file not found; check the path")
    actual = file_sha256(path)
    if actual != expected:
        raise ModelError(
            f"--model {source} has sha256 {actual}, but --model-sha256 pins {expected}: it is "
            "not the pinned file, and nothing in it was loaded; check the file or the hash"
        )
    return path
