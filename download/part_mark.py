"""How much of a ``.part`` file is really there: the contiguous prefix written, in a sidecar.

Chunks of one file are written out of order (several reads in flight), so a ``.part``
left by a kill can be longer than what was written: a later chunk landed, an earlier one
never did, and the gap reads back as zeros. Its length is therefore never trusted. While
a file streams in, the end of the contiguous run of completed writes is recorded in a
small sidecar next to it (``.<name>.written.part``: it ends in ``.part``, so whatever
clears partial files clears it too), rewritten in place every ``MARK_STEP`` bytes. The
value is written only after the writes it covers returned, so after a kill it can only
be short of the truth, never past it. A resume continues from ``min(mark, length)``.

A ``.part`` without a sidecar (left by an older version) is still resumed, but as before
only on probation: its prefix is re-hashed and the finished file must verify against the
source checksum (or the server's, for a file listed without one), else it is fetched
again from byte 0.
"""

from __future__ import annotations

import os
from pathlib import Path

from ferry.core.errors import DiskFull, is_disk_full

PART_SUFFIX = ".part"
# A kill costs at most this much re-fetching; a rewrite per 4 MiB chunk is one tiny pwrite.
MARK_STEP = 4 * 1024 * 1024
_WIDTH = 20  # fixed width: an in-place rewrite never leaves the tail of a longer number


def mark_path(part: Path) -> Path:
    stem = part.name.removesuffix(PART_SUFFIX)
    return part.with_name(f".{stem}.written{PART_SUFFIX}")


def read_mark(part: Path) -> int | None:
    """The recorded prefix of ``part``; None if there is no sidecar; 0 if it is unreadable
    (a torn or foreign sidecar proves nothing, so nothing is kept)."""
    try:
        text = mark_path(part).read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return 0
    try:
        value = int(text.strip() or b"x")
    except ValueError:
        return 0
    return max(value, 0)


def remove_mark(part: Path) -> None:
    mark_path(part).unlink(missing_ok=True)


class PrefixMark:
    """Tracks completed writes of one ``.part`` and records their contiguous end.

    ``written(offset, size)`` is called on the event loop after each write returned; the
    sidecar is rewritten (one small ``pwrite``) when the prefix grew by ``MARK_STEP``.
    """

    def __init__(self, part: Path, start: int, *, step: int = MARK_STEP) -> None:
        self.path = mark_path(part)
        self.prefix = start
        self._saved = -1
        self._step = step
        self._done: dict[int, int] = {}  # completed writes past a gap: offset -> size
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            self._save()
        except BaseException:
            os.close(self._fd)
            raise

    def written(self, offset: int, size: int) -> None:
        if offset != self.prefix:
            self._done[offset] = size
            return
        self.prefix += size
        while self.prefix in self._done:
            self.prefix += self._done.pop(self.prefix)
        if self.prefix - self._saved >= self._step:
            self._save()

    def _save(self) -> None:
        data = b"%*d\n" % (_WIDTH, self.prefix)
        try:
            os.pwrite(self._fd, data, 0)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull("recording a download's progress", path=self.path, needed=len(data)) from exc
            raise
        self._saved = self.prefix

    def close(self) -> None:
        """Record the prefix reached (a retry in this run, or a run after an error, resumes
        from there: between rewrites up to ``MARK_STEP`` would be fetched again), then close."""
        try:
            if self.prefix != self._saved:
                self._save()
        finally:
            os.close(self._fd)
