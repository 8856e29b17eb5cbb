"""`ferry archive upload NAME REV DIR --to ARCHIVE`: send a revision, manifest last.

1. DIR is hashed (local state first: an unchanged tree is not read). With a manifest in
   DIR, the tree must match it exactly, or nothing is sent (each file named); without
   one, it is written first, as djarchive does.
2. The revision is refused if the archive already has it complete with another manifest
   (revisions are immutable); with the same manifest there is nothing to do.
3. Files already stored with the same size and checksum are skipped, the rest sent
   (``jobs`` at a time), each verified by the target; objects of an unfinished earlier
   try that the manifest does not list are removed.
4. Only when every file is verified on the target is the manifest sent: its presence is
   the "this revision is complete" marker, so a kill at any point leaves an incomplete
   revision that a re-run finishes without sending anything twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from archive.build import TreeDigest, compare_digest, digest_tree, manifest_of, without_dotfiles
from archive.hashing import Hooks
from archive.manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest
from archive.names import revision_id
from archive.store import archive_hash, bytes_checksum
from ferry.core.checksums import Checksum
from ferry.core.errors import FerryError, InputError
from ferry.core.tree import ScanOptions
from ferry.progress import ProgressSink
from stats.events import StatsWriter
from upload.targets.base import RemoteFile, RemoteRecord, SizeLister, Target

log = logging.getLogger(__name__)


@dataclass
class UploadResult:
    revision: str
    files: int = 0
    sent: list[str] = field(default_factory=list)
    skipped: int = 0
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    already_complete: bool = False
    dry_run: bool = False
    manifest_written: bool = False


def local_manifest(root: Path, digest: TreeDigest, *, dry_run: bool) -> tuple[Manifest, bool]:
    """DIR's manifest, verified against the tree; written first when DIR has none."""
    path = root / MANIFEST_NAME
    if path.exists():
        manifest = read_manifest(path)
        report = compare_digest(root, manifest, digest, include_dotfiles=False)
        if not report.ok:
            lines = "\n  ".join(report.lines())
            raise InputError(f"{root} does not match its manifest {path}; nothing was sent:\n  {lines}")
        return manifest, False
    manifest = manifest_of(without_dotfiles(digest))
    if not dry_run:
        write_manifest(manifest, path)
    return manifest, True


async def upload_revision(
    target: Target,
    name: str,
    rev: str,
    root: Path,
    *,
    jobs: int = 4,
    dry_run: bool = False,
    hooks: Hooks | None = None,
    progress: ProgressSink | None = None,
    stats: StatsWriter | None = None,
) -> UploadResult:
    recid = revision_id(name, rev)
    algorithm = archive_hash(target)
    algorithms = ("sha256",) if algorithm == "sha256" else ("sha256", algorithm)
    opts = ScanOptions(include_dotfiles=True)  # a manifest may list dotfiles; see compare_digest
    digest = await asyncio.to_thread(digest_tree, root, opts, algorithms=algorithms, hooks=hooks)
    manifest, written = await asyncio.to_thread(local_manifest, root, digest, dry_run=dry_run)
    manifest_bytes = manifest.to_bytes()
    result = UploadResult(recid, files=len(manifest), dry_run=dry_run, manifest_written=written)

    rec = await target.find(recid, recid)
    remote: dict[str, RemoteFile] = await target.list_files(rec) if rec is not None else {}
    if _complete_already(remote.get(MANIFEST_NAME), recid, bytes_checksum(algorithm, manifest_bytes), manifest_bytes):
        result.already_complete = True
        return result
    todo, stale = _plan(manifest, digest, remote, algorithm, result)
    if dry_run:
        result.sent = [p for p, _, _ in todo]
        result.removed = stale
        return result
    if rec is None:
        rec = await target.create(recid, {})
    for key in stale:  # left by an earlier try of another tree under the same NAME/REV
        await target.delete_file(rec, key)
        result.removed.append(key)
    mark_absent = getattr(target, "mark_absent", None)
    if mark_absent is not None:  # the LIST above said what exists: no HEAD before each PUT
        mark_absent(rec.recid, [k for k, _, _ in todo])
    await _send_all(target, rec, root, todo, jobs, result, progress, stats)
    if result.failed:
        return result  # no manifest: the revision stays incomplete, a re-run resumes it
    await _verify_all(target, rec, manifest, digest, algorithm, result)
    if result.failed:
        return result
    await target.put_file(
        rec, MANIFEST_NAME, root / MANIFEST_NAME, len(manifest_bytes), bytes_checksum(algorithm, manifest_bytes)
    )
    return result


def _plan(
    manifest: Manifest, digest: TreeDigest, remote: dict[str, RemoteFile], algorithm: str, result: UploadResult
) -> tuple[list[tuple[str, int, Checksum]], list[str]]:
    """(key, size, checksum) of the files to send, and the stale keys to remove; files the
    archive already holds verified are counted as skipped."""
    todo = []
    for row in manifest:
        want = _wanted(digest, row.path, algorithm)
        held = remote.get(row.path)
        if held is not None and held.matches(row.size, want):
            result.skipped += 1
        else:
            todo.append((row.path, row.size, want))
    stale = sorted(k for k in remote if k not in manifest and k != MANIFEST_NAME)
    return todo, stale


def _wanted(digest: TreeDigest, path: str, algorithm: str) -> Checksum:
    return Checksum(algorithm, digest.checksums[path][algorithm])


def _complete_already(there: RemoteFile | None, recid: str, mine: Checksum, manifest_bytes: bytes) -> bool:
    """True if the archive holds this revision complete with this very manifest; one
    complete with another manifest is refused (revisions are immutable)."""
    if there is None or not there.completed:
        return False
    if there.matches(len(manifest_bytes), mine):
        return True
    raise InputError(
        f"revision {recid} is already complete in the archive with a different manifest; "
        "revisions are immutable: upload this tree as a new revision"
    )


async def _send_all(
    target: Target,
    rec: RemoteRecord,
    root: Path,
    todo: list[tuple[str, int, Checksum]],
    jobs: int,
    result: UploadResult,
    progress: ProgressSink | None,
    stats: StatsWriter | None,
) -> None:
    if progress is not None:
        progress.add_totals(records=1, files=len(todo), bytes=sum(s for _, s, _ in todo))
    gate = asyncio.Semaphore(max(1, jobs))

    async def one(key: str, size: int, want: Checksum) -> None:
        async with gate:
            event = stats.open("upload", rec.recid, key, bytes=size) if stats else None
            if progress is not None:
                progress.file_started(key)
            try:
                await target.put_file(rec, key, root / key, size, want, progress=progress.advance if progress else None)
            except FerryError as exc:  # one file's failure never stops the others
                result.failed[key] = str(exc)
                if event:
                    event.close("failed", error=exc)
                if progress is not None:
                    progress.file_finished(key, ok=False)
                return
            result.sent.append(key)
            if event:
                event.close("ok")
            if progress is not None:
                progress.file_finished(key, ok=True)

    await asyncio.gather(*(one(k, s, w) for k, s, w in todo))
    result.sent.sort()
    if progress is not None:
        progress.record_finished(ok=not result.failed)


async def _verify_all(
    target: Target, rec: RemoteRecord, manifest: Manifest, digest: TreeDigest, algorithm: str, result: UploadResult
) -> None:
    """Every row as the target lists it after the upload; a mismatch fails the revision."""
    if isinstance(target, SizeLister):
        # Each put_file read its object back and checked size and checksum, and skipped
        # files were checked the same way when planned; what is left to prove before the
        # manifest goes is that every file is still there at its size (a concurrent delete,
        # another run). From the listing alone: on S3 no second HEAD per file.
        sizes = await target.list_sizes(rec)
        for row in manifest:
            if sizes.get(row.path) != row.size:
                result.failed[row.path] = "not on the target at its size after the upload"
        return
    final = await target.list_files(rec)
    for row in manifest:
        held = final.get(row.path)
        if held is None or not held.matches(row.size, _wanted(digest, row.path, algorithm)):
            result.failed[row.path] = "not verified on the target after the upload"
