"""Small fresh files of a record, fetched in batches: one worker-thread job for many files.

Per-file overhead rules small files (see ``SmallBatches.split``). A file of a batch that
does not verify or meets an error is handed to the one-file path
(``download.file_transfer``), which retries and reports it with the batch's try counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from download.disk import ManifestState, OnDisk, expected_checksum, fetch_small, part_path
from download.file_transfer import FileTransfers
from download.manifest import ManifestEntry
from download.results import NO_EVENT, FileResult, NoEvent
from ferry.core.checksums import Checksum
from ferry.core.errors import SourceError
from ferry.core.model import FileEntry, Record
from stats.events import Event

log = logging.getLogger(__name__)

# A "small" file fits in one read of ``limits.chunk_size`` (4 MiB): it is fetched into
# memory in that one read (no more memory than one chunk of a streamed file) and written
# only once verified. Fresh small files go to a worker thread in batches (see
# Downloader._batches): at most this many files or bytes per batch, so progress and stats
# stay fine-grained.
BATCH_FILES = 32
BATCH_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class SmallFile:
    """A fresh small file of a batch, with what the worker thread needs to fetch it."""

    index: int  # in the record's file list
    entry: FileEntry
    final: Path
    on_disk: OnDisk
    url: str
    read: Callable[[str, int], tuple[bytes, int]]
    size: int
    expected: Checksum


@dataclass(frozen=True)
class BatchOutcome:
    st: os.stat_result | None  # the final file's stat; None: not written
    digests: dict[str, str]
    mismatch: bool  # the bytes did not match the record's size/checksum


class SmallBatches:
    """Splits a record's files into batches and fetches them; shares the run's ``FileTransfers``."""

    def __init__(self, files: FileTransfers) -> None:
        self.files = files

    def split(self, record: Record, located: list[tuple[Path, OnDisk]]) -> tuple[list[list[SmallFile]], list[int]]:
        """Split a record's files into batches of fresh small files and the rest (by index).

        Per-file overhead rules small files: each file on its own costs a task, a slot, a
        thread hop and a wake-up of the event loop (~0.3 ms of event-loop CPU, as much as
        fetching a 4 KiB file). A batch is one thread job fetching, verifying, writing and
        renaming its files in turn. Only files with nothing on disk (no final file, no
        ``.part``), a known size and a checksum in the record qualify, and only over a
        fetcher that can read a whole file in a blocking call (XRootD); anything unusual
        takes the one-file path with all its checks.
        """
        batches: list[list[SmallFile]] = []
        single: list[int] = []
        current: list[SmallFile] = []
        current_bytes = 0
        for i, (entry, (final, on_disk)) in enumerate(zip(record.files, located, strict=True)):
            expected = expected_checksum(entry)
            size = entry.size
            fresh = on_disk.final is None and on_disk.part_size is None
            if size is None or size > self.files.limits.chunk_size or expected is None or not fresh:
                single.append(i)
                continue
            url = self.files.transport.url_for(entry.uri)
            try:
                read = getattr(self.files.transport.fetcher_for(url), "read_whole_blocking", None)
            except SourceError:  # no way to fetch it: the one-file path fails this file alone
                read = None
            if read is None:
                single.append(i)
                continue
            if current and (len(current) >= BATCH_FILES or current_bytes + size > BATCH_BYTES):
                batches.append(current)
                current, current_bytes = [], 0
            current.append(SmallFile(i, entry, final, on_disk, url, read, size, expected))
            current_bytes += size
        if current:
            batches.append(current)
        return batches, single

    async def run(self, record: Record, batch: list[SmallFile], state: ManifestState) -> list[tuple[int, FileResult]]:
        """Fetch a batch of small files in one worker-thread job; files that did not verify
        or hit an error go on through the one-file path (retries, error reports), with the
        batch's try counted."""
        names = [f"{record.recid}/{item.entry.key}" for item in batch]
        async with self.files.slots:
            # One worker moves the batch's files one after another: one transfer, not N.
            self.files.progress.batch_started(names)
            # One file's bytes are held at a time: the batch weighs its largest file.
            taken = await self.files.budget.acquire(max(item.size for item in batch) + 1)
            try:
                loop = asyncio.get_running_loop()
                outcomes = await loop.run_in_executor(self.files.executor, self._fetch_blocking, record.recid, batch)
            finally:
                self.files.budget.release(taken)
        out: list[tuple[int, FileResult]] = []
        retry_later: list[tuple[SmallFile, bool]] = []
        for item, name, outcome in zip(batch, names, outcomes, strict=True):
            if outcome.st is None:
                retry_later.append((item, outcome.mismatch))
                continue
            self.files.progress.advance(item.size)
            self.files.progress.file_finished(name, ok=True)
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
            self.files.run(record, item.entry, item.final, state, False, item.on_disk, tried=(1, int(mismatch)))
            for item, mismatch in retry_later
        ]
        results = await asyncio.gather(*again)
        out.extend((item.index, result) for (item, _), result in zip(retry_later, results, strict=True))
        return out

    def _fetch_blocking(self, recid: str, batch: list[SmallFile]) -> list[BatchOutcome]:
        """Blocking (a worker thread): each file of the batch read whole, verified, written as
        ``.part`` and renamed, in turn. A file that fails is left for the one-file path."""
        outcomes = []
        for item in batch:
            event: Event | NoEvent = NO_EVENT
            if self.files.stats.dir is not None:
                # The started row is written only if this try counts (see below).
                event = self.files.stats.open(
                    "download",
                    recid,
                    item.entry.key,
                    write_started=False,
                    bytes=item.size,
                    transfer=self.files.transport.protocol,
                )
            try:
                _, _, digests, st = fetch_small(
                    item.read,
                    item.url,
                    part_path(item.final),
                    item.final,
                    self.files.algorithms(item.expected),
                    item.size,
                    item.expected,
                )
            except Exception as exc:  # noqa: BLE001 - whatever it is, the one-file path meets it again and reports it
                log.debug("record %s, file %s: batch try failed (%s); retrying it alone", recid, item.entry.key, exc)
                outcomes.append(BatchOutcome(None, {}, mismatch=False))
                continue  # no terminal row yet: the one-file path writes its own event
            if st is None:  # wrong size or checksum: a source mismatch, as on the one-file path
                outcomes.append(BatchOutcome(None, digests, mismatch=True))
                continue
            event.write_started()
            event.close("ok", bytes=item.size, attempts=1, reason="fetched")
            outcomes.append(BatchOutcome(st, digests, mismatch=False))
        return outcomes
