"""Joining an existing Dask scheduler safely: TLS, and a warning for plain TCP off this machine.

A Dask scheduler runs whatever its clients submit on its workers, so anyone who can reach a
plain ``tcp://`` scheduler can run code there. ``--scheduler tls://host:port`` connects with
mutual TLS instead: ``--tls-ca-file`` (the CA that signed the scheduler's and the workers'
certificates), ``--tls-cert`` and ``--tls-key`` (this client's certificate and key, signed by
that CA; the key may be in the certificate file), Dask's own names for the same settings. Any
of them not given comes from Dask's configuration (``distributed.comm.tls.ca-file``,
``distributed.comm.tls.client.cert``, ``distributed.comm.tls.client.key``), which
:class:`distributed.security.Security` reads itself. Connecting to a plain ``tcp://`` scheduler
on an address other than loopback prints one ``warning:`` line first.

Imports nothing heavy: Dask is imported when the :class:`~distributed.security.Security` is
built.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from segpipe.models.foundation import InputError

if TYPE_CHECKING:
    from distributed.security import Security

__all__ = ["TlsFiles", "is_exposed", "is_tls", "warn_if_exposed"]


@dataclass(frozen=True)
class _Setting:
    """One TLS file of the client: its field here, in Security, on the command line, in Dask."""

    field: str
    attr: str
    option: str
    config: str


SETTINGS = (
    _Setting("ca_file", "tls_ca_file", "--tls-ca-file", "distributed.comm.tls.ca-file"),
    _Setting("cert", "tls_client_cert", "--tls-cert", "distributed.comm.tls.client.cert"),
    _Setting("key", "tls_client_key", "--tls-key", "distributed.comm.tls.client.key"),
)
#: Dask's address schemes that carry no encryption.
PLAIN_SCHEMES = ("tcp", "ws")


def is_tls(address: str | None) -> bool:
    """Whether a scheduler address asks for TLS (``tls://``)."""
    return bool(address) and str(address).lower().startswith("tls://")


@dataclass(frozen=True)
class TlsFiles:
    """The client's TLS files given on the command line (paths made absolute, checked readable).

    ``None`` fields come from Dask's configuration when the :class:`Security` is built.
    """

    ca_file: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        for s in SETTINGS:
            path = getattr(self, s.field)
            if path is not None:
                object.__setattr__(self, s.field, _readable(s.option, path))

    @property
    def given(self) -> list[str]:
        """The options given, by their command-line names."""
        return [s.option for s in SETTINGS if getattr(self, s.field) is not None]

    def security(self, scheduler: str) -> Security:
        """Dask's :class:`Security` for a client of ``scheduler``, encryption required.

        Settings not given here come from Dask's configuration. Raises :class:`InputError`
        when the CA or the client certificate is set nowhere, or when the files do not load as
        a PEM CA, certificate and key.
        """
        from distributed.security import Security

        given = {s.attr: getattr(self, s.field) for s in SETTINGS
                 if getattr(self, s.field) is not None}
        security = Security(require_encryption=True, **given)
        missing = [s for s in SETTINGS[:2] if not getattr(security, s.attr)]
        if missing:
            raise InputError(
                f"--scheduler {scheduler} needs {' and '.join(s.option for s in missing)} (and "
                "--tls-key unless the key is in the certificate file), or Dask's "
                + " and ".join(s.config for s in missing)
            )
        for s in SETTINGS:  # files named by Dask's configuration (PEM text in it is kept)
            value = getattr(security, s.attr)
            if s.attr not in given and value and "\n" not in value:
                _readable(s.config, value)
        try:
            security.get_connection_args("client")  # loads the CA, certificate and key
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise InputError(
                f"{_described(security, given)}: cannot be loaded as a PEM CA, certificate "
                f"and matching key ({_reason(exc)})"
            ) from None
        return security


def _readable(option: str, path: str) -> str:
    """``path`` made absolute, after checking it is a file this process can read."""
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is not a file" if p.exists() else "not found"
        raise InputError(f"{option} {path}: {what}; give the PEM file's path")
    try:
        with open(p, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise InputError(
            f"{option} {path}: cannot be read ({exc.strerror}); check its permissions"
        ) from None
    return str(p.absolute())


def _described(security: Security, given: dict[str, str]) -> str:
    """The TLS settings in use, by option (or configuration key) and path."""
    out = []
    for s in SETTINGS:
        value = getattr(security, s.attr)
        if value:
            name = s.option if s.attr in given else s.config
            out.append(f"{name} {'(PEM text)' if chr(10) in value else value}")
    return ", ".join(out)


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {reason}"


def is_exposed(address: str) -> bool:
    """Whether ``address`` is a plain (unencrypted) scheduler address on a non-loopback host.

    A host name counts as loopback only when every address it resolves to is loopback.
    """
    text = address if "://" in address else f"tcp://{address}"
    parts = urlsplit(text)
    if parts.scheme.lower() not in PLAIN_SCHEMES:
        return False
    host = parts.hostname or ""
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        pass
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return True
    return not found or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


def warn_if_exposed(address: str) -> None:
    """Print one ``warning:`` line on stderr when ``address`` is plain TCP off this machine."""
    if is_exposed(address):
        print(
            f"warning: --scheduler {address} is unencrypted and not on this machine: anyone "
            "who can reach it can run code on its workers (and read what they read); use "
            "tls:// with --tls-ca-file, --tls-cert and --tls-key, or keep the scheduler on a "
            "network only you reach",
            file=sys.stderr, flush=True,
        )
