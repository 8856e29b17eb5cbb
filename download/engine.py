"""Download policy, in one place: where files go, resume, verification, retries, manifest.

For each file of a record (``DEST/<recid>/<key>``):

1. A file already under its final name whose size and mtime match the manifest is trusted
   (no read, no write). Otherwise it is hashed; if size and checksum match the source it
   is kept (and entered in the manifest), else it is removed and fetched again.
2. Bytes go to ``<key>.part``. An existing ``.part`` is continued only after its prefix is
   hashed; if the finished file then fails verification, the prefix was bad and the file
   is fetched again from byte 0 (not counted as a source mismatch).
3. Size and checksum (the source's algorithm, plus adler32 and md5 for the manifest and
   uploads) are computed while the bytes stream in. Only a verified file is renamed to its
   final name: a file that failed never exists under it.
4. Transient errors are retried with backoff and jitter (``ferry.core.retry``); a checksum
   mismatch from the source is retried once, then the file fails naming record, file,
   expected and actual values. Other files of the record go on.

The manifest is saved atomically, at most every ``MANIFEST_SAVE_INTERVAL`` seconds while a
record runs and once at its end, and only when something changed: a re-run of a complete
download reads no data file and writes nothing. A crash between saves only costs a
re-hash of the files the manifest missed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from download.base import ByteFetcher, Source
from download.manifest import META_DIR, Manifest, ManifestEntry, load_manifest
from download.sink import ByteBudget, FileSink, MemorySink, lanes_for, prefix_hashers, pwrite_all
from download.transport import Transport
from ferry.core.checksums import Checksum, MultiHasher
from ferry.core.config import Limits
from ferry.core.errors import ChecksumFormatError, FerryError, InputError, SourceError, VerificationError, is_retryable
from ferry.core.model import FileEntry, Record, inside, safe_relpath
from ferry.core.retry import RetryPolicy, request_policy, retry
from ferry.progress import NullProgress, ProgressSink
from stats.events import Event, StatsWriter

log = logging.getLogger(__name__)

# Computed for every file: adler32 for CERN, md5 for uploads (unless the Downloader is
# made with md5=False: md5 is then left to the upload, which computes it while sending).
BASE_ALGORITHMS = ("adler32", "md5")
MANIFEST_SAVE_INTERVAL = 2.0
RECORD_JSON = "record.json"
PART_SUFFIX = ".part"
# A "small" file fits in one read of ``limits.chunk_size`` (4 MiB): it is fetched into
# memory in that one read (no more memory than one chunk of a streamed file) and written
# only once verified. Fresh small files go to a worker thread in batches (see
# Downloader._batches): at most this many files or bytes per batch, so progress and stats
# stay fine-grained.
BATCH_FILES = 32
BATCH_BYTES = 4 * 1024 * 1024

FileStatus = Literal["ok", "failed", "skipped", "dry-run"]


@dataclass
class FileResult:
    key: str
    path: Path
    size: int | None
    status: FileStatus
    # fetched | resumed | refetched | trusted (manifest) | verified on disk |
    # plan: fetch | resume | check | skip | failed
    action: str
    checksums: dict[str, str] = field(default_factory=dict)
    bytes_transferred: int = 0
    attempts: int = 0
    error: FerryError | None = None

    @property
    def verified(self) -> bool:
        return self.status in ("ok", "skipped")


@dataclass
class RecordResult:
    recid: str
    record_dir: Path
    # Kept out of the repr: asyncio.run's exit path (CPython 3.11) reprs the main task's
    # result, which for 5,000 files cost 0.1 s of a 1.5 s run.
    files: list[FileResult] = field(default_factory=list, repr=False)
    error: FerryError | None = None  # the record as a whole failed (resolution, unsafe path...)
    record: Record | None = field(default=None, repr=False)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        good: tuple[str, ...] = ("dry-run",) if self.dry_run else ("ok", "skipped")
        return self.error is None and all(f.status in good for f in self.files)

    @property
    def failures(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def bytes_transferred(self) -> int:
        return sum(f.bytes_transferred for f in self.files)

    def error_lines(self) -> list[str]:
        """One line per failure, naming the record and the file."""
        lines = []
        if self.error is not None:
            err = self.error
            lines.append(str(err) if err.recid else f"record {self.recid}: {err}")
        for f in self.failures:
            err_text = str(f.error) if f.error is not None else "failed"
            if f.error is not None and f.error.recid and f.error.file:
                lines.append(err_text)
            else:
                lines.append(f"record {self.recid}, file {f.key}: {f.error.message if f.error else err_text}")
        return lines


retry_policy = request_policy  # the name the download side has used


def expected_checksum(entry: FileEntry) -> Checksum | None:
    """The source checksum to verify against (adler32 preferred when several are given)."""
    return entry.expected("adler32") or (entry.checksums[0] if entry.checksums else None)


def part_path(final: Path) -> Path:
    return final.with_name(final.name + PART_SUFFIX)


class _ResumedPrefixBad(Exception):
    """A resumed file failed verification: its old prefix was bad; start from byte 0."""


class Downloader:
    """Downloads records with bounded concurrency; one instance per run.

    ``limits.downloads`` files move at once (over all records), each with up to
    ``limits.chunks_in_flight`` reads of ``limits.chunk_size``; the chunk bytes held in
    memory are capped at ``chunks_in_flight x chunk_size`` in total (see ``ByteBudget``).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        limits: Limits | None = None,
        stats: StatsWriter | None = None,
        progress: ProgressSink | None = None,
        policy: RetryPolicy | None = None,
        executor: Executor | None = None,
        md5: bool = True,
    ) -> None:
        self.transport = transport
        self.limits = limits or Limits()
        self.stats = stats or StatsWriter(None)
        self.progress: ProgressSink = progress or NullProgress()
        self.policy = policy or retry_policy(self.limits)
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(
            max_workers=max(4, min(16, self.limits.downloads * 2)), thread_name_prefix="ferry-io"
        )
        self._slots = asyncio.Semaphore(self.limits.downloads)
        self._base_algorithms = tuple(a for a in BASE_ALGORITHMS if a != "md5" or md5)
        # One file's worth of reads in flight: md5 (one core) is the bottleneck of a single
        # stream, so more buffered chunks would only raise the RSS, not the speed.
        self._budget = ByteBudget(self.limits.chunks_in_flight * self.limits.chunk_size)

    async def close(self) -> None:
        await self.transport.close()
        if self._own_executor and isinstance(self.executor, ThreadPoolExecutor):
            self.executor.shutdown(wait=True)

    async def __aenter__(self) -> Downloader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- resolution ------------------------------------------------------------------------

    async def resolve(self, source: Source, recid: str) -> Record:
        """``source.resolve`` with a ``resolve`` stats event; errors name the recid."""
        event = self.stats.open("resolve", recid)
        try:
            record = await source.resolve(recid)
        except FerryError as exc:
            if exc.recid is None:
                exc.recid = recid
            event.close("failed", error=exc, attempts=exc.attempts)
            raise
        tries = getattr(source, "attempts", {}).get(recid, 1)
        event.close("ok", file_count=len(record.files), bytes=record.total_size, attempts=tries)
        return record

    async def fetch_record(
        self, source: Source, recid: str, dest: Path, *, dry_run: bool = False, verify_existing: bool = False
    ) -> RecordResult:
        """Resolve ``recid`` and download it; a resolution failure becomes the result's error."""
        record_dir = Path(dest) / "?"
        try:
            record_dir = Path(dest) / safe_relpath(str(recid).strip(), where=f"recid {recid!r}")
            record = await self.resolve(source, recid)
        except FerryError as exc:
            self.progress.record_finished(ok=False)
            return RecordResult(recid=recid, record_dir=record_dir, error=exc, dry_run=dry_run)
        return await self.download_record(record, dest, dry_run=dry_run, verify_existing=verify_existing)

    # --- one record ----------------------------------------------------------------------

    async def download_record(
        self, record: Record, dest: Path, *, dry_run: bool = False, verify_existing: bool = False
    ) -> RecordResult:
        """Download (or, with ``dry_run``, plan) every file of ``record`` into ``dest/<recid>/``."""
        record_dir = Path(dest) / safe_relpath(record.recid, where="recid")
        result = RecordResult(recid=record.recid, record_dir=record_dir, record=record, dry_run=dry_run)
        self.progress.add_totals(files=len(record.files), bytes=record.total_size)
        event = self.stats.open("download", record.recid, file_count=len(record.files), bytes=record.total_size)
        try:
            # One thread hop for the whole record: paths proven inside it, what is on disk.
            located = await asyncio.to_thread(_locate, record_dir, [f.key for f in record.files], record.recid)
            paths = [p for p, _ in located]
            manifest = await asyncio.to_thread(_read_manifest, record_dir, record.recid)
            if dry_run:
                result.files = [
                    self._plan(record, f, p, manifest, verify_existing)
                    for f, p in zip(record.files, paths, strict=True)
                ]
            else:
                await asyncio.to_thread(self._prepare_dir, record, record_dir)
                state = _ManifestState(manifest)
                batches, single = self._batches(record, located)
                tasks = [self._small_batch(record, batch, state) for batch in batches]
                tasks += [self._one(i, record, record.files[i], *located[i], state, verify_existing) for i in single]
                files: list[FileResult | None] = [None] * len(record.files)
                for done in await asyncio.gather(*tasks):
                    for i, file_result in done:
                        files[i] = file_result
                result.files = [f for f in files if f is not None]
                await state.flush(force=True)
        except Exception as raw:  # the record fails; the other records go on
            exc = as_ferry_error(raw)
            if exc.recid is None:
                exc.recid = record.recid
            result.error = exc
        status: FileStatus = "dry-run" if dry_run and result.ok else ("ok" if result.ok else "failed")
        first = result.error or next((f.error for f in result.failures if f.error is not None), None)
        event.close(
            status,
            error=first,
            bytes=result.bytes_transferred,
            reason=f"{len(result.failures)} of {len(result.files)} files failed" if result.failures else None,
        )
        self.progress.record_finished(ok=result.ok)
        return result

    @staticmethod
    def _prepare_dir(record: Record, record_dir: Path) -> None:
        """Create the record folder and keep the source record JSON next to the files
        (uploads need the metadata); rewritten only when it changed."""
        meta_dir = record_dir / META_DIR
        meta_dir.mkdir(parents=True, exist_ok=True)
        path = meta_dir / RECORD_JSON
        data = orjson.dumps(dict(record.metadata), option=orjson.OPT_INDENT_2)
        try:
            if path.read_bytes() == data:
                return
        except OSError:
            pass
        tmp = path.with_name(RECORD_JSON + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def _plan(
        self, record: Record, entry: FileEntry, final: Path, manifest: Manifest, verify_existing: bool
    ) -> FileResult:
        """What a real run would do with this file; reads only metadata, writes nothing."""
        part = part_path(final)
        action = "fetch"
        if final.is_file():
            fresh = manifest.fresh_entry(entry.key)
            action = "skip (verified before)" if fresh and not verify_existing and _matches(fresh, entry) else "check"
        elif part.is_file():
            action = f"resume from byte {part.stat().st_size}"
        if entry.availability != "online":
            action += f" [{entry.availability}: on tape]"
        status: FileStatus = "dry-run"
        self.stats.record("download", "dry-run", record.recid, entry.key, bytes=entry.size or 0, reason=action)
        return FileResult(key=entry.key, path=final, size=entry.size, status=status, action=action)

    # --- small fresh files, in batches ----------------------------------------------------------

    def _batches(self, record: Record, located: list[tuple[Path, _OnDisk]]) -> tuple[list[list[_Small]], list[int]]:
        """Split a record's files into batches of fresh small files and the rest (by index).

        Per-file overhead rules small files: each file on its own costs a task, a slot, a
        thread hop and a wake-up of the event loop (~0.3 ms of event-loop CPU, as much as
        fetching a 4 KiB file). A batch is one thread job fetching, verifying, writing and
        renaming its files in turn. Only files with nothing on disk (no final file, no
        ``.part``), a known size and a checksum in the record qualify, and only over a
        fetcher that can read a whole file in a blocking call (XRootD); anything unusual
        takes the one-file path with all its checks.
        """
        batches: list[list[_Small]] = []
        single: list[int] = []
        current: list[_Small] = []
        current_bytes = 0
        for i, (entry, (final, on_disk)) in enumerate(zip(record.files, located, strict=True)):
            expected = expected_checksum(entry)
            size = entry.size
            fresh = on_disk.final is None and on_disk.part_size is None
            if size is None or size > self.limits.chunk_size or expected is None or not fresh:
                single.append(i)
                continue
            url = self.transport.url_for(entry.uri)
            try:
                read = getattr(self.transport.fetcher_for(url), "read_whole_blocking", None)
            except SourceError:  # no way to fetch it: the one-file path fails this file alone
                read = None
            if read is None:
                single.append(i)
                continue
            if current and (len(current) >= BATCH_FILES or current_bytes + size > BATCH_BYTES):
                batches.append(current)
                current, current_bytes = [], 0
            current.append(_Small(i, entry, final, on_disk, url, read, size, expected))
            current_bytes += size
        if current:
            batches.append(current)
        return batches, single

    async def _small_batch(
        self, record: Record, batch: list[_Small], state: _ManifestState
    ) -> list[tuple[int, FileResult]]:
        """Fetch a batch of small files in one worker-thread job; files that did not verify
        or hit an error go on through the one-file path (retries, error reports), with the
        batch's try counted."""
        names = [f"{record.recid}/{item.entry.key}" for item in batch]
        async with self._slots:
            # One worker moves the batch's files one after another: one transfer, not N.
            self.progress.batch_started(names)
            # One file's bytes are held at a time: the batch weighs its largest file.
            taken = await self._budget.acquire(max(item.size for item in batch) + 1)
            try:
                loop = asyncio.get_running_loop()
                outcomes = await loop.run_in_executor(self.executor, self._fetch_batch_blocking, record.recid, batch)
            finally:
                self._budget.release(taken)
        out: list[tuple[int, FileResult]] = []
        retry_later: list[tuple[_Small, bool]] = []
        for item, name, outcome in zip(batch, names, outcomes, strict=True):
            if outcome.st is None:
                retry_later.append((item, outcome.mismatch))
                continue
            self.progress.advance(item.size)
            self.progress.file_finished(name, ok=True)
            state.put(
                ManifestEntry(
                    key=item.entry.key,
                    size=item.size,
                    mtime_ns=outcome.st.st_mtime_ns,
                    checksums=outcome.digests,
                    source_uri=item.entry.uri,
                    source_checksum=str(item.expected),
                )
            )
            out.append(
                (
                    item.index,
                    FileResult(
                        key=item.entry.key,
                        path=item.final,
                        size=item.size,
                        status="ok",
                        action="fetched",
                        checksums=outcome.digests,
                        bytes_transferred=item.size,
                        attempts=1,
                    ),
                )
            )
        await state.flush()
        again = [
            self._one(item.index, record, item.entry, item.final, item.on_disk, state, False, tried=(1, int(mismatch)))
            for item, mismatch in retry_later
        ]
        for done in await asyncio.gather(*again):
            out.extend(done)
        return out

    def _fetch_batch_blocking(self, recid: str, batch: list[_Small]) -> list[_Outcome]:
        """Blocking (a worker thread): each file of the batch read whole, verified, written as
        ``.part`` and renamed, in turn. A file that fails is left for the one-file path."""
        outcomes = []
        for item in batch:
            event: Event | _NoEvent = _NO_EVENT
            if self.stats.dir is not None:
                # The started row is written only if this try counts (see below).
                event = self.stats.open(
                    "download",
                    recid,
                    item.entry.key,
                    write_started=False,
                    bytes=item.size,
                    transfer=self.transport.protocol,
                )
            try:
                _, _, digests, st = _fetch_small(
                    item.read,
                    item.url,
                    part_path(item.final),
                    item.final,
                    self._algorithms(item.expected),
                    item.size,
                    item.expected,
                )
            except Exception as exc:  # whatever it is, the one-file path meets it again and reports it
                log.debug("record %s, file %s: batch try failed (%s); retrying it alone", recid, item.entry.key, exc)
                outcomes.append(_Outcome(None, {}, mismatch=False))
                continue  # no terminal row yet: the one-file path writes its own event
            if st is None:  # wrong size or checksum: a source mismatch, as on the one-file path
                outcomes.append(_Outcome(None, digests, mismatch=True))
                continue
            event.write_started()
            event.close("ok", bytes=item.size, attempts=1, reason="fetched")
            outcomes.append(_Outcome(st, digests, mismatch=False))
        return outcomes

    def _algorithms(self, expected: Checksum) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self._base_algorithms, expected.algorithm)))

    # --- one file --------------------------------------------------------------------------

    async def _one(
        self,
        index: int,
        record: Record,
        entry: FileEntry,
        final: Path,
        on_disk: _OnDisk,
        state: _ManifestState,
        verify_existing: bool,
        *,
        tried: tuple[int, int] = (0, 0),
    ) -> list[tuple[int, FileResult]]:
        return [(index, await self._file(record, entry, final, state, verify_existing, on_disk, tried=tried))]

    async def _file(
        self,
        record: Record,
        entry: FileEntry,
        final: Path,
        state: _ManifestState,
        verify_existing: bool,
        on_disk: _OnDisk,
        *,
        tried: tuple[int, int] = (0, 0),
    ) -> FileResult:
        async with self._slots:
            name = f"{record.recid}/{entry.key}"
            self.progress.file_started(name)
            event: Event | _NoEvent = _NO_EVENT
            if self.stats.dir is not None:  # building an unwritten event costs a uuid per file
                event = self.stats.open(
                    "download", record.recid, entry.key, bytes=entry.size or 0, transfer=self.transport.protocol
                )
            try:
                result = await self._file_inner(record, entry, final, state, verify_existing, on_disk, tried)
            except Exception as raw:  # one file's failure must not stop the others
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

    async def _file_inner(
        self,
        record: Record,
        entry: FileEntry,
        final: Path,
        state: _ManifestState,
        verify_existing: bool,
        on_disk: _OnDisk,
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
        algorithms = self._algorithms(expected)
        kept = await self._existing(entry, final, on_disk.final, state, algorithms, verify_existing, expected)
        if kept is not None:
            return kept
        part = part_path(final)
        # Small files are fetched into memory and verified before anything is written;
        # resuming them would save nothing.
        small = entry.size is not None and entry.size <= self.limits.chunk_size and on_disk.part_size is None

        attempts, mismatches = tried
        transferred = 0
        resumed_any = False
        refetched = False

        def retryable(exc: BaseException) -> bool:
            nonlocal mismatches
            if isinstance(exc, VerificationError):
                mismatches += 1
                return mismatches <= 1  # a source mismatch is retried once
            return is_retryable(exc)

        async def attempt() -> tuple[dict[str, str], int, os.stat_result | None]:
            nonlocal attempts, transferred, resumed_any, refetched
            attempts += 1
            if small:
                digests, size, moved, st = await self._transfer_small(url, fetcher, entry, part, final, algorithms)
                transferred += moved
                if st is None:
                    self._verify(entry, expected, digests, size, url, resumed=False)
                return digests, size, st
            for allow_resume in (True, False):
                try:
                    digests, size, moved, resumed = await self._transfer(
                        url, fetcher, entry, part, algorithms, allow_resume
                    )
                    transferred += moved
                    resumed_any = resumed_any or resumed
                    self._verify(entry, expected, digests, size, url, resumed=resumed)
                    return digests, size, None
                except _ResumedPrefixBad as why:
                    log.warning(
                        "record %s, file %s: the resumed .part did not verify (%s); fetching it again from byte 0",
                        record.recid,
                        entry.key,
                        why,
                    )
                    refetched = True
                    await asyncio.to_thread(part.unlink, missing_ok=True)
                except VerificationError:
                    await asyncio.to_thread(part.unlink, missing_ok=True)
                    raise
            raise AssertionError("unreachable: a fetch from byte 0 never raises _ResumedPrefixBad")

        try:
            digests, size, published = await retry(
                attempt, policy=self.policy, retryable=retryable, what=f"download {url}"
            )
        except FerryError as exc:
            exc.attempts = attempts
            exc.bytes_transferred = transferred
            if entry.availability != "online" and isinstance(exc, SourceError):
                exc.message += (
                    f" (the file is on tape, availability {entry.availability!r}: "
                    "ask the portal to stage it, then run again)"
                )
            raise
        st = published if published is not None else await asyncio.to_thread(_publish, part, final)
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
        action = "refetched" if refetched else ("resumed" if resumed_any else "fetched")
        return FileResult(
            key=entry.key,
            path=final,
            size=size,
            status="ok",
            action=action,
            checksums=digests,
            bytes_transferred=transferred,
            attempts=attempts,
        )

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

    async def _existing(
        self,
        entry: FileEntry,
        final: Path,
        st: os.stat_result | None,
        state: _ManifestState,
        algorithms: tuple[str, ...],
        verify_existing: bool,
        expected: Checksum,
    ) -> FileResult | None:
        """A result for a file already in place and verified, or None (after removing a bad one)."""
        if st is None:
            return None
        fresh = state.manifest.fresh_entry(entry.key)
        if fresh is not None and not verify_existing and _matches(fresh, entry):
            return FileResult(
                key=entry.key,
                path=final,
                size=fresh.size,
                status="skipped",
                action="trusted (manifest)",
                checksums=dict(fresh.checksums),
            )
        hashers = await prefix_hashers(str(final), st.st_size, lanes_for(algorithms), self.executor)
        digests: dict[str, str] = {}
        for h in hashers:
            digests.update(h.hexdigests())
        if (entry.size is None or st.st_size == entry.size) and digests.get(expected.algorithm) == expected.value:
            state.put(
                ManifestEntry(
                    key=entry.key,
                    size=st.st_size,
                    mtime_ns=st.st_mtime_ns,
                    checksums={a: digests[a] for a in algorithms},
                    source_uri=entry.uri,
                    source_checksum=str(expected),
                )
            )
            return FileResult(
                key=entry.key,
                path=final,
                size=st.st_size,
                status="skipped",
                action="verified on disk",
                checksums=digests,
            )
        log.warning(
            "%s: the file on disk does not match the source (size %d, %s:%s; expected %s, %s); fetching it again",
            final,
            st.st_size,
            expected.algorithm,
            digests.get(expected.algorithm),
            entry.size,
            expected,
        )
        await asyncio.to_thread(final.unlink, missing_ok=True)
        state.drop(entry.key)
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
        fd, start = await asyncio.to_thread(_open_part, part, entry.size if allow_resume else -1)
        try:
            hashers = await prefix_hashers(str(part), start, lanes, self.executor)
            sink = FileSink(
                fd,
                start=start,
                hashers=hashers,
                budget=self._budget,
                executor=self.executor,
                on_bytes=self.progress.advance,
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
            taken = await self._budget.acquire(entry.size + 1)
            try:
                loop = asyncio.get_running_loop()
                data_len, remote_size, digests, st = await loop.run_in_executor(
                    self.executor, _fetch_small, blocking, url, part, final, algorithms, entry.size, expected
                )
            except FerryError as exc:
                exc.bytes_transferred = 0
                raise
            finally:
                self._budget.release(taken)
            self.progress.advance(data_len)
            if data_len != remote_size:
                raise VerificationError(
                    f"got {data_len} bytes but the server says the file has {remote_size}",
                    expected=str(remote_size),
                    actual=str(data_len),
                )
            return digests, data_len, data_len, st
        sink = MemorySink(self._budget, on_bytes=self.progress.advance)
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
                _write_if_verified, part, final, data, algorithms, entry.size, expected
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


def as_ferry_error(exc: Exception) -> FerryError:
    """Local failures (disk full, permissions) as ferry errors, so they are reported per
    file/record like the rest; anything else unexpected is logged with its traceback."""
    if isinstance(exc, FerryError):
        return exc
    if isinstance(exc, OSError):
        err = FerryError(f"local I/O error: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}")
    else:
        log.error("unexpected error", exc_info=exc)
        err = FerryError(f"unexpected error: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


def _read_manifest(record_dir: Path, recid: str) -> Manifest:
    """The record's manifest; a corrupt one is only a lost cache: start empty (every file
    on disk is then re-hashed and re-verified) instead of failing the record."""
    try:
        return load_manifest(record_dir, recid)
    except InputError as exc:
        log.warning("%s; ignoring it, files on disk will be re-verified", exc)
        return Manifest(record_dir=record_dir, recid=recid)


class _NoEvent:
    """Stands in for a stats event when no stats are written."""

    def write_started(self) -> None:
        return None

    def close(self, status: str, **kwargs: Any) -> None:
        return None


_NO_EVENT = _NoEvent()


@dataclass(frozen=True)
class _OnDisk:
    final: os.stat_result | None  # the file under its final name, if any
    part_size: int | None  # size of its .part, if any


@dataclass(frozen=True)
class _Small:
    """A fresh small file of a batch, with what the worker thread needs to fetch it."""

    index: int  # in the record's file list
    entry: FileEntry
    final: Path
    on_disk: _OnDisk
    url: str
    read: Callable[[str, int], tuple[bytes, int]]
    size: int
    expected: Checksum


@dataclass(frozen=True)
class _Outcome:
    st: os.stat_result | None  # the final file's stat; None: not written
    digests: dict[str, str]
    mismatch: bool  # the bytes did not match the record's size/checksum


def _locate(record_dir: Path, keys: Sequence[str], recid: str) -> list[tuple[Path, _OnDisk]]:
    """For each key: its path, proven inside ``record_dir`` as ``ferry.core.model.inside`` does,
    and what is already on disk there (blocking; one call per record).

    ``inside`` resolves every path component (~0.1 ms a file: a tenth of the per-file
    cost for 4 KiB files); a key without folders only needs the folder resolved once and
    one ``lstat`` to see that the name itself is no symlink. Anything else takes ``inside``.
    """
    where = f"record {recid}"
    root = record_dir.resolve()
    out = []
    for key in keys:
        rel = safe_relpath(key, where=where)
        final = root / rel
        try:
            st: os.stat_result | None = os.lstat(final)
        except FileNotFoundError:
            st = None
        if "/" in rel or (st is not None and stat.S_ISLNK(st.st_mode)):
            final = inside(record_dir, key, where=where)
            try:
                st = final.stat()
            except FileNotFoundError:
                st = None
        try:
            part_size: int | None = os.stat(part_path(final)).st_size
        except FileNotFoundError:
            part_size = None
        out.append((final, _OnDisk(st, part_size)))
    return out


def _fetch_small(
    read: Callable[[str, int], tuple[bytes, int]],
    url: str,
    part: Path,
    final: Path,
    algorithms: tuple[str, ...],
    size: int,
    expected: Checksum | None,
) -> tuple[int, int, dict[str, str], os.stat_result | None]:
    """Blocking: read a small file whole, then ``_write_if_verified`` it. Returns (bytes
    read, remote size, digests, stat of the final file or None if nothing was written)."""
    data, remote_size = read(url, size)
    if len(data) != remote_size:
        return len(data), remote_size, {}, None
    digests, st = _write_if_verified(part, final, data, algorithms, size, expected)
    return len(data), remote_size, digests, st


# Creating and renaming files take the folder's lock in the kernel, which waiters spin on
# (rwsem optimistic spinning): 8 threads doing it at once in one folder burnt ~1.5 CPU-s
# per 5,000 files of the 2 cores. Taken in turn here, waiters sleep instead.
_DIR_LOCK = threading.Lock()


def _write_if_verified(
    part: Path,
    final: Path,
    data: bytes,
    algorithms: tuple[str, ...],
    size: int | None,
    expected: Checksum | None,
) -> tuple[dict[str, str], os.stat_result | None]:
    """Hash ``data``; only if it matches ``size``/``expected``, write it as ``part`` and
    rename it to ``final``. Nothing is written for bytes that do not verify."""
    hasher = MultiHasher(algorithms)
    hasher.update(data)
    digests = hasher.hexdigests()
    if (
        (size is not None and len(data) != size)
        or expected is None
        or digests.get(expected.algorithm) != expected.value
    ):
        return digests, None
    with _DIR_LOCK:
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:  # a key in a sub-folder: the folder comes first
            part.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            pwrite_all(fd, data, 0)
        finally:
            os.close(fd)
        return digests, _publish(part, final)


def _open_part(part: Path, resume_limit: int | None) -> tuple[int, int]:
    """Open ``part`` for writing (one thread hop: per-file overhead matters for small files).

    Keeps its bytes when ``resume_limit`` allows (None: any length; -1: never; n: at most
    n bytes, since a longer .part cannot be a prefix). Returns (fd, bytes kept).
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        if resume_limit is not None and (resume_limit < 0 or start > resume_limit):
            start = 0
        os.ftruncate(fd, start)
    except BaseException:
        os.close(fd)
        raise
    return fd, start


def _publish(part: Path, final: Path) -> os.stat_result:
    """Give a verified file its final name; return its stat for the manifest."""
    os.replace(part, final)
    return final.stat()


def _matches(entry: ManifestEntry, file: FileEntry) -> bool:
    """A manifest entry still describes what the source lists (same size and checksum)."""
    expected = expected_checksum(file)
    if file.size is not None and entry.size != file.size:
        return False
    return expected is not None and entry.checksums.get(expected.algorithm) == expected.value


class _ManifestState:
    """The record's manifest while files finish concurrently: saved in a thread, at most
    every ``MANIFEST_SAVE_INTERVAL`` seconds, from a snapshot (no torn dicts)."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.dirty = False
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    def put(self, entry: ManifestEntry) -> None:
        if self.manifest.entries.get(entry.key) != entry:  # re-verified and unchanged: no write
            self.manifest.put(entry)
            self.dirty = True

    def drop(self, key: str) -> None:
        if key in self.manifest.entries:
            self.manifest.drop(key)
            self.dirty = True

    async def flush(self, *, force: bool = False) -> None:
        if not self.dirty or (not force and time.monotonic() - self._last < MANIFEST_SAVE_INTERVAL):
            return
        async with self._lock:
            if not self.dirty:
                return
            self.dirty = False
            self._last = time.monotonic()
            m = self.manifest
            snapshot = Manifest(record_dir=m.record_dir, recid=m.recid, entries=dict(m.entries), extra=dict(m.extra))
            try:
                await asyncio.to_thread(snapshot.save)
            except OSError as exc:
                self.dirty = True  # tried again at the next flush; the files stay verified
                if force:
                    raise FerryError(f"cannot save the manifest {m.path}: {exc}", recid=m.recid) from exc
                log.warning("cannot save the manifest %s yet: %s", m.path, exc)


async def download_records(
    downloader: Downloader,
    source: Source,
    recids: Sequence[str],
    dest: Path,
    *,
    dry_run: bool = False,
    verify_existing: bool = False,
    records_in_flight: int | None = None,
) -> list[RecordResult]:
    """Resolve and download several records, ``records_in_flight`` at a time; in input order."""
    slots = asyncio.Semaphore(records_in_flight or downloader.limits.records_in_flight)
    downloader.progress.add_totals(records=len(recids))

    async def one(recid: str) -> RecordResult:
        async with slots:
            return await downloader.fetch_record(source, recid, dest, dry_run=dry_run, verify_existing=verify_existing)

    return list(await asyncio.gather(*(one(r) for r in recids)))
