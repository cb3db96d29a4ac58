"""GDAL on object storage: the AWS settings botocore resolves, handed to GDAL as one session.

GDAL reads ``s3://`` GeoTIFFs and COGs through ``/vsis3/`` with HTTP range requests, so a
window costs only the tiles it touches. Which endpoint and credentials it uses must be the ones
fsspec/s3fs (botocore) uses for everything else, whatever way the user set them: the
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) variable, ``endpoint_url`` in a profile of
``~/.aws/config``, ``AWS_PROFILE``, the credential chain (variables, files, SSO,
``credential_process``, instance roles). GDAL 3.10 knows only its own ``AWS_S3_ENDPOINT``,
``AWS_HTTPS`` and ``AWS_VIRTUAL_HOSTING`` options, not ``AWS_ENDPOINT_URL``; so
:func:`gdal_env` asks botocore once (no network) and maps its answer onto those options in a
rasterio session: one setting reaches both.

The options live in a :class:`rasterio.Env` for the life of a reader, never in ``os.environ``,
and nothing here logs them. The same environment carries segpipe's retry policy for GDAL's HTTP
requests (:mod:`segpipe.models.retrypolicy`), for every URL GDAL reads.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit

import rasterio
from rasterio.session import Session

__all__ = ["AwsConfigSession", "gdal_env", "gdal_options"]

#: URL schemes GDAL reads through /vsis3/ with the AWS settings
_S3_SCHEMES = ("s3",)


def _botocore_session() -> Any:
    import botocore.session

    return botocore.session.get_session()  # reads the variables and files as they are now


def gdal_options() -> dict[str, str]:
    """GDAL's AWS options for what botocore resolves now: endpoint, region, credentials."""
    session = _botocore_session()
    client = session.create_client("s3")  # resolves the endpoint; sends nothing
    options: dict[str, str] = {}
    endpoint = urlsplit(client.meta.endpoint_url)
    if endpoint.hostname and not endpoint.hostname.endswith("amazonaws.com"):
        options["AWS_S3_ENDPOINT"] = endpoint.netloc + endpoint.path.rstrip("/")
        options["AWS_HTTPS"] = "YES" if endpoint.scheme == "https" else "NO"
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"  # S3-compatible servers: path-style URLs
    region = session.get_config_variable("region")  # None: GDAL reads AWS_REGION itself
    if region:
        options["AWS_REGION"] = region
    credentials = session.get_credentials()
    frozen = credentials.get_frozen_credentials() if credentials is not None else None
    if frozen is None or not frozen.access_key:
        options["AWS_NO_SIGN_REQUEST"] = "YES"
        return options
    options["AWS_ACCESS_KEY_ID"] = frozen.access_key
    options["AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
    if frozen.token:
        options["AWS_SESSION_TOKEN"] = frozen.token
    return options


class AwsConfigSession(Session):
    """A rasterio session whose GDAL options are :func:`gdal_options` (botocore's settings)."""

    def __init__(self, options: dict[str, str]) -> None:
        self._options = dict(options)

    @classmethod
    def hascreds(cls, config: dict[str, Any]) -> bool:
        """Whether a GDAL configuration already has AWS credentials (or asks for none)."""
        return "AWS_ACCESS_KEY_ID" in config or "AWS_NO_SIGN_REQUEST" in config

    @property
    def credentials(self) -> dict[str, str]:
        """The options, lower-cased as rasterio's sessions report them."""
        return {k.lower(): v for k, v in self._options.items()}

    def get_credential_options(self) -> dict[str, str]:
        """The GDAL configuration options of this session."""
        return dict(self._options)

    def __repr__(self) -> str:
        """No option values: they hold credentials."""
        return "AwsConfigSession(<botocore settings>)"


def gdal_env(path: str) -> contextlib.AbstractContextManager[Any]:
    """The rasterio environment to open ``path`` in: none for a local path.

    A URL gets segpipe's retry policy (:meth:`~segpipe.models.retrypolicy.RetryPolicy.
    gdal_options`: retries, back-off, timeouts); ``s3://`` also the AWS settings.
    """
    scheme = urlsplit(path).scheme.lower()
    if not scheme or "://" not in path:
        return contextlib.nullcontext()
    from segpipe.models.retrypolicy import retry_policy

    retries = retry_policy().gdal_options()
    if scheme not in _S3_SCHEMES:
        return rasterio.Env(**retries)
    return rasterio.Env(session=AwsConfigSession(gdal_options()), **retries)
