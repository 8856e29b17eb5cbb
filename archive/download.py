"""`ferry archive download NAME REV DIR --from ARCHIVE`: the manifest drives everything.

The manifest is fetched first (an incomplete revision, one without it, is refused) and
written to DIR. A local file that matches its row is kept: known from the local state by
(size, mtime_ns, inode), hashed once when unknown (``verify_existing``: always). Missing
or mismatching files are fetched into ``DIR/.ferry/parts/`` (``part_name``: the sha256
and a hash of the path, one part per row), hashed while they stream, and renamed into
place only when size and sha256 match; a part left by a kill is resumed from its end
after its prefix is hashed again. Manifest rows the archive lacks, and objects it holds
that the manifest does not list, are reported. Re-running on a complete download reads
no file and fetches nothing: once every file is in place and recorded, the revision is
marked complete (``archive.rerun``) and the next run checks the marker and the files'
stats without asking the archive anything.

Durability: a file is renamed into place only after its size and sha256 match, so a kill
-9 never leaves a wrong file under a manifest name (the page cache survives a kill). A
power cut can, for bytes not yet on disk; what guards against it is the state: a fetched
file is recorded there (and so trusted later without hashing) as durable only after a
sync of the file system that began after the file was closed, and until then as unsynced,
trusted only until the machine reboots (``archive.durability``); ``sync`` (``--sync``)
makes the run wait for the disk instead. A file placed but not yet recorded when the run
dies is simply hashed by the next run.

Off the event loop: the writes, hashes and renames run in ``archive.writer``'s threads;
paths are proved inside DIR by ``archive.placing``; object reads take the S3 client's
short GET path (``upload.targets.s3_get``).

Why one module of about 420 lines: the download's order (open the revision, decide what
to fetch, fetch, check the whole, mark complete) is one promise, read together; the
manifest, store, hashing, durability, placing, writer threads and the re-run check live
in their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from archive.build import digest_files
from archive.durability import Durable, start_writeback
from archive.hashing import Hooks
from archive.manifest import MANIFEST_NAME, Manifest, ManifestRow
from archive.names import revision_id
from archive.placing import Placer
from archive.rerun import DownloadResult, forget_complete, mark_complete
from archive.store import fetch_manifest, listing, reader
from archive.writer import Writers
from ferry.core.atomic import atomic_write_bytes
from ferry.core.checksums import MultiHasher, hash_file
from ferry.core.errors import FerryError, InputError, VerificationError
from ferry.core.tree import STATE_DIR, FileStat, ScanOptions, scan_tree
from ferry.core.tree_state import TreeState
from ferry.progress import ProgressSink
from stats.events import StatsWriter
from upload.targets.base import RemoteRecord, Target

log = logging.getLogger(__name__)

__all__ = ["DownloadResult", "download_revision"]

PARTS = "parts"
# Bytes gathered from the stream before one thread hop writes and hashes them: S3 bodies
# come in ~64 KiB pieces, and a hop per piece cost more of the loop than the reading.
# A file no larger than this is gathered whole and written, hashed and placed in one hop.
WRITE_BATCH = 1024 * 1024


async def download_revision(
    target: Target,
    name: str,
    rev: str,
    root: Path,
    *,
    jobs: int = 4,
    verify_existing: bool = False,
    hooks: Hooks | None = None,
    progress: ProgressSink | None = None,
    stats: StatsWriter | None = None,
    archive_key: str | None = None,
    sync: bool = False,
) -> DownloadResult:
    """``archive_key``: what names the archive in the completion marker (see
    ``archive.rerun.archive_key``); None: the target's name. ``sync``: wait until every
    fetched file is on disk before returning (``archive.durability``)."""
    recid = revision_id(name, rev)
    await asyncio.to_thread(forget_complete, root)
    rec, remote, manifest, manifest_bytes = await _open_revision(target, name, rev, root)
    result = DownloadResult(recid, files=len(manifest))
    result.unlisted_in_archive = sorted(k for k in remote if k not in manifest and k != MANIFEST_NAME)
    absent = {r.path for r in manifest if r.path not in remote}
    result.missing_in_archive = [r.path for r in manifest if r.path in absent]

    with TreeState.for_tree(root) as state:
        expected: dict[str, FileStat] = {}  # path -> the stat of the verified file, as last seen
        todo = await _to_fetch(
            root, manifest, state, result, absent, expected, verify_existing=verify_existing, hooks=hooks
        )
        if progress is not None:
            progress.add_totals(records=1, files=len(todo), bytes=sum(r.size for r in todo))
        durable = Durable(state, root, wait=sync)
        gate = asyncio.Semaphore(max(1, jobs))
        placer = Placer(root, f"manifest of {recid}")
        await asyncio.to_thread((root / STATE_DIR / PARTS).mkdir, parents=True, exist_ok=True)
        syncer = asyncio.create_task(durable.run())
        try:
            async with Writers() as writers:
                run = _Fetches(target, rec, placer, writers, durable, result, progress, stats, gate, expected)
                # Largest first: the big files stream side by side with the small ones instead
                # of after them, when most slots would already be idle.
                await asyncio.gather(*(run.one(r) for r in sorted(todo, key=lambda r: r.size, reverse=True)))
        finally:
            await durable.close(syncer)
        state.save()
        if result.ok:
            await asyncio.to_thread(_check_whole, root, manifest, expected, result)
        if result.ok:
            # Every row is now on disk and in the state with its sha256 (kept ones were
            # looked up or hashed, fetched ones recorded after a sync): the whole revision
            # is verified, and a re-run may trust it from the files' stats alone.
            await asyncio.to_thread(
                mark_complete,
                root,
                archive_key if archive_key is not None else target.name,
                recid,
                manifest_bytes,
                result.unlisted_in_archive,
            )
    if progress is not None:
        progress.record_finished(ok=result.ok)
    result.fetched.sort()
    return result


async def _open_revision(
    target: Target, name: str, rev: str, root: Path
) -> tuple[RemoteRecord, dict[str, int], Manifest, bytes]:
    """The revision's record, what the archive holds of it (key -> size: the manifest
    carries the checksums, so no file's are asked for), and its manifest (also written to
    ``root``); an unknown or incomplete revision is refused."""
    recid = revision_id(name, rev)
    reader(target, target.name)
    rec = await target.find(recid, recid)
    if rec is None:
        raise InputError(f"the archive has no revision {rev!r} of dataset {name!r}")
    remote, listed = await listing(target, rec, MANIFEST_NAME)
    if listed is None or not listed.completed:
        raise InputError(
            f"revision {recid} is incomplete in the archive (no manifest yet): its upload has not finished"
        )
    data, manifest = await fetch_manifest(target, rec, listed)
    # The temporary file lives in the state folder: a kill -9 before the rename must not
    # leave a stray file in the user's tree (the kill matrix found one there).
    await asyncio.to_thread(atomic_write_bytes, root / MANIFEST_NAME, data, tmp_dir=root / STATE_DIR / "tmp")
    return rec, remote, manifest, data


async def _to_fetch(
    root: Path,
    manifest: Manifest,
    state: TreeState,
    result: DownloadResult,
    absent: set[str],
    expected: dict[str, FileStat],
    *,
    verify_existing: bool,
    hooks: Hooks | None,
) -> list[ManifestRow]:
    """The rows to fetch: not on disk with their sha256 (known from the state or hashed
    once), and held by the archive. Counts the kept ones in ``result``."""
    local = await asyncio.to_thread(scan_tree, root, ScanOptions(include_dotfiles=True))
    present = {f.path: f for f in local}
    result.local_extra = [f.path for f in local if f.path not in manifest]
    same_size = [present[r.path] for r in manifest if r.path in present and present[r.path].stat.size == r.size]
    digest = await asyncio.to_thread(digest_files, same_size, state, rehash=verify_existing, hooks=hooks)
    result.hashed_local = digest.hashed_files
    todo: list[ManifestRow] = []
    for row in manifest:
        known = digest.checksums.get(row.path)
        if known is not None and known["sha256"] == row.sha256:
            result.kept += 1
            expected[row.path] = present[row.path].stat
        elif row.path not in absent:
            todo.append(row)
    return todo


@dataclass
class _Fetches:
    """The files of one revision download, ``gate`` at a time."""

    target: Target
    rec: RemoteRecord
    placer: Placer
    writers: Writers
    durable: Durable
    result: DownloadResult
    progress: ProgressSink | None
    stats: StatsWriter | None
    gate: asyncio.Semaphore
    expected: dict[str, FileStat]

    async def one(self, row: ManifestRow) -> None:
        async with self.gate:
            event = self.stats.open("download", self.rec.recid, row.path, bytes=row.size) if self.stats else None
            if self.progress is not None:
                self.progress.file_started(row.path)
            try:
                st = await _fetch(
                    self.target, self.rec, self.placer, self.writers, row, self.progress, self.durable.wait
                )
            except FerryError as exc:  # one file's failure never stops the others
                self.result.failed[row.path] = str(exc)
                if event:
                    event.close("failed", error=exc)
                if self.progress is not None:
                    self.progress.file_finished(row.path, ok=False)
                return
            self.durable.placed(row.path, st, row.sha256)
            self.expected[row.path] = st
            self.result.fetched.append(row.path)
            if event:
                event.close("ok")
            if self.progress is not None:
                self.progress.file_finished(row.path, ok=True)


def _check_whole(root: Path, manifest: Manifest, expected: dict[str, FileStat], result: DownloadResult) -> None:
    """The result as a whole: every row on disk as it was when verified (kept ones when
    found, fetched ones when placed). A file replaced or edited meanwhile by someone else
    fails the run (not marked complete) rather than being reported as verified. Stats
    only: the bytes were checked once, by hashing or while they streamed."""
    for row in manifest:
        want = expected.get(row.path)
        try:
            now = FileStat.of(os.stat(root / row.path))
        except OSError:
            now = None
        if want is None or now != want:
            result.failed[row.path] = "changed or removed in the folder while the download ran"


async def _fetch(
    target: Target,
    rec: RemoteRecord,
    placer: Placer,
    writers: Writers,
    row: ManifestRow,
    progress: ProgressSink | None,
    writeback: bool,
) -> FileStat:
    part = placer.root / STATE_DIR / PARTS / part_name(row)
    # Thread hops are per file (1,000 small files are 1,000 GETs): one to open (or resume)
    # the .part, one per WRITE_BATCH of a large file, and one to finish (write the rest,
    # close, check, place); a small file gets one: write, check and place it.
    if 0 < row.size <= WRITE_BATCH:
        # Nothing worth resuming: a part a kill left is overwritten whole.
        return await _fetch_small(target, rec, row, part, placer, writers, progress)
    hasher, offset, fh = await writers.run(_open_part, part, row.size)
    batch: list[bytes] = []
    # One batch is written and hashed while the next one arrives, so the connection is not
    # idle while a batch is written (alone this made no clear difference: two 500 MiB files
    # took 2.3-3.6 s against 2.7-3.1 s; the last sync was what held them, see
    # archive.durability). At most two batches of a file are held. Shielded, so that a
    # cancel never leaves the thread writing into a file this coroutine has closed.
    writing: asyncio.Future[None] | None = None
    try:
        batched = 0
        # A killed run may leave a whole part (all bytes written, not yet placed): nothing
        # is left to ask for (a Range from the end is a 416 on S3); its sha256 decides below.
        wanted = reader(target, target.name).read_file(rec, row.path, start=offset) if offset < row.size else _nothing()
        async with contextlib.aclosing(wanted) as chunks:
            async for chunk in chunks:
                offset += len(chunk)
                if offset > row.size:
                    break  # longer than the manifest says: refused below
                batch.append(chunk)
                batched += len(chunk)
                if batched >= WRITE_BATCH:
                    if writing is not None:
                        await asyncio.shield(writing)
                    writing = writers.run(_write, fh, hasher, batch, writeback)
                    batch, batched = [], 0
                if progress is not None:
                    progress.advance(len(chunk))
        if writing is not None:
            await asyncio.shield(writing)
    except BaseException:
        if writing is None or writing.done():
            fh.close()
        else:  # closed once the thread is done with it
            writing.add_done_callback(lambda _: fh.close())
        raise
    return await writers.run(_finish, fh, hasher, batch, writeback, offset, part, placer, row, rec.recid)


def part_name(row: ManifestRow) -> str:
    """Stable across runs (a killed run's part is found again), and one per path: two rows
    with the same bytes (duplicate files, empty ones) must not share a part."""
    where = hashlib.sha256(row.path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{row.sha256}-{where}.part"


async def _fetch_small(
    target: Target,
    rec: RemoteRecord,
    row: ManifestRow,
    part: Path,
    placer: Placer,
    writers: Writers,
    progress: ProgressSink | None,
) -> FileStat:
    chunks: list[bytes] = []
    got = 0
    async with contextlib.aclosing(reader(target, target.name).read_file(rec, row.path)) as stream:
        async for chunk in stream:
            got += len(chunk)
            if got > row.size:
                break  # longer than the manifest says: refused below
            chunks.append(chunk)
            if progress is not None:
                progress.advance(len(chunk))
    return await writers.run(_write_small, chunks, got, part, placer, row, rec.recid)


def _write_small(chunks: list[bytes], got: int, part: Path, placer: Placer, row: ManifestRow, recid: str) -> FileStat:
    """A whole small file: hashed, written, checked and placed in this one thread hop, with
    as few calls as it takes (each call here waits for the GIL the event loop holds)."""
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    sha256 = hashlib.sha256(data).hexdigest()
    if got != row.size or sha256 != row.sha256:
        part.unlink(missing_ok=True)  # a killed run's part of this name is no use either
        raise _mismatch(got, sha256, row, recid)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        st = FileStat.of(os.fstat(fd))
    finally:
        os.close(fd)
    placer.place(part, row.path)
    return st


def _finish(
    fh: BinaryIO,
    hasher: MultiHasher,
    batch: list[bytes],
    writeback: bool,
    offset: int,
    part: Path,
    placer: Placer,
    row: ManifestRow,
    recid: str,
) -> FileStat:
    """Write the last bytes, then place the file if it is the one the manifest lists (else
    drop the .part: the next try starts from nothing). No fsync: see the module doc."""
    try:
        _write(fh, hasher, batch, writeback)
    finally:
        fh.close()
    return _check_and_place(hasher, offset, part, placer, row, recid)


def _check_and_place(
    hasher: MultiHasher, offset: int, part: Path, placer: Placer, row: ManifestRow, recid: str
) -> FileStat:
    sha256 = hasher.hexdigests()["sha256"]
    if offset != row.size or sha256 != row.sha256:
        part.unlink(missing_ok=True)
        raise _mismatch(offset, sha256, row, recid)
    st = FileStat.of(part.stat())
    # In the worker thread, just before the rename: on the loop the path checks of
    # 1,000 files took 0.3 s of the loop (profiled).
    placer.place(part, row.path)
    return st


def _mismatch(got: int, sha256: str, row: ManifestRow, recid: str) -> VerificationError:
    what = f"{got} bytes" if got != row.size else f"sha256 {sha256}"
    return VerificationError(
        f"fetched {what}, the manifest says {row.size} bytes with sha256 {row.sha256}", recid=recid, file=row.path
    )


async def _nothing() -> AsyncGenerator[bytes, None]:
    return
    yield b""  # an async generator with no items


def _open_part(part: Path, size: int) -> tuple[MultiHasher, int, BinaryIO]:
    """The .part opened for appending, with the sha256 and length of the prefix a killed
    run left; a part longer than the file is dropped."""
    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        have = part.stat().st_size
    except FileNotFoundError:
        have = 0
    if have > size:
        part.unlink()
        have = 0
    hasher = hash_file(str(part), ("sha256",)) if have else MultiHasher(("sha256",))
    return hasher, have, open(part, "ab")  # closed by _finish, or by _fetch on a failure


def _write(fh: BinaryIO, hasher: MultiHasher, chunks: list[bytes], writeback: bool) -> None:
    # One write and one hash of the whole batch, not one per ~64 KiB piece: each of those
    # calls lets go of the GIL and takes it back, and with the event loop and other
    # writers waiting for it, every hand-over is a futex call (190,000 of them in one
    # download of 1,002 files, strace -c). The join copies the batch once, in this thread.
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if data:
        fh.write(data)
        hasher.update(data)
        fh.flush()
        if writeback:  # only when the run waits for the disk at its end (archive.durability)
            start_writeback(fh.fileno())
