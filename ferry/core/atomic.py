"""The one atomic-write helper: temp file in the same folder, fsync, rename, fsync folder.

A reader, or the next run after a crash or a ``kill -9``, sees either the old file or the
complete new one, never a prefix. The temporary file sits beside the final one (a rename
is atomic only within one file system) and is removed when the write fails.

    atomic_write_bytes(path, data)            # small files, one call
    with AtomicWriter(path) as out:           # streams: write chunks, then commit on exit
        out.write(chunk)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once, at import (os.umask can only be read by setting it, which races with threads).
_MODE = 0o666 & ~_read_umask()


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (the entry lives in the folder)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicWriter:
    """Write ``path`` through a temporary sibling; the rename happens only on a clean exit.

    ``mkdirs`` creates missing parent folders first. ``tmp_dir``: where the temporary file
    lives instead of beside the result (same file system; a target keeps its unfinished
    files out of the folder it lists). ``written`` counts the bytes so far.
    """

    def __init__(self, path: Path, *, mkdirs: bool = True, tmp_dir: Path | None = None) -> None:
        self.path = Path(path)
        self.written = 0
        if mkdirs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tmp_dir is not None:
                tmp_dir.mkdir(parents=True, exist_ok=True)
        # The name starts with a dot and ends with .tmp so that tree scans skip it.
        where = tmp_dir if tmp_dir is not None else self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name[:80]}.", suffix=".tmp", dir=where)
        self.tmp = Path(tmp)
        os.fchmod(fd, _MODE)  # mkstemp makes 0600; the result should look like any new file
        self._fh: BinaryIO = os.fdopen(fd, "wb")
        self._flushed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._flushed = False
        n = self._fh.write(data)
        self.written += n
        return n

    def flush(self) -> os.stat_result:
        """Make the bytes durable; the stat of the finished file (a rename keeps its inode
        and mtime, so a caller may record it before ``commit``)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._flushed = True
        return os.fstat(self._fh.fileno())

    def commit(self) -> None:
        if not self._flushed:
            self.flush()
        self._fh.close()
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def atomic_write_bytes(path: Path, data: bytes, *, mkdirs: bool = True, tmp_dir: Path | None = None) -> None:
    with AtomicWriter(path, mkdirs=mkdirs, tmp_dir=tmp_dir) as out:
        out.write(data)
