"""The blocking half of zipping, run in a worker process: write, append, inspect bundles.

Everything here takes and returns plain picklable dataclasses, so ``zipper`` can hand it to
a ``ProcessPoolExecutor`` and keep the event loop free. A bundle is written from its
sources in one read each (the CRC32 that zipfile computes while writing is the source's
CRC), and a ``TrailingScanner`` re-reads what was written right behind the writer and
checks every entry's CRC32 against that source CRC: a write that put other bytes on disk
than were read from the source fails here. No whole-bundle digest is computed here: the
upload computes the bundle's md5 while it reads the bundle to send it.
New bundles are written to ``.ferry/<name>.partial`` and renamed only once verified.

Why one module of about 400 lines: writing, appending and inspecting a bundle share the
entry layout and the CRC-checking scanner; together they are the whole on-disk contract
of a bundle.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Literal

from download.manifest import META_DIR
from ferry.core.atomic import fsync_dir
from ferry.core.checksums import MultiHasher
from ferry.core.errors import InputError, UnsafePathError, VerificationError
from ferry.core.model import inside, safe_relpath
from upload.zip.format import (
    EMBEDDED_DATE,
    EMBEDDED_NAME,
    BundleCorrupt,
    EntryRecord,
    MemberRecord,
    crc_hex,
    embedded_manifest,
    parse_embedded,
    read_directory,
)
from upload.zip.scan import CHUNK, Scanner, TrailingScanner

Source = Literal["file", "bundle", "kept"]


@dataclass(frozen=True)
class MemberJob:
    """One member of the bundle being written and where its bytes come from.

    ``file``: the original in the record folder; ``bundle``: the same entry of the old
    bundle (its original is gone; zipfile checks its CRC while we copy); ``kept``: already
    in the bundle we append to. ``check_md5``: the original's size/mtime differ from the
    download manifest, so its md5 is checked during the same read.
    """

    key: str
    size: int
    md5: str
    adler32: str
    mtime_ns: int
    source: Source = "file"
    deflate: bool = False
    check_md5: bool = False
    crc32: str | None = None  # known for "bundle" and "kept" members


@dataclass(frozen=True)
class BundleJob:
    recid: str
    record_dir: str
    name: str
    mode: Literal["build", "append"]
    members: tuple[MemberJob, ...]  # the bundle's whole content, in archive order
    old_bundle: str | None = None  # "bundle" sources are read from here (build mode)
    durable: bool = False  # fsync before returning: originals are about to be deleted


@dataclass(frozen=True)
class BuiltBundle:
    name: str
    size: int
    mtime_ns: int
    members: tuple[MemberRecord, ...]
    worker_pid: int


@dataclass(frozen=True)
class Inspection:
    """What a bundle on disk holds, and whether it is sound (``problem is None``)."""

    name: str
    exists: bool
    problem: str | None = None
    members: tuple[MemberRecord, ...] = ()  # from its embedded manifest, checked against the directory
    scanned: bool = False  # True: every entry's data CRC was checked now
    size: int = 0
    mtime_ns: int = 0
    worker_pid: int = 0


def _zinfo(name: str, size: int, date: tuple[int, int, int, int, int, int], deflate: bool) -> zipfile.ZipInfo:
    # Every entry carries the same fixed date (a file's mtime here is only when we
    # downloaded it): a bundle is a function of names, order and bytes, so rebuilding it
    # from a fresh download gives the same md5 as the copy already on the target.
    zi = zipfile.ZipInfo(name, date_time=date)
    zi.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    zi.file_size = size  # lets zipfile choose ZIP64 headers up front for large members
    zi.external_attr = 0o100644 << 16  # regular file, rw-r--r--
    return zi


def _entry(zi: zipfile.ZipInfo) -> EntryRecord:
    return EntryRecord(zi.filename, zi.header_offset, zi.compress_size, zi.file_size, zi.CRC, zi.compress_type)


class _Sources:
    """Opens a bundle's originals, proving each stays inside the record folder.

    ``ferry.core.model.inside`` resolves the whole path of every file (an lstat per path
    component, twice): a third of the zip stage's time for 1,000 small files. Here each
    folder is resolved and checked once, and the file itself is opened with
    ``O_NOFOLLOW``; a file that is a symlink takes the full check.
    """

    def __init__(self, job: BundleJob) -> None:
        self.root = Path(job.record_dir)
        self.where = f"record {job.recid}"
        self._folders: dict[str, Path] = {}

    def open(self, key: str) -> io.FileIO:
        key = safe_relpath(key, where=self.where)  # no "..", no absolute path: as inside() checks
        folder, _, name = key.rpartition("/")
        parent = self._folders.get(folder)
        if parent is None:
            parent = inside(self.root, folder, where=self.where) if folder else self.root.resolve()
            self._folders[folder] = parent
        try:
            fd = os.open(parent / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            return io.FileIO(inside(self.root, key, where=self.where), "rb")  # a symlink: full check
        return io.FileIO(fd, "rb")


def _copy_file(zf: zipfile.ZipFile, m: MemberJob, sources: _Sources) -> zipfile.ZipInfo:
    zi = _zinfo(m.key, m.size, EMBEDDED_DATE, m.deflate)
    hasher = MultiHasher(("md5",)) if m.check_md5 else None
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    try:
        with sources.open(m.key) as fh, zf.open(zi, "w") as dst:
            while n := fh.readinto(buf):
                total += n
                if total > m.size:
                    break
                dst.write(view[:n])
                if hasher is not None:
                    hasher.update(view[:n])
    except FileNotFoundError as exc:
        raise VerificationError(f"file {m.key} vanished while it was being zipped", file=m.key) from exc
    if total != m.size:
        raise VerificationError(
            f"file {m.key} has {'more than ' if total > m.size else ''}{total} bytes, the download manifest says "
            f"{m.size}: it changed after it was verified; download it again",
            file=m.key,
        )
    if hasher is not None and (md5 := hasher.hexdigests()["md5"]) != m.md5:
        raise VerificationError(
            f"file {m.key} differs from the verified download (md5 {md5}, manifest {m.md5}); download it again",
            expected=m.md5,
            actual=md5,
            file=m.key,
        )
    return zi


def _copy_entry(zf: zipfile.ZipFile, m: MemberJob, old: zipfile.ZipFile, where: str) -> zipfile.ZipInfo:
    zi = _zinfo(m.key, m.size, EMBEDDED_DATE, m.deflate)
    try:
        # ZipExtFile checks the CRC when it reaches the end: a bad old entry fails here.
        with old.open(m.key) as src, zf.open(zi, "w") as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
    except (zipfile.BadZipFile, KeyError, zlib.error, EOFError) as exc:
        raise BundleCorrupt(
            f"entry {m.key} of bundle {where} is damaged ({exc}) and its original is gone; download it again",
            file=m.key,
        ) from exc
    if zi.file_size != m.size or crc_hex(zi.CRC) != m.crc32:
        raise BundleCorrupt(f"entry {m.key} of bundle {where} is not the file its manifest describes", file=m.key)
    return zi


def _prepare_append(zf: zipfile.ZipFile, job: BundleJob) -> list[EntryRecord]:
    """Drop the trailing embedded manifest so new entries overwrite it; return the kept entries.

    zipfile's append mode writes new entries at ``start_dir`` (where the central directory
    began). Moving ``start_dir`` back to the manifest entry's header makes the new entries
    replace it; the new manifest and central directory follow them, and the file is
    truncated on close.
    """
    entries = sorted(read_directory(zf, where=job.name), key=lambda e: e.header_offset)
    if not entries or entries[-1].name != EMBEDDED_NAME:
        raise BundleCorrupt(f"bundle {job.name}: its manifest is not its last entry; rebuild it")
    kept = entries[:-1]
    want = [m.key for m in job.members if m.source == "kept"]
    if sorted(e.name for e in kept) != sorted(want):
        raise BundleCorrupt(f"bundle {job.name} changed since it was inspected")
    info = zf.getinfo(EMBEDDED_NAME)
    zf.filelist.remove(info)
    del zf.NameToInfo[EMBEDDED_NAME]
    if not hasattr(zf, "start_dir"):  # pragma: no cover - guards a zipfile internals change
        raise RuntimeError("this Python's zipfile cannot append in place")
    zf.start_dir = info.header_offset
    order = {m.key: i for i, m in enumerate(job.members)}
    return sorted(kept, key=lambda e: order[e.name])


def _open_old(job: BundleJob) -> zipfile.ZipFile:
    """The damaged/old bundle whose entries stand in for originals that are gone."""
    assert job.old_bundle is not None
    try:
        return zipfile.ZipFile(job.old_bundle)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        gone = [m.key for m in job.members if m.source == "bundle"]
        shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
        raise BundleCorrupt(
            f"bundle {job.name} is unreadable ({exc}) and {len(gone)} of its files are gone from disk "
            f"({shown}); download them again",
            file=job.name,
        ) from exc


def write_bundle(job: BundleJob) -> BuiltBundle:
    """Write (build) or extend (append) one bundle, verify it, and return what it holds."""
    final = Path(job.record_dir) / job.name
    append = job.mode == "append"
    target, fh = _open_target(job, final)
    scanner = TrailingScanner(str(target), where=job.name)
    old = _open_old(job) if job.old_bundle and not append else None
    try:
        with zipfile.ZipFile(fh, "a" if append else "w", allowZip64=True) as zf:
            records = _carry_kept(zf, job, scanner) if append else []
            records += _copy_members(zf, fh, job, scanner, old)
            manifest = _write_embedded(zf, fh, job, scanner, records)
        fh.flush()
        if job.durable:
            os.fsync(fh.fileno())
        fh.close()
        scan = scanner.end()
        _check_directory(target, job.name, [*records, manifest])
    except BaseException:
        scanner.abandon()
        # close() flushes, and on a full disk fails again: the .partial must go regardless.
        with contextlib.suppress(OSError):
            fh.close()
        if not append:
            target.unlink(missing_ok=True)
        raise
    finally:
        if old is not None:
            old.close()
    if not append:
        os.replace(target, final)
        if job.durable:
            fsync_dir(final.parent)
    st = final.stat()
    if st.st_size != scan.size:
        raise BundleCorrupt(f"bundle {job.name} changed while it was verified")
    return BuiltBundle(job.name, st.st_size, st.st_mtime_ns, tuple(records), os.getpid())


def _open_target(job: BundleJob, final: Path) -> tuple[Path, IO[bytes]]:
    """The file written: the bundle itself when appending, else ``.ferry/<name>.partial``."""
    # The handle outlives this function: write_bundle closes it on every path.
    if job.mode == "append":
        return final, open(final, "r+b")
    target = Path(job.record_dir) / META_DIR / f"{job.name}.partial"
    target.parent.mkdir(parents=True, exist_ok=True)
    return target, open(target, "w+b")


def _carry_kept(zf: zipfile.ZipFile, job: BundleJob, scanner: TrailingScanner) -> list[MemberRecord]:
    """Appending: the entries already in the bundle, each handed to the scanner to verify."""
    by_key = {m.key: m for m in job.members}
    records = []
    for e in _prepare_append(zf, job):
        m = by_key[e.name]
        assert m.crc32 is not None
        scanner.push(e, int(m.crc32, 16))
        records.append(MemberRecord(m.key, m.size, m.crc32, m.md5, m.adler32))
    return records


def _copy_members(
    zf: zipfile.ZipFile, fh: IO[bytes], job: BundleJob, scanner: TrailingScanner, old: zipfile.ZipFile | None
) -> list[MemberRecord]:
    """Copy every member not already in the bundle, from its original or the old bundle."""
    sources = _Sources(job)
    records = []
    for m in job.members:
        if m.source == "kept":
            continue
        if scanner.error is not None:
            break  # the bundle is already known bad; end() raises it
        if m.source == "file":
            zi = _copy_file(zf, m, sources)
        else:
            assert old is not None, "bundle sources need the old bundle"
            zi = _copy_entry(zf, m, old, job.name)
        fh.flush()  # the scanner reads through its own handle
        scanner.push(_entry(zi), zi.CRC)
        records.append(MemberRecord(m.key, m.size, crc_hex(zi.CRC), m.md5, m.adler32))
    return records


def _write_embedded(
    zf: zipfile.ZipFile, fh: IO[bytes], job: BundleJob, scanner: TrailingScanner, records: list[MemberRecord]
) -> MemberRecord:
    """The embedded manifest, written as the bundle's last entry; returns its record."""
    data = embedded_manifest(job.recid, job.name, records)
    mi = _zinfo(EMBEDDED_NAME, len(data), EMBEDDED_DATE, False)
    zf.writestr(mi, data)
    fh.flush()
    crc = zlib.crc32(data)
    scanner.push(_entry(mi), crc)
    return MemberRecord(EMBEDDED_NAME, len(data), crc_hex(crc), "", "")


def _check_directory(path: Path, name: str, expected: Sequence[MemberRecord]) -> None:
    """The central directory as written on disk lists exactly the expected entries, in order."""
    with zipfile.ZipFile(path) as zf:
        got = [(e.name, e.file_size, crc_hex(e.crc32)) for e in read_directory(zf, where=name)]
    want = [(m.key, m.size, m.crc32) for m in expected]
    if got != want:
        raise BundleCorrupt(f"bundle {name}: the central directory written does not list what was zipped")


def fsync_file(path: str) -> None:
    """Make a verified bundle durable before the originals it replaces are deleted."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
    fsync_dir(Path(path).parent)


class _Defect(Exception):
    """A bundle defect found by ``inspect_bundle``: the bundle is rebuilt, not refused."""


def inspect_bundle(path: str, name: str, *, full_scan: bool) -> Inspection:
    """Read a bundle's directory and embedded manifest; with ``full_scan`` also every byte.

    Unsafe entry names raise ``UnsafePathError`` (the bundle is refused, not repaired);
    every other defect becomes ``Inspection.problem`` so the caller can rebuild.
    """
    pid = os.getpid()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Inspection(name, exists=False, worker_pid=pid)
    try:
        ordered, members = _read_listing(path, name)
        found = Inspection(name, True, None, members, size=st.st_size, mtime_ns=st.st_mtime_ns, worker_pid=pid)
        if not full_scan:
            return found
        _scan_every_entry(path, name, ordered, st.st_size)
    except _Defect as defect:
        return Inspection(name, True, str(defect), size=st.st_size, mtime_ns=st.st_mtime_ns, worker_pid=pid)
    return replace(found, scanned=True)


def _read_listing(path: str, name: str) -> tuple[list[EntryRecord], tuple[MemberRecord, ...]]:
    """The central directory in file order and the embedded manifest's members, checked
    against each other; raises ``_Defect`` naming what is wrong."""
    try:
        with zipfile.ZipFile(path) as zf:
            ordered = sorted(read_directory(zf, where=name), key=lambda e: e.header_offset)
            if not ordered or ordered[-1].name != EMBEDDED_NAME:
                raise _Defect("its embedded manifest is missing or not its last entry")
            embedded_for, members = parse_embedded(zf.read(EMBEDDED_NAME), where=f"{name}:{EMBEDDED_NAME}")
    except UnsafePathError:
        raise
    except (BundleCorrupt, InputError) as exc:
        raise _Defect(str(exc)) from exc
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as exc:
        raise _Defect(f"unreadable ({exc})") from exc
    if embedded_for != name:
        raise _Defect(f"its embedded manifest belongs to {embedded_for!r}")
    listed = [(m.key, m.size, m.crc32) for m in members]
    actual = [(e.name, e.file_size, crc_hex(e.crc32)) for e in ordered[:-1]]
    if listed != actual:
        raise _Defect("its embedded manifest disagrees with its central directory")
    return ordered, tuple(members)


def _scan_every_entry(path: str, name: str, ordered: Sequence[EntryRecord], size: int) -> None:
    """Read every byte and check every entry's CRC32; raises ``_Defect`` on a mismatch."""
    scanner = Scanner(path, where=name)
    try:
        for e in ordered:
            scanner.entry(e, e.crc32)
        scan = scanner.finish()
    except BundleCorrupt as exc:
        raise _Defect(exc.message) from exc
    finally:
        scanner.close()
    if scan.size != size:
        raise _Defect("it changed while it was read")
