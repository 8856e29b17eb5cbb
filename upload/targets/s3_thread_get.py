"""Object GETs made by a worker thread with blocking sockets, so the bytes never pass the event loop.

Why: a download of many objects in one event loop is bound by that loop. With the bytes
read by aiohttp, every piece is parsed, handed on and joined in Python holding the GIL
(py-spy of the archive download: socket reads and aiohttp's parser 27 % of the run, the
request 19 %), and the sha256 and the writes wait for it. A thread that reads with
``recv_into`` into its own buffer, hashes and writes that buffer, lets go of the GIL for
all three, so on two cores two large files are read, hashed and written side by side. A
prototype of this read 1,000 x 100 KiB + 2 x 500 MiB from SeaweedFS in 2.37-2.45 s where
rclone took 2.65-2.68 s and the aiohttp path ~3.0 s (docs/benchmarks.md, "archive").

The request is the one the short GET path (``s3_get``) sends: the URL botocore builds for
the bucket, signed by botocore's SigV4 signer with the client's own credentials (frozen on
the loop, fetched again after ``CREDENTIALS_AGE`` seconds, so refreshing credentials keep
working). What this path never does is decide what a failure means: anything but the
bytes asked for returns None before a byte is taken, and a failure while reading raises;
either way the caller fetches the rest through the client's ``read`` (short path, then the
whole ``get_object``), which retries and maps errors as every other call.

Off, so that ``read`` alone is used: when the short path is off (for the bucket or the
client), when requests are budgeted (a limiter counts every request on the loop), when a
proxy is configured for the endpoint, and when the client presents a certificate.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import get_cert_path
from botocore.utils import percent_encode

from upload.targets.s3_get import ShortGet

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
        """In a worker thread: the GET's response, its body unread (``readinto``, then
        ``close``); None for any other answer or a failure before it (see the module doc)."""
        url = base + percent_encode(key, safe="/~")
        request = AWSRequest(method="GET", url=url, headers={"Range": f"bytes={start}-"} if start else {})
        S3SigV4Auth(self._frozen, "s3", self.short._region).add_auth(request)
        prepared = request.prepare()
        parts = urlsplit(prepared.url)
        conn = self._connection(parts.scheme, parts.netloc)
        try:
            conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=dict(prepared.headers))
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self.drop()
            log.debug("threaded GET of %s failed before an answer (%s): the client's read follows", url, exc)
            return None
        if response.status == (206 if start else 200):
            return _Body(response, self)
        response.close()
        self.drop()  # its error body unread: the connection is not reused
        return None

    def drop(self) -> None:
        """Forget this thread's connection (after a failure: the next GET opens a new one)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "where", None) == (scheme, netloc):
            return conn
        self.drop()
        if scheme == "https":
            conn = http.client.HTTPSConnection(netloc, timeout=self.connect_timeout, context=self._tls_context())
        else:
            conn = http.client.HTTPConnection(netloc, timeout=self.connect_timeout)
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(self.read_timeout)  # connected: from now on the read timeout applies
        self._local.conn, self._local.where = conn, (scheme, netloc)
        return conn

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


class _Body:
    """The response's body for ``readinto``; closed before its end (a refused or cancelled
    file), its connection is dropped, since the rest of the body would still be in the socket."""

    def __init__(self, response: http.client.HTTPResponse, owner: ThreadGet) -> None:
        self._response, self._owner = response, owner

    def readinto(self, buffer: memoryview) -> int:
        try:
            return self._response.readinto(buffer)
        except BaseException:
            self._owner.drop()
            raise

    def close(self) -> None:
        if not self._response.isclosed():
            self._owner.drop()
        self._response.close()
