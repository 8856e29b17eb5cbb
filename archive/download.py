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
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from archive.build import digest_files
from archive.hashing import CHUNK, Hooks
from archive.manifest import MANIFEST_NAME, ManifestRow
from archive.state import TreeState
from archive.store import fetch_manifest, reader, revision_id
from archive.tree import STATE_DIR, FileStat, ScanOptions, scan_tree
from ferry.core.atomic import atomic_write_bytes, fsync_dir
from ferry.core.errors import FerryError, InputError, VerificationError
from ferry.core.model import inside
from ferry.progress import ProgressSink
from stats.events import StatsWriter
from upload.targets.base import RemoteRecord, Target

log = logging.getLogger(__name__)

PARTS = "parts"


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
    reader(target, target.name)
    rec = await target.find(recid, recid)
    if rec is None:
        raise InputError(f"the archive has no revision {rev!r} of dataset {name!r}")
    remote = await target.list_files(rec)
    listed = remote.get(MANIFEST_NAME)
    if listed is None or not listed.completed:
        raise InputError(
            f"revision {recid} is incomplete in the archive (no manifest yet): its upload has not finished"
        )
    data, manifest = await fetch_manifest(target, rec, listed)
    await asyncio.to_thread(atomic_write_bytes, root / MANIFEST_NAME, data)
    result = DownloadResult(recid, files=len(manifest))
    result.unlisted_in_archive = sorted(k for k in remote if k not in manifest and k != MANIFEST_NAME)
    result.missing_in_archive = [r.path for r in manifest if r.path not in remote]

    with TreeState.for_tree(root) as state:
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
        if progress is not None:
            progress.add_totals(records=1, files=len(todo), bytes=sum(r.size for r in todo))
        gate = asyncio.Semaphore(max(1, jobs))

        async def one(row: ManifestRow) -> None:
            async with gate:
                event = stats.open("download", recid, row.path, bytes=row.size) if stats else None
                if progress is not None:
                    progress.file_started(row.path)
                try:
                    st = await _fetch(target, rec, root, row, progress)
                except FerryError as exc:  # one file's failure never stops the others
                    result.failed[row.path] = str(exc)
                    if event:
                        event.close("failed", error=exc)
                    if progress is not None:
                        progress.file_finished(row.path, ok=False)
                    return
                state.put(row.path, st, {"sha256": row.sha256})
                result.fetched.append(row.path)
                if event:
                    event.close("ok")
                if progress is not None:
                    progress.file_finished(row.path, ok=True)

        await asyncio.gather(*(one(r) for r in todo))
        state.save()
    if progress is not None:
        progress.record_finished(ok=result.ok)
    result.fetched.sort()
    return result


async def _fetch(
    target: Target, rec: RemoteRecord, root: Path, row: ManifestRow, progress: ProgressSink | None
) -> FileStat:
    dest = inside(root, row.path, where=f"manifest of {rec.recid}")
    part = root / STATE_DIR / PARTS / f"{row.sha256}.part"
    hasher = hashlib.sha256()
    offset = await asyncio.to_thread(_resume, part, hasher, row.size)
    fh: BinaryIO = await asyncio.to_thread(open, part, "ab")
    try:
        async with contextlib.aclosing(reader(target, target.name).read_file(rec, row.path, start=offset)) as chunks:
            async for chunk in chunks:
                offset += len(chunk)
                if offset > row.size:
                    break  # longer than the manifest says: refused below
                await asyncio.to_thread(_write, fh, hasher, chunk)
                if progress is not None:
                    progress.advance(len(chunk))
        await asyncio.to_thread(_sync, fh)
    finally:
        fh.close()
    if offset != row.size or hasher.hexdigest() != row.sha256:
        part.unlink(missing_ok=True)  # the next try starts from nothing
        got = f"{offset} bytes" if offset != row.size else f"sha256 {hasher.hexdigest()}"
        raise VerificationError(
            f"fetched {got}, the manifest says {row.size} bytes with sha256 {row.sha256}",
            recid=rec.recid,
            file=row.path,
        )
    st = FileStat.of(part.stat())
    await asyncio.to_thread(_place, part, dest)
    return st


def _resume(part: Path, hasher: hashlib._Hash, size: int) -> int:
    """Hash the prefix a killed run left; a part longer than the file is dropped."""
    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        have = part.stat().st_size
    except FileNotFoundError:
        return 0
    if have > size:
        part.unlink()
        return 0
    with open(part, "rb") as fh:
        while chunk := fh.read(CHUNK):
            hasher.update(chunk)
    return have


def _write(fh: BinaryIO, hasher: hashlib._Hash, chunk: bytes) -> None:
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
