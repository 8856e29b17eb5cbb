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
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

from download.base import Source
from download.batches import BATCH_BYTES, BATCH_FILES, SmallBatches
from download.disk import (
    MANIFEST_SAVE_INTERVAL,
    PART_SUFFIX,
    RECORD_JSON,
    ManifestState,
    OnDisk,
    expected_checksum,
    locate,
    manifest_matches,
    part_path,
    prepare_dir,
    read_manifest,
)
from download.file_transfer import BASE_ALGORITHMS, FileTransfers
from download.manifest import Manifest
from download.part_mark import read_mark
from download.results import FileResult, FileStatus, RecordResult, as_ferry_error
from download.sources import staging_name
from download.transport import Transport
from ferry.core.config import Limits
from ferry.core.errors import FerryError
from ferry.core.model import FileEntry, Record, safe_relpath
from ferry.core.retry import RetryPolicy, request_policy
from ferry.progress import NullProgress, ProgressSink
from stats.events import StatsWriter

# Names other modules and tests import from here (they moved in the split).
__all__ = [
    "BASE_ALGORITHMS",
    "BATCH_BYTES",
    "BATCH_FILES",
    "MANIFEST_SAVE_INTERVAL",
    "PART_SUFFIX",
    "RECORD_JSON",
    "Downloader",
    "FileResult",
    "FileStatus",
    "RecordResult",
    "as_ferry_error",
    "download_records",
    "expected_checksum",
    "part_path",
    "retry_policy",
]

retry_policy = request_policy  # the name the download side has used


class Downloader:
    """Downloads records with bounded concurrency; one instance per run.

    ``limits.downloads`` files move at once (over all records), each with up to
    ``limits.chunks_in_flight`` reads of ``limits.chunk_size``; the chunk bytes held in
    memory are capped at ``chunks_in_flight x chunk_size`` in total (see ``ByteBudget``).
    One file is ``download.file_transfer``; small fresh files go in ``download.batches``.
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
        self._files = FileTransfers(
            transport,
            limits=self.limits,
            stats=self.stats,
            progress=self.progress,
            policy=self.policy,
            executor=self.executor,
            md5=md5,
        )
        self._batches = SmallBatches(self._files)

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
        record_dir = Path(dest) / safe_relpath(staging_name(record), where="recid")  # per source
        result = RecordResult(recid=record.recid, record_dir=record_dir, record=record, dry_run=dry_run)
        self.progress.add_totals(files=len(record.files), bytes=record.total_size)
        event = self.stats.open("download", record.recid, file_count=len(record.files), bytes=record.total_size)
        try:
            # One thread hop for the whole record: paths proven inside it, what is on disk.
            located = await asyncio.to_thread(locate, record_dir, [f.key for f in record.files], record.recid)
            paths = [p for p, _ in located]
            manifest = await asyncio.to_thread(read_manifest, record_dir, record.recid)
            if dry_run:
                result.files = [
                    self._plan(record, f, p, manifest, verify_existing)
                    for f, p in zip(record.files, paths, strict=True)
                ]
            else:
                await asyncio.to_thread(prepare_dir, record, record_dir)
                state = ManifestState(manifest)
                batches, single = self._batches.split(record, located)
                tasks = [self._batches.run(record, batch, state) for batch in batches]
                tasks += [self._one(i, record, record.files[i], *located[i], state, verify_existing) for i in single]
                files: list[FileResult | None] = [None] * len(record.files)
                for done in await asyncio.gather(*tasks):
                    for i, file_result in done:
                        files[i] = file_result
                result.files = [f for f in files if f is not None]
                await state.flush(force=True)
        except Exception as raw:  # noqa: BLE001 - the record fails and is reported; the other records go on
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

    def _plan(
        self, record: Record, entry: FileEntry, final: Path, manifest: Manifest, verify_existing: bool
    ) -> FileResult:
        """What a real run would do with this file; reads only metadata, writes nothing."""
        part = part_path(final)
        action = "fetch"
        if final.is_file():
            fresh = manifest.fresh_entry(entry.key)
            action = (
                "skip (verified before)"
                if fresh and not verify_existing and manifest_matches(fresh, entry)
                else "check"
            )
        elif part.is_file():
            size, mark = part.stat().st_size, read_mark(part)  # never past the prefix written in order
            action = f"resume from byte {size if mark is None else min(size, mark)}"
        if entry.availability != "online":
            action += f" [{entry.availability}: on tape]"
        status: FileStatus = "dry-run"
        self.stats.record("download", "dry-run", record.recid, entry.key, bytes=entry.size or 0, reason=action)
        return FileResult(key=entry.key, path=final, size=entry.size, status=status, action=action)

    async def _one(
        self,
        index: int,
        record: Record,
        entry: FileEntry,
        final: Path,
        on_disk: OnDisk,
        state: ManifestState,
        verify_existing: bool,
        *,
        tried: tuple[int, int] = (0, 0),
    ) -> list[tuple[int, FileResult]]:
        return [(index, await self._files.run(record, entry, final, state, verify_existing, on_disk, tried=tried))]


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
