"""One HTTP client per target: session, auth, throttle, retries and error mapping.

Every request to a target goes through ``HttpClient.request``: it waits for the injected
rate limiter, sends the bearer token only to the target's own origin (part URLs may be
pre-signed object-store URLs that must not see it), reads the JSON answer and maps any
failure into ``ferry.core.errors`` here, once. Two retry modes:

- ``retry="all"``: the request is idempotent (GET, PUT, DELETE); any retryable error is
  repeated with ``ferry.core.retry``.
- ``retry="safe"``: the request may change state (POST that creates, a content PUT whose
  failure deletes the entry). Only failures that certainly did not reach the server
  (429, connection refused) are repeated; anything else is raised with
  ``maybe_applied = True`` so the caller can check what happened before trying again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import threading
import time
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson

from ferry.core.config import Secret
from ferry.core.errors import (
    AuthError,
    Conflict,
    FerryError,
    QuotaError,
    RateLimited,
    TargetError,
    TargetNotFound,
    TargetUnavailable,
    ValidationError,
)
from ferry.core.logs import register_secret
from ferry.core.retry import RetryPolicy, retry, server_delay
from upload.targets.base import NoLimit, PausableLimiter, Progress, RefundableLimiter, RequestLimiter

log = logging.getLogger(__name__)

BodyFactory = Callable[[], AsyncIterable[bytes]]  # a fresh stream per attempt
RetryMode = Literal["all", "safe", "none"]
# Read size of upload bodies. Each stream holds about two chunks (the one being sent and
# asyncio's copy of what the socket did not take yet): 8 MiB made a 1 GiB M upload (4 parts
# in flight) peak at ~170 MB RSS; 2 MiB gives ~87 MB for the same CPU time and speed
# (bench/bench_upload.py, BENCH_CHUNK runs, 2026-11-21).
CHUNK = 2 * 1024 * 1024

# Words InvenioRDM/Zenodo use in 400 messages about limits rather than metadata.
_QUOTA_WORDS = ("too many files", "maximum number", "exceed", "too large", "quota", "file size limit")


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or None for an empty/non-JSON body


@dataclass(frozen=True)
class Where:
    """What a request is about, for error messages (never the token)."""

    what: str  # e.g. "create draft", "upload content"
    recid: str | None = None
    file: str | None = None


def field_errors(body: Any) -> dict[str, list[str]]:
    """InvenioRDM ``errors: [{field, messages}]`` as ``{field: [messages]}``."""
    out: dict[str, list[str]] = {}
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if not isinstance(errors, list):
        return out
    for item in errors:
        if not isinstance(item, Mapping):
            continue
        name = str(item.get("field") or "_")
        messages = item.get("messages") or item.get("message") or []
        if isinstance(messages, str):
            messages = [messages]
        elif isinstance(messages, Mapping):  # nested marshmallow errors
            messages = [f"{k}: {v}" for k, v in messages.items()]
        out.setdefault(name, []).extend(str(m) for m in messages)
    return out


def server_message(body: Any, fallback: str) -> str:
    if isinstance(body, Mapping):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
        errors = body.get("errors")
        if isinstance(errors, str) and errors:
            return errors
    return fallback


def map_status(status: int, headers: Mapping[str, str], body: Any, where: Where, reason: str = "") -> TargetError:
    """The ``ferry.core.errors`` class for an HTTP error answer, keeping the server's words."""
    message = f"{where.what}: HTTP {status}: {server_message(body, reason or 'error')}"
    kw: dict[str, Any] = {"status": status, "recid": where.recid, "file": where.file}
    lowered = message.lower()
    if status in (401, 403):
        return AuthError(message, **kw)
    if status == 429 or (status == 503 and server_delay(headers) is not None):
        err = RateLimited(message, retry_after=server_delay(headers), status=status)
        err.recid, err.file = where.recid, where.file
        return err
    if status == 413 or (status == 400 and any(w in lowered for w in _QUOTA_WORDS)):
        return QuotaError(message, **kw)
    if status == 400 and "already exists" in lowered:
        return Conflict(message, **kw)
    if status in (400, 422):
        return ValidationError(message, errors=field_errors(body), status=status, recid=where.recid)
    if status == 404 or status == 410:
        return TargetNotFound(message, **kw)
    if status in (409, 412, 423):
        return Conflict(message, **kw)
    if status >= 500:
        return TargetUnavailable(message, **kw)
    return TargetError(message, **kw)


def _mark(exc: FerryError, applied: bool) -> FerryError:
    exc.maybe_applied = applied
    return exc


def maybe_applied(exc: BaseException) -> bool:
    """True when a failed request may still have taken effect on the server."""
    return isinstance(exc, FerryError) and exc.maybe_applied


class HttpClient:
    """A target's HTTP session. Create inside a running event loop's lifetime; ``aclose`` it."""

    def __init__(
        self,
        base_url: str,
        token: Secret | None,
        *,
        limiter: RequestLimiter | None = None,
        policy: RetryPolicy | None = None,
        verify_tls: bool = True,
        ca_file: str | None = None,
        connections: int = 16,
        connect_timeout: float = 30.0,
        read_timeout: float = 600.0,
        user_agent: str = "dataferry",
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._origin = _origin(self.base_url)
        self._token = token
        if token is not None:
            register_secret(token.reveal())
        self._limiter: RequestLimiter = limiter or NoLimit()
        self.policy = policy or RetryPolicy()
        # A private CA (targets.X.ca_file) replaces the system trust store; verification stays on.
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ca_file) if ca_file is not None and verify_tls else verify_tls
        )
        self._connections = connections
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self.requests_sent = 0  # every attempt, for stats ("requests per file")

    def __repr__(self) -> str:
        return f"HttpClient({self.base_url!r})"

    def url(self, link: str) -> str:
        """An absolute URL for a server link (InvenioRDM sometimes gives paths)."""
        return urljoin(self.base_url, link)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._connections,
                limit_per_host=self._connections,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"User-Agent": self._user_agent, "Accept": "application/json"},
                # Requests stay exactly as given; links from the server are already encoded.
                requote_redirect_url=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _headers(self, url: str, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._token is not None and _origin(url) == self._origin:
            headers["Authorization"] = f"Bearer {self._token.reveal()}"
        return headers

    async def request(
        self,
        method: str,
        link: str,
        where: Where,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        body: BodyFactory | None = None,
        headers: Mapping[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
        retry_mode: RetryMode = "all",
        read_timeout: float | None = None,
    ) -> Response:
        """Send one request (with retries as ``retry_mode`` allows); non-``expect`` answers raise.

        ``read_timeout``: this request's longest silence from the server (a big upload's
        answer comes only after the server has stored and hashed every byte), instead of
        the client's."""
        url = self.url(link)

        async def attempt() -> Response:
            return await self._send(
                method,
                url,
                where,
                json=json,
                params=params,
                body=body,
                headers=headers,
                expect=expect,
                read_timeout=read_timeout,
            )

        if retry_mode == "none":
            return await attempt()

        def retryable(exc: BaseException) -> bool:
            if not isinstance(exc, FerryError) or not exc.retryable:
                return False
            return retry_mode == "all" or not maybe_applied(exc)

        return await retry(attempt, policy=self.policy, retryable=retryable, what=f"{where.what} ({method})")

    def _timeouts(self, read_timeout: float | None) -> dict[str, Any]:
        """This request's own read timeout, only when given: aiohttp reads timeout=None as
        "no timeouts at all"."""
        if read_timeout is None:
            return {}
        return {
            "timeout": aiohttp.ClientTimeout(
                total=None, sock_connect=self._timeout.sock_connect, sock_read=read_timeout
            )
        }

    def _no_answer(self, exc: BaseException, where: Where) -> FerryError:
        """A request that got no answer, marked with whether it may have taken effect."""
        if isinstance(exc, aiohttp.ClientConnectorError):
            # Nothing reached the server: safe to repeat any request, and not one of the
            # server's requests. Counted, the retries against a target that is down spent
            # Zenodo's 100/min, and the run waited out the minute once it was back.
            if isinstance(self._limiter, RefundableLimiter):
                self._limiter.refund()
            failed = TargetUnavailable(
                f"{where.what}: cannot connect: {exc.os_error}", recid=where.recid, file=where.file
            )
            return _mark(failed, applied=False)
        what = f"{where.what}: connection failed: {type(exc).__name__}: {exc}"
        return _mark(TargetUnavailable(what, recid=where.recid, file=where.file), applied=True)

    async def _send(
        self,
        method: str,
        url: str,
        where: Where,
        *,
        json: Any,
        params: Mapping[str, str] | None,
        body: BodyFactory | None,
        headers: Mapping[str, str] | None,
        expect: tuple[int, ...],
        read_timeout: float | None = None,
    ) -> Response:
        hdrs = self._headers(url, headers)
        data: Any = None
        if json is not None:
            data = orjson.dumps(json)
            hdrs["Content-Type"] = "application/json"
        elif body is not None:
            data = body()
        session = self._get_session()
        async with self._limiter:
            self.requests_sent += 1
            started = time.monotonic()
            try:
                async with session.request(
                    method, url, data=data, params=params, headers=hdrs, **self._timeouts(read_timeout)
                ) as resp:
                    raw = await resp.read()
                    status, resp_headers, reason = resp.status, dict(resp.headers), resp.reason or ""
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise self._no_answer(exc, where) from exc
            finally:
                # aiohttp stops reading a body once Content-Length bytes are sent, leaving the
                # generator suspended with its file open: close it now, not at garbage collection.
                closer = getattr(data, "aclose", None)
                if closer is not None:
                    await closer()
        log.debug("%s %s -> %d (%.3fs)", method, url, status, time.monotonic() - started)
        parsed = _parse(raw)
        if status in expect:
            return Response(status, resp_headers, parsed)
        err = map_status(status, resp_headers, parsed, where, reason)
        if isinstance(err, RateLimited):
            # Hold every request to this target, not only this one, for the server's delay.
            if err.retry_after and isinstance(self._limiter, PausableLimiter):
                self._limiter.pause_for(min(err.retry_after, self.policy.max_server_delay))
            raise _mark(err, applied=status == 503)
        raise _mark(err, applied=True)


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class StreamMd5:
    """The md5 of the bytes one ``FileRange`` stream read, once it has read all of them.

    Shared by the streams a body factory makes (one per attempt): each stream starts the
    digest afresh, and ``hexdigest`` is set only when a stream reached its last byte, so
    it always describes one whole pass over the range, never a mix of attempts.
    """

    def __init__(self) -> None:
        self.hexdigest: str | None = None


class FileRange:
    """An async byte iterator over ``path[offset:offset+count]``, read in a thread.

    The file is opened on the first read and closed as soon as the last byte is read (aiohttp
    stops iterating once Content-Length bytes are sent), on ``aclose()``, or at the latest
    when the object is dropped. At most one chunk is held in memory. With ``md5``, each
    chunk is hashed in the same thread hop that reads it (hashlib drops the GIL), so the
    upload's one read of the file also gives its md5.
    """

    def __init__(
        self, path: Path, offset: int, count: int, progress: Progress | None, chunk: int, md5: StreamMd5 | None = None
    ) -> None:
        self._path, self._offset, self._left = path, offset, count
        self._progress, self._chunk = progress, chunk
        self._handle: BinaryIO | None = None
        self._sink = md5
        self._hasher = hashlib.md5() if md5 is not None else None
        if md5 is not None:
            md5.hexdigest = None  # a new pass: an earlier attempt's digest no longer stands

    def __aiter__(self) -> FileRange:
        return self

    async def __anext__(self) -> bytes:
        if self._left <= 0:
            self._finish()
            raise StopAsyncIteration
        if self._handle is None:
            await asyncio.to_thread(self._open)
        assert self._handle is not None
        data = await asyncio.to_thread(self._read, min(self._chunk, self._left))
        if not data:
            self._close()
            raise OSError(f"{self._path} ended {self._left} bytes early (file changed while uploading?)")
        self._left -= len(data)
        if self._left <= 0:
            self._finish()
        if self._progress is not None:
            self._progress(len(data))
        return data

    def _read(self, n: int) -> bytes:
        assert self._handle is not None
        data = self._handle.read(n)
        if self._hasher is not None:
            self._hasher.update(data)
        return data

    def _finish(self) -> None:
        """Every byte of the range was read: close, and publish the digest."""
        self._close()
        if self._hasher is not None and self._sink is not None:
            self._sink.hexdigest = self._hasher.hexdigest()
            self._hasher = None

    def _open(self) -> None:
        # Stored here, in the thread, so a cancelled await cannot lose an open handle.
        self._handle = open(self._path, "rb")  # noqa: SIM115 - closed by _close
        if self._offset:
            self._handle.seek(self._offset)

    def _close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    async def aclose(self) -> None:
        self._close()

    def __del__(self) -> None:
        self._close()


def file_range(
    path: Path,
    offset: int,
    count: int,
    *,
    progress: Progress | None = None,
    chunk: int = CHUNK,
    md5: StreamMd5 | None = None,
) -> BodyFactory:
    """A factory of fresh ``FileRange`` streams: a retried request re-reads its bytes from disk.

    ``md5``: receives the md5 of the range once a stream has read all of it.
    """
    return lambda: FileRange(path, offset, count, progress, chunk, md5)


async def file_md5(path: Path, size: int, *, chunk: int = CHUNK) -> str:
    """md5 of the first ``size`` bytes of ``path``, read sequentially in a worker thread.

    For a multipart upload, whose parts are read concurrently and out of order (md5 must
    see the bytes in order): it runs beside the part uploads, on the other core, from the
    page cache the parts read too. Cancelling stops the thread at its next chunk. Raises
    ``OSError`` when the file is shorter than ``size``.
    """
    stop = threading.Event()
    try:
        return await asyncio.to_thread(_md5_blocking, path, size, chunk, stop)
    finally:
        stop.set()


def _md5_blocking(path: Path, size: int, chunk: int, stop: threading.Event) -> str:
    digest = hashlib.md5()
    buf = bytearray(chunk)
    view = memoryview(buf)
    left = size
    with open(path, "rb", buffering=0) as fh:
        while left > 0:
            if stop.is_set():
                raise asyncio.CancelledError
            n = fh.readinto(view[: min(chunk, left)])
            if not n:
                raise OSError(f"{path} ended {left} bytes early (file changed while uploading?)")
            digest.update(view[:n])
            left -= n
    return digest.hexdigest()


async def sleep_backoff(attempt: int, *, first: float = 0.05, factor: float = 1.6, cap: float = 2.0) -> None:
    """Bounded, growing wait for polling loops (not jittered: one poller per file)."""
    await asyncio.sleep(min(cap, first * factor**attempt))
