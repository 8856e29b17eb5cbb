"""XRootD byte fetcher: the official ``XRootD.client.File`` bindings, wrapped for asyncio.

The bindings call back from their own threads; each call is turned into an asyncio
future with ``loop.call_soon_threadsafe``. A large file is read with several chunks in
flight (``chunks_in_flight`` x ``chunk_size``), each written at its offset by the sink,
so one file can fill the link; the sink's byte budget bounds memory across files.
XRootD statuses are translated into the ferry error tree here, and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any
from urllib.parse import urlsplit

from download.base import ChunkSink
from ferry.core.errors import FerryError, SourceError, SourceFileMissing, SourceUnavailable
from ferry.core.model import uri_path

try:
    from XRootD import client as xrd_client
    from XRootD.client.flags import OpenFlags, QueryCode
except ImportError as exc:  # pragma: no cover - the wheel is a declared dependency
    raise ImportError("the XRootD Python bindings are missing: pip install xrootd") from exc

# Ferry retries with its own policy (ferry.core.retry); the client's own reconnect loop would
# otherwise hold a dead server for minutes before an error reaches us.
if "XRD_CONNECTIONRETRY" not in os.environ:
    xrd_client.EnvPutInt("ConnectionRetry", 1)
if "XRD_CONNECTIONWINDOW" not in os.environ:
    xrd_client.EnvPutInt("ConnectionWindow", 15)
# After a fatal stream error the client fails every request to that server at once for
# StreamErrorWindow seconds (default 1800): a source restarted mid-transfer stayed "dead"
# for the rest of the run although it was back within a second (tests/reliability/
# test_source_faults.py). Forgotten quickly, the retries of ferry.core.retry can reach it.
if "XRD_STREAMERRORWINDOW" not in os.environ:
    xrd_client.EnvPutInt("StreamErrorWindow", 1)

# XRootD error codes (XRootD.client.responses.XRootDStatus) that a retry can cure.
_TRANSIENT_CODES = {1, 101, 102, 103, 104, 107, 108, 109, 206, 207}
# Server-side errnos (carried by code 400): server error, no server, in progress,
# overloaded, request timed out, timer expired.
_TRANSIENT_ERRNOS = {3012, 3014, 3020, 3024, 3034, 3035}
_NOT_FOUND_ERRNO = 3011
_NOT_FOUND_CODE = 304


def _error(status: Any, what: str, url: str) -> FerryError:
    """Map an XRootD status to the ferry error tree."""
    message = str(getattr(status, "message", status)).strip()
    code = getattr(status, "code", None)
    errno = getattr(status, "errno", None)
    text = f"{what} {url}: {message}"
    if code == _NOT_FOUND_CODE or errno == _NOT_FOUND_ERRNO:
        return SourceFileMissing(f"the server has no such file: {url}")
    if code in _TRANSIENT_CODES or errno in _TRANSIENT_ERRNOS:
        return SourceUnavailable(text)
    return SourceError(text)


class _Call:
    """Bridges one XRootD callback to an asyncio future."""

    __slots__ = ("fut", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fut: asyncio.Future[tuple[Any, Any]] = loop.create_future()

    def __call__(self, status: Any, response: Any, hostlist: Any = None) -> None:
        self.loop.call_soon_threadsafe(self._set, status, response)

    def _set(self, status: Any, response: Any) -> None:
        if not self.fut.done():
            self.fut.set_result((status, response))


class XRootDFetcher:
    """``ByteFetcher`` for ``root://`` URLs."""

    scheme = "root"

    def __init__(self, *, chunk_size: int, chunks_in_flight: int, timeout: int = 120) -> None:
        self.chunk_size = chunk_size
        self.chunks_in_flight = chunks_in_flight
        self.timeout = timeout

    async def _call(self, method: Any, *args: Any) -> Any:
        call = _Call(asyncio.get_running_loop())
        status = method(*args, timeout=self.timeout, callback=call)
        if not status.ok:  # refused before it was even sent
            return status, None
        return await call.fut

    async def _open(self, url: str) -> Any:
        handle = xrd_client.File()
        status, _ = await self._call(handle.open, url, OpenFlags.READ)
        if not status.ok:
            raise _error(status, "cannot open", url)
        return handle

    async def _close(self, handle: Any) -> None:
        # Closing a read handle cannot lose data; a failure here must not mask the result.
        with contextlib.suppress(Exception):
            await self._call(handle.close)

    async def _size(self, handle: Any, url: str) -> int:
        status, info = await self._call(handle.stat, False)
        if not status.ok:
            raise _error(status, "cannot stat", url)
        return int(info.size)

    async def _read(self, handle: Any, url: str, offset: int, size: int) -> bytes:
        status, data = await self._call(handle.read, offset, size)
        if not status.ok:
            raise _error(status, f"read of {size} bytes at {offset} failed for", url)
        return bytes(data or b"")

    async def fetch(self, url: str, sink: ChunkSink, *, start: int, expected_size: int | None) -> int:
        handle = await self._open(url)
        try:
            return await self._fetch_open(handle, url, sink, start, expected_size)
        finally:
            await self._close(handle)

    async def _fetch_open(self, handle: Any, url: str, sink: ChunkSink, start: int, expected_size: int | None) -> int:
        chunk = self.chunk_size
        if expected_size is not None and expected_size - start < chunk:
            # Small file (or small tail): one read, no stat round-trip. Asking for one byte
            # more than expected tells a short answer (the end of the file) from a file
            # that grew (then fall back to stat and read the rest).
            want = expected_size - start + 1
            await sink.reserve(want)
            try:
                data = await self._read(handle, url, start, want)
            except BaseException:
                sink.release(want)
                raise
            n = len(data)
            if n:
                await sink.put(start, data, reserved=want)
            else:
                sink.release(want)
            if n < want:
                return start + n
            start += n
        size = await self._size(handle, url)
        if size < start:
            return size  # the caller sees the mismatch and starts over
        await self._read_parallel(handle, url, sink, start, size)
        return size

    async def _read_parallel(self, handle: Any, url: str, sink: ChunkSink, start: int, size: int) -> None:
        """Read [start, size) with up to ``chunks_in_flight`` reads outstanding."""
        slots = asyncio.Semaphore(self.chunks_in_flight)
        failure: list[BaseException] = []

        tasks: set[asyncio.Task[None]] = set()
        offset = start
        try:
            while offset < size and not failure:
                length = min(self.chunk_size, size - offset)
                await slots.acquire()
                if failure:
                    slots.release()
                    break
                await sink.reserve(length)
                task = asyncio.get_running_loop().create_task(
                    self._read_chunk(handle, url, sink, offset, length, slots, failure)
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                offset += length
            if tasks:
                await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        if failure:
            raise failure[0]

    async def _read_chunk(
        self,
        handle: Any,
        url: str,
        sink: ChunkSink,
        offset: int,
        length: int,
        slots: asyncio.Semaphore,
        failure: list[BaseException],
    ) -> None:
        """One read of ``_read_parallel``; its reservation is already taken. A failure is
        collected in ``failure``, which stops the issuing of further reads."""
        handed_over = False  # put() owns the reservation once called
        try:
            data = await self._read(handle, url, offset, length)
            if len(data) != length:
                raise SourceUnavailable(
                    f"short read from {url}: {len(data)} of {length} bytes at offset {offset} "
                    "(the file changed or the server stopped)"
                )
            handed_over = True
            await sink.put(offset, data, reserved=length)
        except BaseException as exc:  # noqa: BLE001 - kept for _read_parallel, which raises the first one
            if not handed_over:
                sink.release(length)
            failure.append(exc)
        finally:
            slots.release()

    def read_whole_blocking(self, url: str, expected_size: int) -> tuple[bytes, int]:
        """Blocking (run it in a worker thread): the whole of a small file in one read.

        Returns (bytes, remote size). Per-file overhead rules small files: open, read and
        close here take one trip from the event loop instead of three callbacks, each
        waking the loop and taking the GIL from an XRootD thread (5,000 x 4 KiB files: ~40
        futex calls per file instead of ~115, and half the wall time). The sync calls
        release the GIL while they wait. One byte more than expected is asked for, so a
        file that grew is seen (its size then comes from a stat); the caller verifies.
        """
        handle = xrd_client.File()
        status, _ = handle.open(url, OpenFlags.READ, timeout=self.timeout)
        if not status.ok:
            raise _error(status, "cannot open", url)
        try:
            want = expected_size + 1
            status, data = handle.read(0, want, timeout=self.timeout)
            if not status.ok:
                raise _error(status, f"read of {want} bytes at 0 failed for", url)
            data = bytes(data or b"")
            if len(data) < want:
                return data, len(data)
            status, info = handle.stat(False, timeout=self.timeout)
            if not status.ok:
                raise _error(status, "cannot stat", url)
            return data, int(info.size)
        finally:
            # Closing a read handle cannot lose data; a failure here must not mask the result.
            with contextlib.suppress(Exception):
                handle.close(timeout=self.timeout)

    async def read_small(self, url: str, *, max_size: int) -> bytes:
        handle = await self._open(url)
        try:
            size = await self._size(handle, url)
            if size > max_size:
                raise SourceError(f"{url} is {size} bytes, more than the {max_size} allowed for an index file")
            parts = []
            offset = 0
            while offset < size:
                data = await self._read(handle, url, offset, min(self.chunk_size, size - offset))
                if not data:
                    break
                parts.append(data)
                offset += len(data)
            return b"".join(parts)
        finally:
            await self._close(handle)

    async def source_checksum(self, url: str) -> str | None:
        """The server's own adler32 of ``url`` (``xrdfs query checksum``), or None if it has none.

        Used when a record gives no checksum (files listed only in an ``index.txt``), as
        ``xrdcp --cksum adler32:source`` does.
        """
        parts = urlsplit(url)
        fs = xrd_client.FileSystem(f"{parts.scheme}://{parts.netloc}")
        path = uri_path(url)
        status, response = await self._call(fs.query, QueryCode.CHECKSUM, path)
        if not status.ok:
            error = _error(status, "cannot ask the checksum of", url)
            if isinstance(error, SourceFileMissing | SourceUnavailable):
                raise error
            return None
        text = bytes(response or b"").split(b"\x00", 1)[0].decode("ascii", "replace").strip()
        algorithm, _, value = text.partition(" ")
        return f"{algorithm}:{value}" if algorithm and value else None

    async def close(self) -> None:
        return None
