"""HTTPS byte fetcher: one aiohttp session, streamed bodies, ``Range`` resume.

The portal serves every ``root://eospublic.cern.ch//eos/opendata/X`` file also at
``https://opendata.cern.ch/eos/opendata/X``; ``https_url`` does that mapping. A body is
read in chunks into the sink (written and hashed off the event loop by the sink), never
whole. HTTP failures are translated into the ferry error tree here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from download.base import ChunkSink
from ferry.core.errors import FerryError, SourceError, SourceFileMissing, SourceUnavailable
from ferry.core.model import uri_path

if TYPE_CHECKING:
    # aiohttp costs ~0.1 s to import; a root:// download never needs it, so it is imported
    # where a session is made or its errors are caught, not at start-up.
    import aiohttp

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


def https_url(uri: str, https_base: str) -> str:
    """``root://host//eos/opendata/X`` -> ``{https_base}/eos/opendata/X``; http(s) URIs unchanged."""
    if uri.startswith(("http://", "https://")):
        return uri
    return https_base.rstrip("/") + uri_path(uri)


def http_error(status: int, url: str, reason: str = "") -> FerryError:
    text = f"{url} answered HTTP {status}{' ' + reason if reason else ''}"
    if status == 404:
        return SourceFileMissing(f"the server has no such file: {url} (HTTP 404)")
    if status in _TRANSIENT_STATUS:
        return SourceUnavailable(text)
    return SourceError(text)


class HTTPSFetcher:
    """``ByteFetcher`` for ``http(s)://`` URLs; owns one ``aiohttp.ClientSession``."""

    scheme = "https"

    def __init__(
        self,
        *,
        chunk_size: int = 1024 * 1024,
        connections: int = 16,
        verify_tls: bool = True,
        timeout: float = 120.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.chunk_size = chunk_size
        self._connections = connections
        self._verify_tls = verify_tls
        self._timeout = timeout
        self._session = session
        self._owns_session = session is None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=self._verify_tls),
                # No total timeout: a large file may take hours; stalls are caught per read.
                timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_read=self._timeout),
                auto_decompress=False,
            )
        return self._session

    async def fetch(self, url: str, sink: ChunkSink, *, start: int, expected_size: int | None) -> int:
        import aiohttp

        headers = {"Accept-Encoding": "identity"}
        if start > 0:
            headers["Range"] = f"bytes={start}-"
        try:
            async with self.session.get(url, headers=headers) as resp:
                if start > 0 and resp.status == 416:
                    # Nothing after ``start``: the file is not longer than what we have.
                    total = _total_from_range(resp.headers.get("Content-Range"))
                    return total if total is not None else start
                if resp.status not in (200, 206):
                    raise http_error(resp.status, url, resp.reason or "")
                skip, total = _range_answer(resp.status, resp.headers, url, start)
                offset = await self._stream(resp.content, sink, start, skip)
                if total is not None and offset != total:
                    raise SourceUnavailable(f"{url}: the body stopped at byte {offset} of {total}")
                return offset
        except aiohttp.ClientResponseError as exc:
            raise http_error(exc.status, url, exc.message) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceUnavailable(f"cannot read {url}: {exc or type(exc).__name__}") from exc

    async def _stream(self, body: aiohttp.StreamReader, sink: ChunkSink, start: int, skip: int) -> int:
        """Copy the body into ``sink`` from byte ``start``, dropping its first ``skip`` bytes;
        return the offset after the last byte."""
        offset = start
        async for data in body.iter_chunked(self.chunk_size):
            if skip:
                cut = min(skip, len(data))
                data, skip = data[cut:], skip - cut
                if not data:
                    continue
            await sink.reserve(len(data))
            await sink.put(offset, data, reserved=len(data))
            offset += len(data)
        return offset

    async def read_small(self, url: str, *, max_size: int) -> bytes:
        import aiohttp

        try:
            async with self.session.get(url) as resp:
                if resp.status != 200:
                    raise http_error(resp.status, url, resp.reason or "")
                length = _int_or_none(resp.headers.get("Content-Length"))
                if length is not None and length > max_size:
                    raise SourceError(f"{url} is {length} bytes, more than the {max_size} allowed for an index file")
                parts: list[bytes] = []
                got = 0
                async for data in resp.content.iter_chunked(self.chunk_size):
                    got += len(data)
                    if got > max_size:
                        raise SourceError(f"{url} is more than the {max_size} bytes allowed for an index file")
                    parts.append(data)
                return b"".join(parts)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceUnavailable(f"cannot read {url}: {exc or type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None


def _range_answer(status: int, headers: Mapping[str, str], url: str, start: int) -> tuple[int, int | None]:
    """(bytes to drop from the body, the file's total size if known) for a 200 or 206."""
    if status == 206:
        first, total = _parse_content_range(headers.get("Content-Range"), url)
        if first != start:
            raise SourceError(f"{url} answered a range from {first}, asked from {start}")
        return 0, total
    # The server ignored Range: drop the bytes we already have.
    return start, _int_or_none(headers.get("Content-Length"))


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _parse_content_range(value: str | None, url: str) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not match:
        raise SourceError(f"{url} answered 206 with an unreadable Content-Range {value!r}")
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _total_from_range(value: str | None) -> int | None:
    match = re.fullmatch(r"bytes \*/(\d+)", (value or "").strip())
    return int(match.group(1)) if match else None
