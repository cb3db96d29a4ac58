"""fsspec filesystems for URLs, built with segpipe's retry policy; retries logged at INFO.

:func:`url_to_fs` is the one place a filesystem is made for a URL (the run's small objects, the
Zarr work directory, uploads, model downloads): an ``s3://`` URL gets a
:class:`RetryingS3FileSystem`, s3fs configured by :func:`~.retrypolicy.retry_policy` (botocore's
retries and timeouts, s3fs's own tries); other schemes go to fsspec as they are.

Each retry botocore is about to make is logged on ``segpipe.storage`` at INFO (shown by
``--verbose``) as ``retrying s3://bucket/key after SlowDown (HTTP 503) (attempt 1 of 5)``. A
request the store refuses for good (403 AccessDenied) raises :class:`PermissionError` naming
the object's URL, which the server's message does not.
"""

from __future__ import annotations

import contextvars
import logging
from typing import TYPE_CHECKING, Any

import s3fs

from .location import scheme
from .retrypolicy import RetryPolicy, retry_policy

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["RetryingS3FileSystem", "log_s3fs_retries", "url_to_fs"]

log = logging.getLogger("segpipe.storage")

#: the S3 request this task made last: (what identifies it, its URL, how many times it was made)
_REQUEST: contextvars.ContextVar[tuple[str, str, int]] = contextvars.ContextVar(
    "segpipe_s3_request", default=("", "", 0)
)

_S3_SCHEMES = ("s3", "s3a")


def _remember(method: str, params: dict[str, Any]) -> str:
    """Note the request this task makes (a repeat of the last one counts as its next try)."""
    url = _url(params)
    ident = repr((method, sorted((k, v) for k, v in params.items() if k != "Body")))
    last, _, tries = _REQUEST.get()
    _REQUEST.set((ident, url, tries + 1 if last == ident else 1))
    return url


def _url(params: dict[str, Any]) -> str:
    """``s3://bucket/key`` of an S3 call's parameters (the prefix for a listing)."""
    key = params.get("Key", params.get("Prefix", ""))
    return f"s3://{params.get('Bucket', '')}/{key}".rstrip("/")


def _cause(response: Any, caught: BaseException | None) -> str:
    """What went wrong: ``SlowDown (HTTP 503)``, or the exception's type."""
    if caught is not None:
        return type(caught).__name__
    http, parsed = response
    code = str((parsed or {}).get("Error", {}).get("Code") or "")
    status = f"HTTP {http.status_code}"
    return status if code in ("", str(http.status_code)) else f"{code} ({status})"


class RetryingS3FileSystem(s3fs.S3FileSystem):
    """s3fs with a :class:`~.retrypolicy.RetryPolicy`: retries bounded, logged, denials named.

    ``policy`` gives botocore its ``Config`` (retries, timeouts) and s3fs its own number of
    tries (``retries``, for a response body cut off).
    """

    def __init__(self, *args: Any, policy: RetryPolicy | None = None, **kwargs: Any) -> None:
        self.policy = policy or RetryPolicy()
        config = {**self.policy.botocore_config(), **kwargs.pop("config_kwargs", {})}
        super().__init__(*args, config_kwargs=config, **kwargs)
        self.retries = self.policy.attempts

    async def set_session(self, refresh: bool = False, kwargs: dict[str, Any] | None = None) -> Any:
        """The botocore client, with the retry logger hooked in front of its retry handler."""
        client = await super().set_session(refresh=refresh, kwargs=kwargs or {})
        client.meta.events.register_first(
            "needs-retry.s3", self._log_retry, unique_id="segpipe-log-retry"
        )
        return client

    def _log_retry(self, **event: Any) -> None:
        """Log the retry botocore is about to make (its own rules: it decides, this only says)."""
        from botocore.retries.standard import RetryEventAdapter, StandardRetryConditions

        attempts = self.policy.attempts
        context = RetryEventAdapter().create_retry_context(**event)
        if not StandardRetryConditions(max_attempts=attempts).is_retryable(context):
            return
        url = _REQUEST.get()[1] or event["request_dict"].get("url", "").split("?", 1)[0]
        log.info(
            "retrying %s after %s (attempt %d of %d)",
            url, _cause(event.get("response"), event.get("caught_exception")),
            event["attempts"], attempts,
        )

    async def _call_s3(self, method: str, *akwarglist: Any, **kwargs: Any) -> Any:
        url = _remember(method, kwargs)
        try:
            return await super()._call_s3(method, *akwarglist, **kwargs)
        except PermissionError as exc:
            raise PermissionError(
                f"{url}: access denied by the object store ({_code(exc)} to {method})"
            ) from exc.__cause__ or exc


# one instance cache with s3fs's: clearing s3fs's (as one does after changing the AWS settings
# of a process, e.g. the endpoint) clears these too
RetryingS3FileSystem._cache = s3fs.S3FileSystem._cache


def _code(exc: BaseException) -> str:
    """``AccessDenied`` (the store's code), or ``HTTP 403`` for a HEAD, whose answer has none."""
    response = getattr(exc.__cause__, "response", None)
    code = str(response.get("Error", {}).get("Code") or "") if isinstance(response, dict) else ""
    return f"HTTP {code}" if code.isdigit() else code or "AccessDenied"


def url_to_fs(
    url: str, *, asynchronous: bool = False, **options: Any
) -> tuple[AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path inside it (``s3://``: with the retry policy)."""
    kind = scheme(url)
    if kind not in _S3_SCHEMES:
        import fsspec.core

        return fsspec.core.url_to_fs(url, **options)
    cls = RetryingS3FileSystem
    options = {**cls._get_kwargs_from_urls(url), **options}
    fs = cls(policy=retry_policy(), asynchronous=asynchronous, **options)
    return fs, cls._strip_protocol(url)


class _S3fsRetryRecords(logging.Filter):
    """s3fs's own retries (a body cut off, a timed-out read) as segpipe's INFO records.

    s3fs logs them at DEBUG as ``Retryable error: …`` without the URL; every other s3fs record
    is dropped. The URL and the try are those of the request this task made last.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Retryable error"):
            return False
        _, url, tries = _REQUEST.get()
        error = record.args[0] if isinstance(record.args, tuple) and record.args else "an error"
        attempts = retry_policy().attempts
        record.name, record.levelno, record.levelname = "segpipe.storage", logging.INFO, "INFO"
        record.msg = ("retrying %s after %s (attempt %d of %d)" if tries < attempts
                      else "giving up on %s after %s (attempt %d of %d)")
        record.args = (url or "an S3 object", type(error).__name__, tries, attempts)
        return True


def log_s3fs_retries() -> None:
    """Show s3fs's own retries on the console like botocore's (for ``--verbose``)."""
    logger = logging.getLogger("s3fs")
    if not any(isinstance(f, _S3fsRetryRecords) for f in logger.filters):
        logger.addFilter(_S3fsRetryRecords())
    logger.setLevel(logging.DEBUG)
