"""The download's files on disk: where they are, ``.part`` files, verified writes, the manifest.

Everything here is local file work, blocking unless it says otherwise (the engine calls it
in worker threads). Nothing here fetches: bytes arrive from ``download.file_transfer``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import orjson

from download.manifest import META_DIR, Manifest, ManifestEntry, load_manifest
from download.part_mark import PART_SUFFIX as PART_SUFFIX  # re-exported for the engine
from download.part_mark import PrefixMark, read_mark, remove_mark
from download.results import FileResult
from download.sink import lanes_for, prefix_hashers, pwrite_all
from ferry.core.atomic import atomic_write_bytes
from ferry.core.checksums import Checksum, MultiHasher
from ferry.core.errors import FerryError, InputError
from ferry.core.model import FileEntry, Record, inside, safe_relpath

log = logging.getLogger(__name__)

MANIFEST_SAVE_INTERVAL = 2.0
RECORD_JSON = "record.json"


def expected_checksum(entry: FileEntry) -> Checksum | None:
    """The source checksum to verify against (adler32 preferred when several are given)."""
    return entry.expected("adler32") or (entry.checksums[0] if entry.checksums else None)


def part_path(final: Path) -> Path:
    return final.with_name(final.name + PART_SUFFIX)


@dataclass(frozen=True)
class OnDisk:
    final: os.stat_result | None  # the file under its final name, if any
    part_size: int | None  # size of its .part, if any


def locate(record_dir: Path, keys: Sequence[str], recid: str) -> list[tuple[Path, OnDisk]]:
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
        out.append((final, OnDisk(st, part_size)))
    return out


def open_part(part: Path, resume_limit: int | None) -> tuple[int, int]:
    """Open ``part`` for writing (one thread hop: per-file overhead matters for small files).

    Keeps its bytes when ``resume_limit`` allows (None: any length; -1: never; n: at most
    n bytes, since a longer .part cannot be a prefix), and never past the prefix its
    sidecar says was written (``download.part_mark``): the length of a ``.part`` whose
    chunks landed out of order proves nothing. Returns (fd, bytes kept).
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        mark = read_mark(part)
        if mark is not None and mark < start:
            log.info("%s: %d bytes long, only the first %d written in order; resuming from there", part, start, mark)
            start = mark
        if resume_limit is not None and (resume_limit < 0 or start > resume_limit):
            start = 0
        os.ftruncate(fd, start)
    except BaseException:
        os.close(fd)
        raise
    return fd, start


def open_marked(part: Path, resume_limit: int | None) -> tuple[int, int, PrefixMark]:
    """``open_part`` and the sidecar that records what this pass writes, in one thread hop."""
    fd, start = open_part(part, resume_limit)
    try:
        return fd, start, PrefixMark(part, start)
    except BaseException:
        os.close(fd)
        raise


def fetch_small(
    read: Callable[[str, int], tuple[bytes, int]],
    url: str,
    part: Path,
    final: Path,
    algorithms: tuple[str, ...],
    size: int,
    expected: Checksum | None,
) -> tuple[int, int, dict[str, str], os.stat_result | None]:
    """Blocking: read a small file whole, then ``write_if_verified`` it. Returns (bytes
    read, remote size, digests, stat of the final file or None if nothing was written)."""
    data, remote_size = read(url, size)
    if len(data) != remote_size:
        return len(data), remote_size, {}, None
    digests, st = write_if_verified(part, final, data, algorithms, size, expected)
    return len(data), remote_size, digests, st


# Creating and renaming files take the folder's lock in the kernel, which waiters spin on
# (rwsem optimistic spinning): 8 threads doing it at once in one folder burnt ~1.5 CPU-s
# per 5,000 files of the 2 cores. Taken in turn here, waiters sleep instead.
_DIR_LOCK = threading.Lock()


def write_if_verified(
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
        return digests, rename_verified(part, final)


def rename_verified(part: Path, final: Path) -> os.stat_result:
    """Give a verified file its final name; return its stat for the manifest."""
    os.replace(part, final)
    return final.stat()


def finish_part(part: Path, final: Path) -> os.stat_result:
    """A streamed ``.part`` verified: its sidecar goes first (a kill in between leaves a
    complete ``.part`` that a resume re-hashes and verifies), then the rename."""
    remove_mark(part)
    return rename_verified(part, final)


def drop_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    remove_mark(part)


def manifest_matches(entry: ManifestEntry, file: FileEntry) -> bool:
    """A manifest entry still describes what the source lists (same size and checksum)."""
    expected = expected_checksum(file)
    if file.size is not None and entry.size != file.size:
        return False
    return expected is not None and entry.checksums.get(expected.algorithm) == expected.value


def read_manifest(record_dir: Path, recid: str) -> Manifest:
    """The record's manifest; a corrupt one is only a lost cache: start empty (every file
    on disk is then re-hashed and re-verified) instead of failing the record."""
    try:
        return load_manifest(record_dir, recid)
    except InputError as exc:
        log.warning("%s; ignoring it, files on disk will be re-verified", exc)
        return Manifest(record_dir=record_dir, recid=recid)


class ManifestState:
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


def prepare_dir(record: Record, record_dir: Path) -> None:
    """Create the record folder and keep the source record JSON next to the files
    (uploads need the metadata); rewritten (atomically) only when it changed."""
    meta_dir = record_dir / META_DIR
    meta_dir.mkdir(parents=True, exist_ok=True)
    path = meta_dir / RECORD_JSON
    data = orjson.dumps(dict(record.metadata), option=orjson.OPT_INDENT_2)
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    atomic_write_bytes(path, data, mkdirs=False)


async def keep_existing(
    entry: FileEntry,
    final: Path,
    st: os.stat_result | None,
    state: ManifestState,
    algorithms: tuple[str, ...],
    verify_existing: bool,
    expected: Checksum,
    executor: Executor,
) -> FileResult | None:
    """A result for a file already under its final name and verified (trusted from the
    manifest, or hashed), or None (after removing a file that does not match)."""
    if st is None:
        return None
    fresh = state.manifest.fresh_entry(entry.key)
    if fresh is not None and not verify_existing and manifest_matches(fresh, entry):
        return FileResult(
            key=entry.key,
            path=final,
            size=fresh.size,
            status="skipped",
            action="trusted (manifest)",
            checksums=dict(fresh.checksums),
        )
    hashers = await prefix_hashers(str(final), st.st_size, lanes_for(algorithms), executor)
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
