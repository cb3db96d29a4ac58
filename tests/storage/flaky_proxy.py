"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the S3 server (a test helper).

Clients pointed at :attr:`FlakyProxy.endpoint` (``AWS_ENDPOINT_URL``) reach the server through
it. Each request is parsed just enough to find where it and its response end (Content-Length,
chunked, no body for HEAD/1xx/204/304, ``Expect: 100-continue``) and is then either forwarded
byte for byte (range requests, multipart uploads and all) or met with a fault:

* ``503`` SlowDown or ``500`` InternalError with S3's XML error body, the request never reaching
  the server (as a throttling front end does);
* ``reset``: the server's response with its headers and half of its body, then the connection
  reset (RST): the request was served, the client heard only part of the answer;
* ``stall``: the response held back ``stall_seconds`` before it is sent (at most ``stalls``
  times in all);
* ``403`` AccessDenied for every request past a count set by :meth:`FlakyProxy.deny` (until
  :meth:`FlakyProxy.allow`): a permission taken away mid-run.

The draw is deterministic given the seed: it hashes the seed with the request (method, target,
``Range`` header) and how many times this proxy has seen that request, so a retry of a failed
request draws again and the same request stream meets the same faults whatever the threads'
interleaving. Stdlib only.
"""

from __future__ import annotations

import contextlib
import hashlib
import select
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass

__all__ = ["Faults", "FlakyProxy"]

_ERRORS = {
    503: ("Slow Down", "SlowDown", "Please reduce your request rate."),
    500: ("Internal Server Error", "InternalError",
          "We encountered an internal error. Please try again."),
    403: ("Forbidden", "AccessDenied", "Access Denied"),
}


@dataclass(frozen=True)
class Faults:
    """What share of requests meets which fault (the rest are forwarded untouched)."""

    seed: int = 0
    errors: float = 0.05  # answered 503 SlowDown or 500 InternalError (half each)
    resets: float = 0.03  # response cut mid-body, connection reset
    stall_rate: float = 0.02  # chance that a request is the stalled one (while stalls remain)
    stalls: int = 1
    stall_seconds: float = 10.0


#: a proxy that forwards everything
NO_FAULTS = Faults(errors=0, resets=0, stalls=0)


class _Stream:
    """A socket with a read buffer: lines, exact byte counts, everything until EOF."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 16)
        self.buf += data
        return bool(data)

    def readable(self, timeout: float) -> bool:
        return bool(self.buf) or bool(select.select([self.sock], [], [], timeout)[0])

    def until(self, marker: bytes) -> bytes:
        """Bytes up to and including ``marker``; ``b""`` at a clean EOF before any byte."""
        while (end := self.buf.find(marker)) < 0:
            if not self._fill():
                if self.buf:
                    raise ConnectionError("connection closed mid-message")
                return b""
        end += len(marker)
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("connection closed mid-body")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def rest(self) -> bytes:
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def chunked(self) -> bytes:
        """A chunked body with its framing, as it came."""
        out = b""
        while True:
            line = self.until(b"\r\n")
            out += line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (trailer := self.until(b"\r\n")) != b"\r\n":
                    out += trailer
                return out + b"\r\n"
            out += self.exactly(size + 2)


@dataclass
class _Message:
    head: bytes
    first: list[bytes]  # request: method, target, version; response: version, status, reason
    headers: dict[str, str]

    @classmethod
    def parse(cls, head: bytes) -> _Message:
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        return cls(head, head.split(b"\r\n", 1)[0].split(b" ", 2), headers)

    def body(self, stream: _Stream, *, bodiless: bool = False) -> bytes:
        if bodiless:
            return b""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return stream.chunked()
        if "content-length" in self.headers:
            return stream.exactly(int(self.headers["content-length"]))
        if not self.first[0].startswith(b"HTTP/"):
            return b""  # a request without a length has no body
        return stream.rest()  # a response without a length ends with its connection

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


class FlakyProxy:
    """The proxy; ``counts`` says how many requests met each fault (``forwarded`` the others)."""

    def __init__(self, upstream: str, faults: Faults = NO_FAULTS) -> None:
        host, port = upstream.removeprefix("http://").rstrip("/").split(":")
        self.upstream = (host, int(port))
        self.faults = faults
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self.log: list[tuple[str, str, str]] = []  # (method, target, what happened)
        self._seen: Counter[tuple[bytes, ...]] = Counter()
        self._stalls_left = faults.stalls
        self._deny_from: int | None = None
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="flaky-proxy").start()

    # -- control

    def deny(self, after: int = 0) -> None:
        """Answer every request with 403 AccessDenied once ``after`` more were served."""
        with self._lock:
            self._deny_from = self.requests + after

    def allow(self) -> None:
        """Access is back: forward (and draw faults) again."""
        with self._lock:
            self._deny_from = None

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def __enter__(self) -> FlakyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- decisions

    def _draw(self, request: _Message) -> float:
        """A number in [0, 1) from the seed, the request and how often it was seen."""
        key = (request.first[0], request.first[1], request.headers.get("range", "").encode())
        with self._lock:
            self._seen[key] += 1
            nth = self._seen[key]
        digest = hashlib.blake2b(
            b"\0".join((str(self.faults.seed).encode(), *key, str(nth).encode())), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big") / 2**64

    def _decide(self, request: _Message) -> str:
        u = self._draw(request)
        f = self.faults
        with self._lock:
            self.requests += 1
            if self._deny_from is not None and self.requests > self._deny_from:
                return "403"
            if u < f.errors / 2:
                return "503"
            if u < f.errors:
                return "500"
            if u < f.errors + f.resets:
                return "reset"
            if u < f.errors + f.resets + f.stall_rate and self._stalls_left > 0:
                self._stalls_left -= 1
                return "stall"
        return "forward"

    def _record(self, request: _Message, what: str) -> None:
        with self._lock:
            self.counts[what] += 1
            self.log.append((request.first[0].decode(), request.first[1].decode(), what))

    # -- plumbing

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        stream = _Stream(client)
        try:
            while self._one(client, stream):
                pass
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _one(self, client: socket.socket, stream: _Stream) -> bool:
        """Serve one request of the connection; whether the connection stays open."""
        head = stream.until(b"\r\n\r\n")
        if not head:
            return False
        request = _Message.parse(head)
        what = self._decide(request)
        if what in ("503", "500", "403"):
            self._answer_error(client, stream, request, int(what))
            self._record(request, what)
            return False
        return self._forward(client, stream, request, what)

    def _answer_error(
        self, client: socket.socket, stream: _Stream, request: _Message, status: int
    ) -> None:
        reason, code, message = _ERRORS[status]
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>FLAKY{self.requests:08d}</RequestId></Error>"
        ).encode()
        bodiless = request.first[0] == b"HEAD"
        client.sendall(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {0 if bodiless else len(body)}\r\nConnection: close\r\n\r\n".encode()
            + (b"" if bodiless else body)
        )
        self._drain(stream, request)

    @staticmethod
    def _drain(stream: _Stream, request: _Message) -> None:
        """Read what the client still sends of its body (closing on unread data would RST it)."""
        left = int(request.headers.get("content-length", "0") or 0) - len(stream.buf)
        stream.buf = b""
        deadline = time.monotonic() + 5
        while left > 0 and time.monotonic() < deadline and stream.readable(1.0):
            data = stream.sock.recv(1 << 16)
            if not data:
                return
            left -= len(data)

    def _forward(
        self, client: socket.socket, stream: _Stream, request: _Message, what: str
    ) -> bool:
        with socket.create_connection(self.upstream) as up:
            server = _Stream(up)
            up.sendall(request.head)
            if request.headers.get("expect", "").lower() == "100-continue" and server.readable(1):
                interim = _Message.parse(server.until(b"\r\n\r\n"))
                if interim.first[1] != b"100":  # a final answer before the body: pass it on
                    client.sendall(interim.head + interim.body(server))
                    self._record(request, "forward")
                    return False
                client.sendall(interim.head)
            up.sendall(request.body(stream))
            response = _Message.parse(server.until(b"\r\n\r\n"))
            while response.first[1].startswith(b"1"):  # other interim responses
                client.sendall(response.head)
                response = _Message.parse(server.until(b"\r\n\r\n"))
            status = response.first[1]
            bodiless = request.first[0] == b"HEAD" or status in (b"204", b"304")
            body = response.body(server, bodiless=bodiless)
        if what == "reset" and len(body) >= 2:
            client.sendall(response.head + body[: len(body) // 2])
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._record(request, "reset")
            return False
        self._record(request, what if what == "stall" else "forward")
        if what == "stall":
            time.sleep(self.faults.stall_seconds)
        client.sendall(response.head + body)
        framed = bodiless or "content-length" in response.headers or (
            "chunked" in response.headers.get("transfer-encoding", "").lower()
        )
        return framed and not response.closes and not request.closes
