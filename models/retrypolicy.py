"""How segpipe retries object-store requests: one frozen policy, handed to every client.

Three clients talk to a bucket: botocore (under s3fs: the manifest, markers, the Zarr work
directory, uploads, model downloads, tifffile's range reads), s3fs's own loop around botocore
(it re-issues a request whose response body was cut off), and GDAL's ``/vsis3/`` (COG and
GeoTIFF range reads). :class:`RetryPolicy` says once how many times a request is tried, how
the tries back off and how long a silent server is waited for, and turns that into each
client's settings:

* botocore: ``Config(retries={"total_max_attempts": attempts, "mode": mode}, connect_timeout,
  read_timeout)`` (:meth:`RetryPolicy.botocore_config`, given to s3fs as ``config_kwargs``).
  It retries throttling (503 SlowDown, 429…), 500/502/503/504, connection errors and read
  timeouts, with full-jitter exponential back-off (a random wait up to 1, 2, 4… s, at most
  20 s) and, in ``standard`` mode, a retry quota that stops retrying when most requests fail;
  ``adaptive`` adds client-side rate limiting after throttling.
* s3fs: ``retries = attempts`` tries of a request whose body was cut off (0.1 s × 1.7ⁱ apart).
* GDAL: ``GDAL_HTTP_MAX_RETRY = attempts - 1`` retries of 429/500/502/503/504 and reset or
  timed-out connections, the first after ``GDAL_HTTP_RETRY_DELAY`` (then about twice as long
  each time), ``GDAL_HTTP_CONNECTTIMEOUT`` and ``GDAL_HTTP_TIMEOUT`` (:meth:`gdal_options`,
  set in the :class:`rasterio.Env` a reader opens, never in ``os.environ``).

What a request sees at most: ``attempts`` tries by botocore (or GDAL); a body cut off, or a
throttled request botocore gave up on, is tried again by s3fs's loop, so at most
``attempts²`` HTTP requests for one read in the worst case. A permanent error (403 AccessDenied,
404) is never retried.

:func:`retry_policy` resolves the policy for this process: segpipe's defaults, with the standard
AWS settings ``AWS_MAX_ATTEMPTS`` and ``AWS_RETRY_MODE`` (or ``max_attempts`` and
``retry_mode`` in the profile of ``~/.aws/config``) taking precedence, so one setting reaches
botocore, s3fs and GDAL alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["RetryMode", "RetryPolicy", "retry_policy"]


class RetryMode(StrEnum):
    """botocore's retry modes segpipe uses (``legacy``, botocore's old default, is not one)."""

    STANDARD = "standard"
    ADAPTIVE = "adaptive"


@dataclass(frozen=True)
class RetryPolicy:
    """Tries, back-off and timeouts of every object-store request.

    ``attempts``: tries of one request, the first included (1: no retry). ``connect_timeout``:
    seconds to open a connection. ``read_timeout``: seconds a response may stay silent before
    the request is abandoned and retried (botocore, s3fs); a 10 s stall is waited out.
    ``request_timeout``: GDAL has only a whole-request timeout, so a range read is abandoned
    (and retried) after this many seconds. ``first_delay``: GDAL's wait before its first retry.
    """

    attempts: int = 5
    mode: RetryMode = RetryMode.STANDARD
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    request_timeout: float = 60.0
    first_delay: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts={self.attempts}: a request is tried at least once")
        if min(self.connect_timeout, self.read_timeout, self.request_timeout) <= 0:
            raise ValueError("timeouts must be positive")

    def botocore_config(self) -> dict[str, Any]:
        """``botocore.config.Config`` arguments (s3fs's ``config_kwargs``)."""
        return {
            # total tries, the first included (botocore's ``max_attempts`` counts retries only)
            "retries": {"total_max_attempts": self.attempts, "mode": str(self.mode)},
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
        }

    def gdal_options(self) -> dict[str, str]:
        """GDAL's HTTP retry and timeout options (for a :class:`rasterio.Env`)."""
        return {
            "GDAL_HTTP_MAX_RETRY": str(self.attempts - 1),
            "GDAL_HTTP_RETRY_DELAY": f"{self.first_delay:g}",
            "GDAL_HTTP_CONNECTTIMEOUT": f"{self.connect_timeout:g}",
            "GDAL_HTTP_TIMEOUT": f"{self.request_timeout:g}",
        }


def retry_policy() -> RetryPolicy:
    """The policy for this process: the defaults, overridden by the AWS retry settings."""
    import botocore.session

    session = botocore.session.get_session()  # the variables and files as they are now
    attempts = session.get_config_variable("max_attempts")
    mode = session.get_config_variable("retry_mode")
    return RetryPolicy(
        attempts=int(attempts) if attempts else RetryPolicy.attempts,
        mode=RetryMode.ADAPTIVE if mode == RetryMode.ADAPTIVE else RetryMode.STANDARD,
    )
