"""`ferry archive download NAME REV DIR --from ARCHIVE`: the manifest drives everything.

The manifest is fetched first (an incomplete revision, one without it, is refused) and
written to DIR. A local file that matches its row is kept: known from the local state by
(size, mtime_ns, inode), hashed once when unknown (``verify_existing``: always). Missing
or mismatching files are fetched into ``DIR/.ferry/parts/<sha256>.part``, hashed while
they stream, and renamed into place only when size and sha256 match; a part left by a
kill is resumed from its end after its prefix is hashed again. Manifest rows the archive
lacks, and objects it holds that the manifest does not list, are reported. Re-running on
a complete download reads no file and fetches nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from archive.build import digest_files
from archive.hashing import Hooks
from archive.manifest import MANIFEST_NAME, Manifest, ManifestRow
from archive.store import fetch_manifest, listing, reader, revision_id
from ferry.core.atomic import atomic_write_bytes, fsync_dir
from ferry.core.checksums import MultiHasher, hash_file
from ferry.core.errors import FerryError, InputError, VerificationError
from ferry.core.model import inside
from ferry.core.tree import STATE_DIR, FileStat, ScanOptions, scan_tree
from ferry.core.tree_state import TreeState
from ferry.progress import ProgressSink
from stats.events import StatsWriter
from upload.targets.base import RemoteRecord, Target

log = logging.getLogger(__name__)

PARTS = "parts"
# Bytes gathered from the stream before one thread hop writes and hashes them: S3 bodies
# come in ~64 KiB pieces, and a hop per piece cost more of the loop than the reading.
WRITE_BATCH = 1024 * 1024


@dataclass
class DownloadResult:
    revision: str
    files: int = 0
    kept: int = 0
    fetched: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    missing_in_archive: list[str] = field(default_factory=list)
    unlisted_in_archive: list[str] = field(default_factory=list)
    local_extra: list[str] = field(default_factory=list)
    hashed_local: int = 0

    @property
    def ok(self) -> bool:
        return not (self.failed or self.missing_in_archive)


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
) -> DownloadResult:
    recid = revision_id(name, rev)
    rec, remote, manifest = await _open_revision(target, name, rev, root)
    result = DownloadResult(recid, files=len(manifest))
    result.unlisted_in_archive = sorted(k for k in remote if k not in manifest and k != MANIFEST_NAME)
    result.missing_in_archive = [r.path for r in manifest if r.path not in remote]

    with TreeState.for_tree(root) as state:
        todo = await _to_fetch(root, manifest, state, result, verify_existing=verify_existing, hooks=hooks)
        if progress is not None:
            progress.add_totals(records=1, files=len(todo), bytes=sum(r.size for r in todo))
        run = _Fetches(target, rec, root, state, result, progress, stats, asyncio.Semaphore(max(1, jobs)))
        await asyncio.gather(*(run.one(r) for r in todo))
        state.save()
    if progress is not None:
        progress.record_finished(ok=result.ok)
    result.fetched.sort()
    return result


async def _open_revision(
    target: Target, name: str, rev: str, root: Path
) -> tuple[RemoteRecord, dict[str, int], Manifest]:
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
    return rec, remote, manifest


async def _to_fetch(
    root: Path,
    manifest: Manifest,
    state: TreeState,
    result: DownloadResult,
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
        elif row.path not in result.missing_in_archive:
            todo.append(row)
    return todo


@dataclass
class _Fetches:
    """The files of one revision download, ``gate`` at a time."""

    target: Target
    rec: RemoteRecord
    root: Path
    state: TreeState
    result: DownloadResult
    progress: ProgressSink | None
    stats: StatsWriter | None
    gate: asyncio.Semaphore

    async def one(self, row: ManifestRow) -> None:
        async with self.gate:
            event = self.stats.open("download", self.rec.recid, row.path, bytes=row.size) if self.stats else None
            if self.progress is not None:
                self.progress.file_started(row.path)
            try:
                st = await _fetch(self.target, self.rec, self.root, row, self.progress)
            except FerryError as exc:  # one file's failure never stops the others
                self.result.failed[row.path] = str(exc)
                if event:
                    event.close("failed", error=exc)
                if self.progress is not None:
                    self.progress.file_finished(row.path, ok=False)
                return
            self.state.put(row.path, st, {"sha256": row.sha256})
            self.result.fetched.append(row.path)
            if event:
                event.close("ok")
            if self.progress is not None:
                self.progress.file_finished(row.path, ok=True)


async def _fetch(
    target: Target, rec: RemoteRecord, root: Path, row: ManifestRow, progress: ProgressSink | None
) -> FileStat:
    dest = inside(root, row.path, where=f"manifest of {rec.recid}")
    part = root / STATE_DIR / PARTS / f"{row.sha256}.part"
    # Thread hops are per file (1,000 small files are 1,000 GETs): one to open (or resume)
    # the .part, one per WRITE_BATCH of a large file, and one to finish (write the rest,
    # fsync, close, check, place).
    hasher, offset, fh = await asyncio.to_thread(_open_part, part, row.size)
    batch: list[bytes] = []
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
                    await asyncio.to_thread(_write, fh, hasher, batch)
                    batch, batched = [], 0
                if progress is not None:
                    progress.advance(len(chunk))
    except BaseException:
        fh.close()
        raise
    return await asyncio.to_thread(_finish, fh, hasher, batch, offset, part, dest, row, rec.recid)


def _finish(
    fh: BinaryIO,
    hasher: MultiHasher,
    batch: list[bytes],
    offset: int,
    part: Path,
    dest: Path,
    row: ManifestRow,
    recid: str,
) -> FileStat:
    """Write the last bytes and make them durable, then place the file if it is the one
    the manifest lists (else drop the .part: the next try starts from nothing)."""
    try:
        _write(fh, hasher, batch)
        _sync(fh)
    finally:
        fh.close()
    sha256 = hasher.hexdigests()["sha256"]
    if offset != row.size or sha256 != row.sha256:
        part.unlink(missing_ok=True)
        got = f"{offset} bytes" if offset != row.size else f"sha256 {sha256}"
        raise VerificationError(
            f"fetched {got}, the manifest says {row.size} bytes with sha256 {row.sha256}", recid=recid, file=row.path
        )
    st = FileStat.of(part.stat())
    _place(part, dest)
    return st


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


def _write(fh: BinaryIO, hasher: MultiHasher, chunks: list[bytes]) -> None:
    for chunk in chunks:
        fh.write(chunk)
        hasher.update(chunk)


def _sync(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _place(part: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_dir() and not dest.is_symlink():
        raise InputError(f"{dest} is a folder, the manifest lists a file there")
    os.replace(part, dest)
    fsync_dir(dest.parent)
