"""Source bytes as an async stream for a target's ``put_stream``: no staging file, no zip.

One streaming path for every command that streams: ``ferry mirror`` always does, and
``ferry upload``/``ferry bulk`` with ``--stream`` (pipeline/job_stream.py). A fetcher
(``download.base.ByteFetcher``: HTTPS, XRootD) runs as a task beside the consumer and
hands its chunks over in offset order through a window of ``window`` bytes, so memory is
bounded by bytes in flight, never by the file's size.

A source connection that breaks half way is resumed from the byte reached (``Range`` on
HTTPS, an offset on XRootD), up to ``resumes`` times, inside the same stream: the
target's upload goes on, its whole-stream hash keeps counting, and the md5 check before
the object is completed still covers every byte. Past that, the stream raises, the
target aborts its upload (nothing partial is ever completed) and the caller's retry
starts the object again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path

from download.base import ByteFetcher
from download.manifest import Manifest, ManifestEntry
from ferry.core.checksums import Checksum
from ferry.core.errors import FerryError, InputError
from ferry.core.model import FileEntry, Record

log = logging.getLogger(__name__)

MiB = 1024 * 1024
WINDOW = 32 * MiB  # source bytes held per file between the fetcher and the target
RESUMES = 3  # source reconnections per stream before it fails


@dataclass(frozen=True)
class StreamFrom:
    """Where a streamed file's bytes come from: the run's transport (``download.transport``)."""

    fetcher_for: Callable[[str], ByteFetcher]
    url_for: Callable[[str], str] = str  # a file URI -> the URL to fetch (CERN over HTTPS)
    window: int = WINDOW
    resumes: int = RESUMES

    def open(self, entry: FileEntry, size: int) -> Callable[[], AsyncGenerator[bytes, None]]:
        """A fresh stream of ``entry``'s bytes per call (a target's try)."""
        url = self.url_for(entry.uri)
        fetcher = self.fetcher_for(url)
        return lambda: source_stream(fetcher, url, size, window=self.window, resumes=self.resumes)


class StreamSink:
    """A ``download.base.ChunkSink`` that hands chunks on in offset order, holding at most
    ``window`` bytes that the consumer has not taken yet."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.used = 0
        self.freed = asyncio.Event()
        self.pending: dict[int, tuple[bytes, int]] = {}
        self.next = 0  # the offset of the first byte not yet handed on
        self.queue: asyncio.Queue[tuple[bytes, int] | BaseException | None] = asyncio.Queue()

    async def reserve(self, nbytes: int) -> None:
        while self.used and self.used + nbytes > self.window:
            self.freed.clear()
            await self.freed.wait()
        self.used += nbytes

    def release(self, nbytes: int) -> None:
        self.used -= nbytes
        self.freed.set()

    async def put(self, offset: int, data: bytes, *, reserved: int) -> None:
        if offset < self.next:  # a resumed fetcher repeating bytes already handed on
            data = data[self.next - offset :]
            offset = self.next
            if not data:
                self.release(reserved)
                return
        self.pending[offset] = (data, reserved)
        while self.next in self.pending:
            chunk, held = self.pending.pop(self.next)
            self.next += len(chunk)
            self.queue.put_nowait((chunk, held))

    def drop_pending(self) -> None:
        """Chunks past a gap that will now be fetched again: let their memory go."""
        for _, held in self.pending.values():
            self.release(held)
        self.pending.clear()


async def _fetch_resuming(fetcher: ByteFetcher, url: str, size: int, sink: StreamSink, resumes: int) -> None:
    left = resumes
    while True:
        start = sink.next
        try:
            await fetcher.fetch(url, sink, start=start, expected_size=size)
            return
        except FerryError as exc:
            if not exc.retryable or left <= 0 or sink.next >= size:
                raise
            left -= 1
            sink.drop_pending()
            log.info(
                "%s: the source stream broke at byte %d of %d (%s): resuming from there", url, sink.next, size, exc
            )


async def source_stream(
    fetcher: ByteFetcher, url: str, size: int, *, window: int = WINDOW, resumes: int = RESUMES
) -> AsyncGenerator[bytes, None]:
    """The bytes of ``url`` as they arrive (the fetcher runs as a task beside the consumer)."""
    sink = StreamSink(window)

    async def run() -> None:
        try:
            await _fetch_resuming(fetcher, url, size, sink, resumes)
            sink.queue.put_nowait(None)
        except BaseException as exc:
            sink.queue.put_nowait(exc)
            raise

    task = asyncio.create_task(run())
    try:
        while True:
            item = await sink.queue.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            data, held = item
            yield data
            sink.release(held)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def expected_of(entry: FileEntry, recid: str) -> Checksum:
    """What a streamed file is checked against: md5 where the source gives it (Zenodo),
    else its checksum (adler32/sha1 for CERN). Without a size or a checksum a file cannot
    be streamed: nothing could tell a short or corrupt stream before the object exists."""
    if entry.size is None:
        raise InputError("the source gives no size: it cannot be streamed", recid=recid, file=entry.key)
    found = entry.expected("md5") or (entry.checksums[0] if entry.checksums else None)
    if found is None:
        raise InputError("the source gives no checksum: it cannot be verified", recid=recid, file=entry.key)
    return found


def stream_manifest(record_dir: Path, record: Record) -> Manifest:
    """The manifest a streamed record is delivered and verified with: the source's sizes
    and checksums (nothing is on disk; ``record_dir`` only names where it would be)."""
    manifest = Manifest(record_dir, record.recid)
    for entry in record.files:
        expected_of(entry, record.recid)  # every file streamable, or the record fails before any write
        sums = {c.algorithm: c.value.lower() for c in entry.checksums}
        manifest.put(ManifestEntry(key=entry.key, size=entry.size or 0, mtime_ns=0, checksums=sums))
    return manifest
