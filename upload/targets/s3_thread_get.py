"""Object GETs made by a worker thread with blocking sockets, so the bytes never pass the event loop.

Why: a download of many objects in one event loop is bound by that loop. With the bytes
read by aiohttp, every piece is parsed, handed on and joined in Python holding the GIL
(py-spy of the archive download: socket reads and aiohttp's parser 27 % of the run, the
request 19 %), and the sha256 and the writes wait for it. A thread that reads with
``recv_into`` into its own buffer, hashes and writes that buffer, lets go of the GIL for
all three, so on two cores two large files are read, hashed and written side by side. A
prototype of this read 1,000 x 100 KiB + 2 x 500 MiB from SeaweedFS in 2.37-2.45 s where
rclone took 2.65-2.68 s and the aiohttp path ~3.0 s (docs/benchmarks.md, "archive").

The request goes to the URL the short GET path (``s3_get``) learned from botocore for the
bucket, signed with SigV4 (``s3_sigv4``, checked against botocore's signer in the tests)
with the client's own credentials (frozen on the loop, fetched again after
``CREDENTIALS_AGE`` seconds, so refreshing credentials keep working), on a connection of
this thread's own (``_Wire``). What this path never does is decide what a failure means: anything but the
bytes asked for returns None before a byte is taken, and a failure while reading raises;
either way the caller fetches the rest through the client's ``read`` (short path, then the
whole ``get_object``), which retries and maps errors as every other call.

Off, so that ``read`` alone is used: when the short path is off (for the bucket or the
client), when requests are budgeted (a limiter counts every request on the loop), when a
proxy is configured for the endpoint, and when the client presents a certificate.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from botocore.httpsession import get_cert_path
from botocore.utils import percent_encode

from upload.targets.s3_get import ShortGet
from upload.targets.s3_sigv4 import get_headers

log = logging.getLogger(__name__)

__all__ = ["ThreadGet"]

CREDENTIALS_AGE = 60.0  # seconds a frozen copy is used; botocore refreshes well before expiry


@dataclass
class ThreadGet:
    short: ShortGet
    connect_timeout: float
    read_timeout: float
    _frozen: Any = None
    _frozen_at: float = 0.0
    _tls: ssl.SSLContext | None = None
    _local: threading.local = field(default_factory=threading.local)
    _checked: set[str] = field(default_factory=set)  # URL bases known to need no proxy
    _where: dict[str, _Where] = field(default_factory=dict)
    off: bool = False

    def __post_init__(self) -> None:
        http_session = self.short._http
        if self.short.disabled or self.short.limiter is not None or http_session is None:
            self.off = True
            return
        if getattr(http_session, "_cert_file", None):
            self.off = True
        self._proxies = getattr(http_session, "_proxy_config", None)
        self._verify = getattr(http_session, "_verify", True)

    async def ready(self, bucket: str) -> str | None:
        """On the loop, before a file: the bucket's URL base when a thread may GET from it."""
        if self.off or not self.short.usable(bucket):
            return None
        try:
            base = await self.short._base(bucket)
            if self._frozen is None or time.monotonic() - self._frozen_at > CREDENTIALS_AGE:
                self._frozen = await self.short._credentials.get_frozen_credentials()
                self._frozen_at = time.monotonic()
        except Exception as exc:  # noqa: BLE001  # the client's read follows, and says what it is
            log.debug("no threaded GET for bucket %s (%s)", bucket, exc)
            return None
        if base not in self._checked:  # once per bucket: botocore's proxy lookup is not cheap
            if self._proxies is not None and self._proxies.proxy_url_for(base):
                self.off = True
                return None
            self._checked.add(base)
        return base

    def open(self, base: str, key: str, start: int) -> _Body | None:
        """In a worker thread: the GET's body, unread (``readinto``, then ``close``); None
        for any other answer or a failure before it (see the module doc)."""
        where = self._where.get(base) or self._split(base)
        path = where.path + percent_encode(key, safe="/~")
        frozen = self._frozen
        headers = get_headers(
            access_key=frozen.access_key,
            secret_key=frozen.secret_key,
            token=frozen.token,
            region=self.short._region,
            host=where.host,
            path=path,
            headers={"range": f"bytes={start}-"} if start else {},
            now=datetime.now(UTC),
        )
        try:
            wire = self._wire(where)
            status, length = wire.get(path, where.host, headers)
        except (OSError, ValueError) as exc:
            self.drop()
            log.debug("threaded GET of %s%s failed before an answer (%s): the client's read follows", base, key, exc)
            return None
        if status == (206 if start else 200) and length is not None:
            return _Body(wire, length, self)
        self.drop()  # its body unread: the connection is not reused
        return None

    def _split(self, base: str) -> _Where:
        """A bucket's URL base as the GETs need it, once per base: scheme, address, the
        Host header (botocore's form: no default port, IPv6 in brackets) and the path."""
        parts = urlsplit(base)
        scheme = parts.scheme
        hostname = parts.hostname or ""
        host = f"[{hostname}]" if ":" in hostname else hostname
        port = parts.port or (443 if scheme == "https" else 80)
        if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(scheme):
            host = f"{host}:{parts.port}"
        where = self._where[base] = _Where(scheme, hostname, port, host, parts.path)
        return where

    def drop(self) -> None:
        """Forget this thread's connection (after a failure: the next GET opens a new one)."""
        wire: _Wire | None = getattr(self._local, "wire", None)
        self._local.wire = None
        if wire is not None:
            wire.close()

    def _wire(self, where: _Where) -> _Wire:
        wire: _Wire | None = getattr(self._local, "wire", None)
        if wire is not None and wire.where == where and not wire.closing:
            return wire
        self.drop()
        sock = socket.create_connection((where.hostname, where.port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if where.scheme == "https":
                sock = self._tls_context().wrap_socket(sock, server_hostname=where.hostname)
            sock.settimeout(self.read_timeout)  # connected: from now on the read timeout applies
        except BaseException:
            sock.close()
            raise
        wire = self._local.wire = _Wire(sock, where)
        return wire

    def _tls_context(self) -> ssl.SSLContext:
        """The verification botocore's session was given: False, a CA bundle path, or its default bundle."""
        if self._tls is None:
            if self._verify is False:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                context = ssl.create_default_context(cafile=get_cert_path(self._verify))
            self._tls = context
        return self._tls


@dataclass(frozen=True)
class _Where:
    scheme: str
    hostname: str
    port: int
    host: str  # the Host header, and what the signature signs
    path: str  # up to the key: "/bucket/" (path style) or "/" (virtual host)


class _Wire:
    """One kept-alive HTTP/1.1 connection for GETs. Only what an object GET needs: a
    status line, headers, and a body of a stated Content-Length (any other body, chunked
    say, is not this path's: the caller hands the file on). Why not http.client: it parses
    every answer's headers with the email package, ~0.15 ms of held GIL per GET, as much
    as the rest of a 100 KiB file's fetch."""

    MAX_HEADER_LINES = 200

    def __init__(self, sock: socket.socket, where: _Where) -> None:
        self.sock, self.where = sock, where
        self.reader = sock.makefile("rb")
        self.closing = False  # the server said "Connection: close"

    def get(self, target: str, host: str, headers: dict[str, str]) -> tuple[int, int | None]:
        """Send the GET; the answer's status and Content-Length (None: not stated, or chunked)."""
        lines = [f"GET {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "host"]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status_line = self.reader.readline(65537)
        version, _, rest = status_line.partition(b" ")
        if not version.startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
        status = int(rest[:3])
        length: int | None = None
        chunked = False
        for _ in range(self.MAX_HEADER_LINES):
            line = self.reader.readline(65537)
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise ConnectionError("the connection closed in the answer's headers")
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                self.closing = b"close" in value.lower()
        else:
            raise ValueError("more than 200 header lines")
        return status, (None if chunked else length)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class _Body:
    """The answer's body, ``readinto`` until 0. Closed before its end (a refused or
    cancelled file), or after a "Connection: close", its connection is dropped: the rest
    of the body would still be in the socket."""

    def __init__(self, wire: _Wire, length: int, owner: ThreadGet) -> None:
        self._wire, self._left, self._owner = wire, length, owner

    def readinto(self, buffer: memoryview) -> int:
        if self._left <= 0:
            return 0
        try:
            n = self._wire.reader.readinto(buffer[: self._left])
        except BaseException:
            self._owner.drop()
            raise
        if not n:
            self._owner.drop()
            raise ConnectionError(f"the connection closed with {self._left} bytes of the body still to come")
        self._left -= n
        return n

    def close(self) -> None:
        if self._left > 0 or self._wire.closing:
            self._owner.drop()
