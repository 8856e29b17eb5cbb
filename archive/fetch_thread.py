"""One file of an archive download fetched whole in a worker thread: read, hash, write, place.

For targets that can be read with blocking calls (``ThreadReader``: S3, a local folder):
the thread reads into its own buffer, hashes and writes that buffer and renames the
verified ``.part`` into place, letting go of the GIL for each of these, so the bytes never
pass the event loop and two files are read, hashed and written on two cores at once
(``upload.targets.s3_thread_get`` has the measurements). The loop's part per file is one
hand-over there and one back.

What this way cannot do it leaves to the loop's path (``archive.download``), which gives
each failure its meaning: when the target cannot open the file this way, or the read fails
midway, ``fetch_in_thread`` returns no stat; a large file keeps what was written, so the
loop's path resumes from the end of the ``.part``, a small one starts over. A file longer
or other than the manifest says is refused here as there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from archive.durability import start_writeback
from archive.manifest import ManifestRow
from archive.placing import Placer
from ferry.core.errors import VerificationError
from ferry.core.tree import FileStat
from upload.targets.base import BlockingOpen, BlockingStream

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["Control", "fetch_in_thread", "mismatch"]

# The thread's read and write size, measured over the benchmark tree (1,000 x 100 KiB +
# 2 x 500 MiB from SeaweedFS, 2026-12-06): 1 MiB writes into the page cache cost this
# machine 3.0-3.3 s of system time (the kernel backs them with large folios, slow to get
# here) and the download 4.2 s; 256 KiB 0.9-1.1 s and 2.7-3.1 s; 64 KiB 1.1-1.3 s and 3.1 s.
BUFFER = 256 * 1024
RESUMABLE = 1024 * 1024  # larger files keep their .part on a failure; smaller ones start over
WRITEBACK_EVERY = 1024 * 1024  # --sync: start the disk write of each MiB as it is written
REPORT_EVERY = 8 * 1024 * 1024  # progress of a large file, handed to the loop this often


class Stopped(Exception):
    """The download is being cancelled: this thread stops between two reads."""


@dataclass(frozen=True)
class Control:
    """What every thread fetch shares: the stop sign, how bytes are reported to the
    progress (from the thread; None: no progress), whether each file's writes are started
    to the disk as they go (``--sync``), and what is told when a file starts (None: the
    caller knows)."""

    stop: threading.Event
    report: Callable[[int], None] | None
    writeback: bool
    started: Callable[[str], None] | None = None


def fetch_in_thread(
    open_at: BlockingOpen, row: ManifestRow, part: str, placer: Placer, recid: str, ctl: Control
) -> tuple[FileStat | None, int]:
    """The placed file's stat (None: the loop's path takes over) and the bytes the caller
    still owes the progress (the rest of what this call wrote)."""
    if ctl.started is not None:
        ctl.started(row.path)
    have, sha = _resume(part, row.size) if row.size > RESUMABLE else (0, hashlib.sha256())
    stream = open_at(row.path, have) if have < row.size else None
    if stream is None and have < row.size:
        return None, 0
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if have else os.O_TRUNC), 0o666)
    try:
        try:
            got, reported = _copy(stream, fd, sha, have, row.size, ctl) if stream is not None else (have, 0)
        except _Cut as cut:
            if have == 0 and row.size <= RESUMABLE:
                _unlink(part)  # small: fetched again whole
                return None, 0
            return None, cut.unreported  # the loop's path resumes from what is written
        if ctl.writeback:
            start_writeback(fd)
        st = FileStat.of(os.fstat(fd))
    finally:
        os.close(fd)
        if stream is not None:
            stream.close()
    digest = sha.hexdigest()
    if got != row.size or digest != row.sha256:
        _unlink(part)  # the next try starts from nothing
        raise mismatch(got, digest, row, recid)
    placer.place(part, row.path)
    return st, row.size - reported


class _Cut(Exception):
    """The read failed midway; ``unreported``: bytes written but not yet reported."""

    def __init__(self, unreported: int) -> None:
        super().__init__(unreported)
        self.unreported = unreported


def _copy(stream: BlockingStream, fd: int, sha: _Hash, got: int, size: int, ctl: Control) -> tuple[int, int]:
    """Read, hash and write until the end (or one byte past ``size``); the bytes now in the
    file and those reported to the progress on the way."""
    reported = unreported = unflushed = 0
    buffer = memoryview(bytearray(BUFFER))
    while True:
        if ctl.stop.is_set():
            raise Stopped()
        try:
            n = stream.readinto(buffer)
        except OSError:
            raise _Cut(unreported) from None
        if not n:
            return got, reported
        got += n
        if got > size:
            return got, reported  # longer than the manifest says: refused by the caller
        piece = buffer[:n]
        sha.update(piece)
        while piece:
            piece = piece[os.write(fd, piece) :]
        unreported += n
        unflushed += n
        if ctl.writeback and unflushed >= WRITEBACK_EVERY:
            start_writeback(fd)
            unflushed = 0
        if ctl.report is not None and unreported >= REPORT_EVERY:
            ctl.report(unreported)
            reported, unreported = reported + unreported, 0


def _resume(part: str, size: int) -> tuple[int, _Hash]:
    """The length and sha256 of what a killed run left in ``part`` (dropped when longer than the file)."""
    sha = hashlib.sha256()
    try:
        with open(part, "rb", buffering=0) as fh:
            have = os.fstat(fh.fileno()).st_size
            if have > size:
                have = 0
            else:
                while block := fh.read(RESUMABLE):
                    sha.update(block)
    except FileNotFoundError:
        return 0, sha
    if have == 0:
        _unlink(part)
    return have, sha


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def mismatch(got: int, sha256: str, row: ManifestRow, recid: str) -> VerificationError:
    what = f"{got} bytes" if got != row.size else f"sha256 {sha256}"
    return VerificationError(
        f"fetched {what}, the manifest says {row.size} bytes with sha256 {row.sha256}", recid=recid, file=row.path
    )
