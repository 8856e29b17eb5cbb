"""`ferry archive upload NAME REV DIR --to ARCHIVE`: send a revision, manifest last.

1. DIR is hashed (local state first: an unchanged tree is not read). With a manifest in
   DIR, the tree must match it exactly, or nothing is sent (each file named); without
   one, it is written as soon as the whole tree is hashed, as djarchive does, and files
   are sent as their checksums are known (hashing and sending overlap; the archive's
   listing, asked for while hashing runs, says which to skip; step 2 decides first).
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
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from archive.build import TreeDigest, compare_digest, digest_tree, is_dotted, manifest_of, without_dotfiles
from archive.hashing import Hooks, PartsWanted
from archive.manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest
from archive.names import revision_id
from archive.store import archive_hash, bytes_checksum
from ferry.core.checksums import Checksum
from ferry.core.errors import FerryError, InputError
from ferry.core.tree import ScanOptions
from ferry.progress import ProgressSink
from stats.events import StatsWriter
from upload.targets.base import ListingHinted, PartHinted, RemoteFile, RemoteRecord, SizeLister, Target

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
    result = UploadResult(recid, dry_run=dry_run)
    # With a manifest in DIR nothing may go before the tree is checked against it; a dry
    # run sends nothing: both hash first, then decide, as before.
    parts = _parts_wanted(target, algorithm)
    early = (
        None if dry_run or (root / MANIFEST_NAME).exists() else _Early(target, recid, root, algorithm, result, parts)
    )
    digest, rec, remote = await _hash_and_list(
        target, recid, root, algorithms, hooks, early, jobs, progress, stats, parts
    )
    manifest, written = await asyncio.to_thread(local_manifest, root, digest, dry_run=dry_run)
    manifest_bytes = manifest.to_bytes()
    result.files, result.manifest_written = len(manifest), written
    if _complete_already(remote.get(MANIFEST_NAME), recid, bytes_checksum(algorithm, manifest_bytes), manifest_bytes):
        result.already_complete = True
        return result
    todo, stale = _plan(manifest, digest, remote, algorithm, result)
    if early is not None:
        todo = [t for t in todo if t[0] not in early.sent]  # each file is tried once a run
    if dry_run:
        result.sent = [p for p, _, _ in todo]
        result.removed = stale
        return result
    if rec is None:
        rec = await target.create(recid, {})
    for key in stale:  # left by an earlier try of another tree under the same NAME/REV
        await target.delete_file(rec, key)
        result.removed.append(key)
    if isinstance(target, ListingHinted):  # the LIST above said what exists: no HEAD before each PUT
        target.mark_absent(rec.recid, [k for k, _, _ in todo])
    _hint_all(target, rec.recid, todo, parts)
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


async def _hash_and_list(
    target: Target,
    recid: str,
    root: Path,
    algorithms: tuple[str, ...],
    hooks: Hooks | None,
    early: _Early | None,
    jobs: int,
    progress: ProgressSink | None,
    stats: StatsWriter | None,
    parts: PartsWanted | None = None,
) -> tuple[TreeDigest, RemoteRecord | None, dict[str, RemoteFile]]:
    """The tree's digest and the archive's record and files; with ``early``, files are sent
    while the hashing goes on (and the listing is asked for meanwhile)."""
    opts = ScanOptions(include_dotfiles=True)  # a manifest may list dotfiles; see compare_digest
    if early is None:
        digest = await asyncio.to_thread(digest_tree, root, opts, algorithms=algorithms, hooks=hooks, parts=parts)
        rec = await target.find(recid, recid)
        return digest, rec, (await target.list_files(rec) if rec is not None else {})
    sending = asyncio.create_task(early.run(jobs, progress, stats))
    try:
        digest = await asyncio.to_thread(
            digest_tree, root, opts, algorithms=algorithms, hooks=hooks, on_digest=early.ready, parts=parts
        )
    except BaseException:
        sending.cancel()  # a file changed while hashed, an interrupt: no more sends
        with contextlib.suppress(BaseException):
            await sending
        raise
    early.hashed()
    rec, remote = await sending
    return digest, rec, remote


async def _send_one(
    target: Target,
    rec: RemoteRecord,
    root: Path,
    key: str,
    size: int,
    want: Checksum,
    result: UploadResult,
    progress: ProgressSink | None,
    stats: StatsWriter | None,
) -> None:
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


class _Early:
    """Files sent while the rest of the tree is still being hashed (module doc, step 1).

    The listing is asked for at once; if it shows the revision complete, nothing is sent
    here (step 2 decides once the manifest is known). Else each hashed file that will be
    in the manifest (not a dotfile) and is not already stored alike is sent, ``jobs`` at
    a time: the revision has no manifest yet, so a kill still leaves it incomplete."""

    def __init__(
        self, target: Target, recid: str, root: Path, algorithm: str, result: UploadResult, parts: PartsWanted | None
    ) -> None:
        self.target, self.recid, self.root, self.algorithm, self.result = target, recid, root, algorithm, result
        self.parts = parts  # the part md5s the hashing takes, if any
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, int, dict[str, str]] | None] = asyncio.Queue()
        self.sent: set[str] = set()  # tried here, failed or not

    def ready(self, path: str, size: int, digests: dict[str, str]) -> None:
        """From the hashing thread."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (path, size, digests))

    def hashed(self) -> None:
        self.queue.put_nowait(None)

    async def run(
        self, jobs: int, progress: ProgressSink | None, stats: StatsWriter | None
    ) -> tuple[RemoteRecord | None, dict[str, RemoteFile]]:
        target = self.target
        rec = await target.find(self.recid, self.recid)
        remote: dict[str, RemoteFile] = await target.list_files(rec) if rec is not None else {}
        there = remote.get(MANIFEST_NAME)
        if there is not None and there.completed:
            while await self.queue.get() is not None:
                pass
            return rec, remote
        if rec is None:
            rec = await target.create(self.recid, {})
        await self._send_while_hashing(rec, remote, jobs, progress, stats)
        return rec, remote

    async def _send_while_hashing(
        self,
        rec: RemoteRecord,
        remote: dict[str, RemoteFile],
        jobs: int,
        progress: ProgressSink | None,
        stats: StatsWriter | None,
    ) -> None:
        target = self.target
        hinted = target if isinstance(target, ListingHinted) else None
        gate = asyncio.Semaphore(max(1, jobs))
        sends: list[asyncio.Task[None]] = []

        async def one(key: str, size: int, want: Checksum) -> None:
            async with gate:
                await _send_one(target, rec, self.root, key, size, want, self.result, progress, stats)

        try:
            while (item := await self.queue.get()) is not None:
                key, size, digests = item
                want = Checksum(self.algorithm, digests[self.algorithm])
                held = remote.get(key)
                if not _to_send(key, size, want, held):
                    continue
                if held is None and hinted is not None:
                    hinted.mark_absent(rec.recid, [key])  # the LIST said so: no HEAD before the PUT
                _hint_parts(target, rec.recid, key, want, self.parts)
                if progress is not None:
                    progress.add_totals(files=1, bytes=size)
                self.sent.add(key)
                sends.append(asyncio.create_task(one(key, size, want)))
            await asyncio.gather(*sends)
        except BaseException:
            for task in sends:
                task.cancel()
            await asyncio.gather(*sends, return_exceptions=True)
            raise


def _parts_wanted(target: Target, algorithm: str) -> PartsWanted | None:
    """For a target that sends big files in parts: their part md5s, taken in the hashing
    read with the md5 (one md5 pass over a big file, not one for the manifest and two
    while it is sent: the whole stream's and each part's)."""
    return PartsWanted(target.part_size) if isinstance(target, PartHinted) and algorithm == "md5" else None


def _hint_all(target: Target, recid: str, todo: list[tuple[str, int, Checksum]], parts: PartsWanted | None) -> None:
    for key, _, want in todo:
        _hint_parts(target, recid, key, want, parts)


def _hint_parts(target: Target, recid: str, key: str, want: Checksum, parts: PartsWanted | None) -> None:
    """Hand the part md5s the hashing read took for ``key`` to the target (PartHinted)."""
    found = parts.found.pop(key, None) if parts is not None else None
    if found is not None and isinstance(target, PartHinted):
        target.know_parts(recid, key, want.value, found[0], found[1])


def _to_send(key: str, size: int, want: Checksum, held: RemoteFile | None) -> bool:
    """Not a dotfile or the manifest (neither is in the manifest's rows), nor stored alike
    already (the plan skips it)."""
    if is_dotted(key) or key == MANIFEST_NAME:
        return False
    return held is None or not held.matches(size, want)


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
            await _send_one(target, rec, root, key, size, want, result, progress, stats)

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
