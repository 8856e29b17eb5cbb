"""One file of a record, fetched and verified: resume, retries, the checks, the manifest entry.

``FileTransfers`` holds what every file of a run shares (the transport, the download
slots, the byte budget, the retry policy, stats and progress); ``run`` takes one file
through the steps listed in ``download.engine``. Small fresh files may first have been
tried in a batch (``download.batches``); what that try spent comes in as ``tried``.

Why one module of about 400 lines: the steps of one file (resume, fetch, checks, retry,
manifest entry) share the file's state and read in the order they run; split, each part
would take all of that state as arguments.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from download.base import ByteFetcher
from download.disk import (
    ManifestState,
    OnDisk,
    drop_part,
    expected_checksum,
    fetch_small,
    finish_part,
    keep_existing,
    open_marked,
    part_path,
    write_if_verified,
)
from download.manifest import ManifestEntry
from download.results import NO_EVENT, FileResult, NoEvent, as_ferry_error
from download.sink import ByteBudget, FileSink, MemorySink, lanes_for, prefix_hashers
from download.transport import Transport
from ferry.core.checksums import Checksum
from ferry.core.config import Limits
from ferry.core.errors import ChecksumFormatError, FerryError, SourceError, VerificationError, is_retryable
from ferry.core.model import FileEntry, Record
from ferry.core.retry import RetryPolicy, retry
from ferry.progress import ProgressSink
from stats.events import Event, StatsWriter

log = logging.getLogger(__name__)

# Computed for every file: adler32 for CERN, md5 for uploads (unless the Downloader is
# made with md5=False: md5 is then left to the upload, which computes it while sending).
BASE_ALGORITHMS = ("adler32", "md5")


class _ResumedPrefixBad(Exception):
    """A resumed file failed verification: its old prefix was bad; start from byte 0."""


@dataclass
class _Tries:
    """What the tries of one file have spent so far (reported on success and on failure)."""

    attempts: int = 0
    mismatches: int = 0
    transferred: int = 0
    resumed: bool = False
    refetched: bool = False

    def retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, VerificationError):
            self.mismatches += 1
            return self.mismatches <= 1  # a source mismatch is retried once
        return is_retryable(exc)

    @property
    def action(self) -> str:
        return "refetched" if self.refetched else ("resumed" if self.resumed else "fetched")


@dataclass(frozen=True)
class _Job:
    """One file's fetch, fixed before the first try."""

    recid: str
    entry: FileEntry
    url: str
    fetcher: ByteFetcher
    part: Path
    final: Path
    expected: Checksum
    algorithms: tuple[str, ...]


class FileTransfers:
    """Fetches single files, ``limits.downloads`` at once over all records of a run."""

    def __init__(
        self,
        transport: Transport,
        *,
        limits: Limits,
        stats: StatsWriter,
        progress: ProgressSink,
        policy: RetryPolicy,
        executor: Executor,
        md5: bool,
    ) -> None:
        self.transport = transport
        self.limits = limits
        self.stats = stats
        self.progress = progress
        self.policy = policy
        self.executor = executor
        self.slots = asyncio.Semaphore(limits.downloads)
        self._base_algorithms = tuple(a for a in BASE_ALGORITHMS if a != "md5" or md5)
        # One file's worth of reads in flight: md5 (one core) is the bottleneck of a single
        # stream, so more buffered chunks would only raise the RSS, not the speed.
        self.budget = ByteBudget(limits.chunks_in_flight * limits.chunk_size)

    def algorithms(self, expected: Checksum) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self._base_algorithms, expected.algorithm)))

    async def run(
        self,
        record: Record,
        entry: FileEntry,
        final: Path,
        state: ManifestState,
        verify_existing: bool,
        on_disk: OnDisk,
        *,
        tried: tuple[int, int] = (0, 0),
    ) -> FileResult:
        """One file, under a download slot: its result, its stats event, its progress."""
        async with self.slots:
            name = f"{record.recid}/{entry.key}"
            self.progress.file_started(name)
            event: Event | NoEvent = NO_EVENT
            if self.stats.dir is not None:  # building an unwritten event costs a uuid per file
                event = self.stats.open(
                    "download", record.recid, entry.key, bytes=entry.size or 0, transfer=self.transport.protocol
                )
            try:
                result = await self._fetch(record, entry, final, state, verify_existing, on_disk, tried)
            except Exception as raw:  # noqa: BLE001 - one file's failure must not stop the others; it is reported
                exc = as_ferry_error(raw)
                if exc.recid is None:
                    exc.recid = record.recid
                if exc.file is None:
                    exc.file = entry.key
                result = FileResult(
                    key=entry.key,
                    path=final,
                    size=entry.size,
                    status="failed",
                    action="failed",
                    attempts=exc.attempts,
                    bytes_transferred=exc.bytes_transferred,
                    error=exc,
                )
            event.close(
                result.status,
                error=result.error,
                bytes=result.bytes_transferred,
                attempts=max(result.attempts, 1),
                reason=result.action,
            )
            skipped = (entry.size or 0) if result.status == "skipped" else 0
            self.progress.file_finished(name, ok=result.verified, skipped_bytes=skipped)
            if result.status == "ok":
                await state.flush()
            return result

    async def _fetch(
        self,
        record: Record,
        entry: FileEntry,
        final: Path,
        state: ManifestState,
        verify_existing: bool,
        on_disk: OnDisk,
        tried: tuple[int, int] = (0, 0),
    ) -> FileResult:
        """``tried``: (attempts, source mismatches) already spent on this file by a batch."""
        url = self.transport.url_for(entry.uri)
        fetcher = self.transport.fetcher_for(url)
        expected = expected_checksum(entry) or await self._server_checksum(fetcher, url)
        if expected is None:
            raise VerificationError(
                "neither the record nor the server gives a checksum for this file: cannot verify it"
            )
        algorithms = self.algorithms(expected)
        kept = await keep_existing(
            entry, final, on_disk.final, state, algorithms, verify_existing, expected, self.executor
        )
        if kept is not None:
            return kept
        job = _Job(record.recid, entry, url, fetcher, part_path(final), final, expected, algorithms)
        # Small files are fetched into memory and verified before anything is written;
        # resuming them would save nothing.
        small = entry.size is not None and entry.size <= self.limits.chunk_size and on_disk.part_size is None
        tries = _Tries(*tried)

        async def attempt() -> tuple[dict[str, str], int, os.stat_result | None]:
            tries.attempts += 1
            return await (self._attempt_small(job, tries) if small else self._attempt_stream(job, tries))

        try:
            digests, size, published = await retry(
                attempt, policy=self.policy, retryable=tries.retryable, what=f"download {url}"
            )
        except FerryError as exc:
            exc.attempts = tries.attempts
            exc.bytes_transferred = tries.transferred
            if entry.availability != "online" and isinstance(exc, SourceError):
                exc.message += (
                    f" (the file is on tape, availability {entry.availability!r}: "
                    "ask the portal to stage it, then run again)"
                )
            raise
        st = published if published is not None else await asyncio.to_thread(finish_part, job.part, final)
        state.put(
            ManifestEntry(
                key=entry.key,
                size=size,
                mtime_ns=st.st_mtime_ns,
                checksums=digests,
                source_uri=entry.uri,
                source_checksum=str(expected),
            )
        )
        return FileResult(
            key=entry.key,
            path=final,
            size=size,
            status="ok",
            action=tries.action,
            checksums=digests,
            bytes_transferred=tries.transferred,
            attempts=tries.attempts,
        )

    async def _attempt_small(self, job: _Job, tries: _Tries) -> tuple[dict[str, str], int, os.stat_result | None]:
        """One try of a small file: fetched whole, written under its final name only if it verified."""
        digests, size, moved, st = await self._transfer_small(
            job.url, job.fetcher, job.entry, job.part, job.final, job.algorithms
        )
        tries.transferred += moved
        if st is None:
            self._verify(job.entry, job.expected, digests, size, job.url, resumed=False)
        return digests, size, st

    async def _attempt_stream(self, job: _Job, tries: _Tries) -> tuple[dict[str, str], int, os.stat_result | None]:
        """One try of a streamed file into its ``.part``: resumed if one is there; a resumed
        file that does not verify is fetched again from byte 0 in the same try."""
        for allow_resume in (True, False):
            try:
                digests, size, moved, resumed = await self._transfer(
                    job.url, job.fetcher, job.entry, job.part, job.algorithms, allow_resume
                )
                tries.transferred += moved
                tries.resumed = tries.resumed or resumed
                self._verify(job.entry, job.expected, digests, size, job.url, resumed=resumed)
                return digests, size, None
            except _ResumedPrefixBad as why:
                log.warning(
                    "record %s, file %s: the resumed .part did not verify (%s); fetching it again from byte 0",
                    job.recid,
                    job.entry.key,
                    why,
                )
                tries.refetched = True
                await asyncio.to_thread(drop_part, job.part)
            except VerificationError:
                await asyncio.to_thread(drop_part, job.part)
                raise
        raise AssertionError("unreachable: a fetch from byte 0 never raises _ResumedPrefixBad")

    @staticmethod
    async def _server_checksum(fetcher: ByteFetcher, url: str) -> Checksum | None:
        """For files the record lists without a checksum: the server's own, if it has one."""
        ask = getattr(fetcher, "source_checksum", None)
        if ask is None:
            return None
        text = await ask(url)
        try:
            return Checksum.parse(text) if text else None
        except ChecksumFormatError:
            return None

    async def _transfer(
        self,
        url: str,
        fetcher: ByteFetcher,
        entry: FileEntry,
        part: Path,
        algorithms: tuple[str, ...],
        allow_resume: bool,
    ) -> tuple[dict[str, str], int, int, bool]:
        """One pass: (re)open ``part``, hash a kept prefix, stream the rest. Returns
        (digests, size, bytes moved, resumed?)."""
        lanes = lanes_for(algorithms)
        fd, start, mark = await asyncio.to_thread(open_marked, part, entry.size if allow_resume else -1)
        try:
            hashers = await prefix_hashers(str(part), start, lanes, self.executor)
            sink = FileSink(
                fd,
                start=start,
                hashers=hashers,
                budget=self.budget,
                executor=self.executor,
                on_bytes=self.progress.advance,
                on_written=mark.written,
            )
            try:
                remote_size = await fetcher.fetch(url, sink, start=start, expected_size=entry.size)
                end = await sink.finish()
            except BaseException as exc:
                sink.abort()
                if isinstance(exc, FerryError):
                    exc.bytes_transferred = sink.written
                raise
        finally:
            await asyncio.to_thread(os.close, fd)
            mark.close()
        if end != remote_size:
            if start > 0:
                raise _ResumedPrefixBad(f"the server's file is {remote_size} bytes, the .part had {start}")
            raise VerificationError(
                f"got {end} bytes but the server says the file has {remote_size}",
                expected=str(remote_size),
                actual=str(end),
            )
        return sink.hexdigests(), end, sink.written, start > 0

    async def _transfer_small(
        self,
        url: str,
        fetcher: ByteFetcher,
        entry: FileEntry,
        part: Path,
        final: Path,
        algorithms: tuple[str, ...],
    ) -> tuple[dict[str, str], int, int, os.stat_result | None]:
        """Fetch a small file into memory, then verify, write and rename it in one thread hop.
        Returns (digests, size, bytes moved, stat of the final file or None if it did not verify)."""
        expected = expected_checksum(entry)
        blocking = getattr(fetcher, "read_whole_blocking", None)
        if blocking is not None and entry.size is not None:
            # The whole file in one worker-thread job: fetch, hash, write, rename.
            taken = await self.budget.acquire(entry.size + 1)
            try:
                loop = asyncio.get_running_loop()
                data_len, remote_size, digests, st = await loop.run_in_executor(
                    self.executor, fetch_small, blocking, url, part, final, algorithms, entry.size, expected
                )
            except FerryError as exc:
                exc.bytes_transferred = 0
                raise
            finally:
                self.budget.release(taken)
            self.progress.advance(data_len)
            if data_len != remote_size:
                raise VerificationError(
                    f"got {data_len} bytes but the server says the file has {remote_size}",
                    expected=str(remote_size),
                    actual=str(data_len),
                )
            return digests, data_len, data_len, st
        sink = MemorySink(self.budget, on_bytes=self.progress.advance)
        try:
            try:
                remote_size = await fetcher.fetch(url, sink, start=0, expected_size=entry.size)
                data = sink.data()
            except FerryError as exc:
                exc.bytes_transferred = sink.written
                raise
            if len(data) != remote_size:
                raise VerificationError(
                    f"got {len(data)} bytes but the server says the file has {remote_size}",
                    expected=str(remote_size),
                    actual=str(len(data)),
                )
            digests, st = await asyncio.to_thread(
                write_if_verified, part, final, data, algorithms, entry.size, expected
            )
            return digests, len(data), sink.written, st
        finally:
            sink.close()

    @staticmethod
    def _verify(
        entry: FileEntry, expected: Checksum, digests: dict[str, str], size: int, url: str, *, resumed: bool
    ) -> None:
        problems = []
        if entry.size is not None and size != entry.size:
            problems.append(("size", str(entry.size), str(size)))
        actual = digests.get(expected.algorithm)
        if actual != expected.value:
            problems.append(("checksum", str(expected), f"{expected.algorithm}:{actual}"))
        if not problems:
            return
        if resumed:
            raise _ResumedPrefixBad(", ".join(f"{what} {got} != {want}" for what, want, got in problems))
        _, want, got = problems[0]
        text = "; ".join(f"{w} mismatch: expected {e}, got {a}" for w, e, a in problems)
        raise VerificationError(f"{text} (from {url})", expected=want, actual=got)
