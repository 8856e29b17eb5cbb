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

The status map is ``upload.targets.http_errors``, the file bodies ``upload.targets.http_body``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson

from ferry.core.config import Secret
from ferry.core.errors import FerryError, RateLimited, TargetUnavailable, maybe_applied
from ferry.core.logs import register_secret
from ferry.core.retry import RetryPolicy, retry
from upload.targets.base import NoLimit, PausableLimiter, Progress, RefundableLimiter, RequestLimiter

# The bodies and the status map are their own modules; their names are this client's API
# too, so the targets import one module.
from upload.targets.http_body import CHUNK, BodyFactory, FileRange, StreamMd5, file_md5, file_range
from upload.targets.http_errors import Where, field_errors, map_status, mark, server_message

log = logging.getLogger(__name__)

RetryMode = Literal["all", "safe", "none"]
OCTET = "application/octet-stream"  # the type of every file body sent


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or None for an empty/non-JSON body


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

    async def put_range(
        self,
        link: str,
        where: Where,
        path: Path,
        offset: int,
        count: int,
        *,
        progress: Progress | None = None,
        md5: StreamMd5 | None = None,
        expect: tuple[int, ...] = (200,),
        retry_mode: RetryMode = "all",
        read_timeout: float | None = None,
    ) -> Response:
        """PUT ``count`` bytes of ``path`` from ``offset`` as the raw body, streamed from disk
        afresh for each attempt (``file_range``); ``md5`` receives their md5 once all are read.
        Always ``application/octet-stream``: InvenioRDM answers 415 to anything else."""
        return await self.request(
            "PUT",
            link,
            where,
            body=file_range(path, offset, count, progress=progress, md5=md5),
            headers={"Content-Type": OCTET, "Content-Length": str(count)},
            expect=expect,
            retry_mode=retry_mode,
            read_timeout=read_timeout,
        )

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
            return mark(failed, applied=False)
        what = f"{where.what}: connection failed: {type(exc).__name__}: {exc}"
        return mark(TargetUnavailable(what, recid=where.recid, file=where.file), applied=True)

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
            raise mark(err, applied=status == 503)
        raise mark(err, applied=True)


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


async def sleep_backoff(attempt: int, *, first: float = 0.05, factor: float = 1.6, cap: float = 2.0) -> None:
    """Bounded, growing wait for polling loops (not jittered: one poller per file)."""
    await asyncio.sleep(min(cap, first * factor**attempt))


__all__ = [
    "CHUNK",
    "OCTET",
    "BodyFactory",
    "FileRange",
    "HttpClient",
    "Response",
    "RetryMode",
    "StreamMd5",
    "Where",
    "field_errors",
    "file_md5",
    "file_range",
    "map_status",
    "maybe_applied",
    "server_message",
    "sleep_backoff",
]
