"""Upload bodies read from disk: byte ranges streamed to a request, and a file's md5.

A request body is a factory of fresh streams (``BodyFactory``), so a retried request
re-reads its bytes from disk instead of holding them; a stream can hash what it reads
(``StreamMd5``), so the upload's one read of a file also gives its md5.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterable, Callable
from pathlib import Path
from typing import BinaryIO

from upload.targets.base import Progress

BodyFactory = Callable[[], AsyncIterable[bytes]]  # a fresh stream per attempt
# Read size of upload bodies. Each stream holds about two chunks (the one being sent and
# asyncio's copy of what the socket did not take yet): 8 MiB made a 1 GiB M upload (4 parts
# in flight) peak at ~170 MB RSS; 2 MiB gives ~87 MB for the same CPU time and speed
# (bench/bench_upload.py, BENCH_CHUNK runs, 2026-11-21).
CHUNK = 2 * 1024 * 1024


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
