"""Whether a run can read and write the URLs it names, checked before any block is scheduled.

For every URL of a run (input, model, output, work directory) one or two cheap requests are made
up front, so that a missing bucket, refused credentials or a denied write stop the run at once
with one line naming the URL and the cause (exit 2), instead of failing in the middle:

* reading (input, model): a one-key listing under the URL (``ListObjectsV2``), which object
  stores answer with an error code that tells these causes apart;
* writing (output, work directory): a small probe object is written beside the target and
  deleted again.

The message carries the error code (``NoSuchBucket``, ``InvalidAccessKeyId``, ``AccessDenied``…),
never the server's text or any credential.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from segpipe.models.foundation import InputError
from segpipe.pipeline import storage

if TYPE_CHECKING:
    from segpipe.pipeline.options import RunOptions

__all__ = ["check_readable", "check_run_urls", "check_writable"]

_CREDENTIAL_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidSecurity",
})


def _code(exc: BaseException) -> str:
    """The object store's error code behind an fsspec error (``""`` when there is none)."""
    for err in (exc, exc.__cause__, exc.__context__):
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return ""


def _failure(option: str, url: str, exc: BaseException, doing: str) -> InputError:
    """One line naming the URL and the cause of ``exc`` (the code only: no server text)."""
    code = _code(exc)
    bucket = urlsplit(url).netloc
    if code == "NoSuchBucket":
        cause = f"bucket {bucket} does not exist (NoSuchBucket); create it or fix the URL"
    elif code in _CREDENTIAL_CODES:
        cause = (
            f"the object store refused the credentials ({code}); check AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials"
        )
    elif code in ("AccessDenied", "AllAccessDisabled", "403") or isinstance(exc, PermissionError):
        cause = (
            f"{doing} is denied ({code or 'AccessDenied'}); use credentials allowed to do so or "
            "change the bucket policy"
        )
    elif isinstance(exc, FileNotFoundError):
        cause = f"bucket {bucket} does not exist; create it or fix the URL"
    else:
        cause = (
            f"{doing} failed ({code or type(exc).__name__}); check the URL, AWS_ENDPOINT_URL "
            "and the network"
        )
    return InputError(f"{option} {url}: {cause}")


def _s3_list(url: str) -> int:
    """How many objects (0 or 1) are at or under ``url`` (an ``s3://`` URL)."""
    fs, inner = storage.filesystem(url)
    bucket, _, key = inner.partition("/")
    reply: dict[str, Any] = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1)
    return int(reply.get("KeyCount", 0))


def check_readable(url: str, option: str) -> None:
    """Refuse (exit 2) a URL that cannot be read: no bucket, refused credentials, no object."""
    if not storage.is_url(url):
        return
    storage.check_url(url, option)
    try:
        found = _s3_list(url) > 0 if url.startswith("s3://") else storage.exists(url)
    except Exception as exc:  # fsspec backends raise OSError subclasses and their own types
        raise _failure(option, url, exc, "reading") from None
    if not found:
        raise InputError(f"{option} {url}: no such object; check the URL")


def check_writable(url: str, option: str) -> None:
    """Refuse (exit 2) a URL that cannot be written: write and delete a probe object beside it."""
    if not storage.is_url(url):
        return
    storage.check_url(url, option)
    probe = storage.with_name(url.rstrip("/"), f".segpipe-write-check-{uuid.uuid4().hex}")
    try:
        storage.write_text(probe, "segpipe write check\n")
    except Exception as exc:
        raise _failure(option, url, exc, "writing") from None
    try:
        storage.remove(probe)
    except Exception as exc:
        raise _failure(option, url, exc, "deleting") from None


def check_run_urls(options: RunOptions, workdir: str) -> None:
    """Every URL of a run: the input and the model readable, output and work directory writable."""
    check_readable(options.input, "--input")
    model = options.inference.model
    if model is not None:
        check_readable(model, "--model")
    check_writable(options.output, "--output")
    if storage.parent(workdir) != storage.parent(options.output):
        check_writable(storage.join(workdir, "manifest.json"), "--workdir")
    vectors = options.export.vectors
    if vectors and storage.parent(vectors) != storage.parent(options.output):
        check_writable(vectors, "--vectors")
