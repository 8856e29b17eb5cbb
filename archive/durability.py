"""What a download may record as durable, and how the bytes get to disk without a sync per file.

The page cache survives a kill -9, not a power cut. A fetched file is recorded in the
tree's state (and so trusted later without hashing) as durable only after a sync of its
file system that began after the file was closed. The syncs run beside the fetches, one
at a time, each covering every file finished before it; an fsync per file cost more than
the fetching of 1,000 small files.

The files finished after the last of those syncs: by default (``wait=False``, on a
machine with a boot id) the run does not wait for the disk at its end. They are recorded
as unsynced, tagged with the boot id (``TreeState.put(synced=False)``), trusted while the
machine runs that boot and hashed again by the first run after a reboot, which is when
the disk could hold other bytes than the page cache did. The next sync of a later run
settles them. Waiting cost the most of anything in a download of large files: this disk
writes 392 MB/s with fdatasync (dd, 1 GiB) and 1.7 GB/s into the page cache, and two
500 MiB files took 3.0-3.4 s with the last sync against 2.2-2.4 s without (rclone, which
never syncs: 2.0-2.1 s).

``wait=True`` (``ferry archive download --sync``, and where there is no boot id) waits:
one last sync records everything as durable before the run returns, and a large file
asks the kernel to start writing each batch back as soon as it is written
(``start_writeback``, Linux ``sync_file_range``, which does not wait) so that the last
sync has less left to do (it took 0.38 s of a 2.2 s download without, strace -T).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
from collections.abc import Callable
from pathlib import Path
from typing import cast

from ferry.core.tree import FileStat
from ferry.core.tree_state import TreeState

__all__ = ["SYNC_EVERY", "Durable", "start_writeback", "sync_tree"]

SYNC_EVERY = 1.0  # seconds between the syncs that let the state record fetched files
_WRITE = 2  # SYNC_FILE_RANGE_WRITE: start writeback of the dirty pages, do not wait


class Durable:
    """Records fetched files in the state once a sync made them durable (module doc)."""

    def __init__(self, state: TreeState, root: Path, *, wait: bool = False, every: float = SYNC_EVERY) -> None:
        self.state = state
        self.root = root
        self.every = every
        self.wait = wait or state.boot is None  # without a boot id an unsynced entry means nothing
        self.pending: list[tuple[str, FileStat, str]] = []
        self.wake = asyncio.Event()
        self.closing = asyncio.Event()

    def placed(self, path: str, st: FileStat, sha256: str) -> None:
        self.pending.append((path, st, sha256))
        self.wake.set()

    async def run(self) -> None:
        while not self.closing.is_set():
            await self.wake.wait()
            self.wake.clear()
            await self.flush()
            # A sync per file would cost what the fsyncs did; one a second bounds what a
            # kill leaves unrecorded (hashed again by the next run) to a second's worth.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), self.every)

    async def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        # The state is used by this thread only while the fetches run; its writes go
        # there too, off the loop that carries every byte.
        await asyncio.to_thread(self._sync_and_record, batch)

    def _sync_and_record(self, batch: list[tuple[str, FileStat, str]]) -> None:
        earlier = self.state.unsynced()  # an earlier run's, in this boot: this sync covers them
        sync_tree(self.root)
        for path, st, sha256 in batch:
            self.state.put(path, st, {"sha256": sha256})
        self.state.settle(earlier)

    async def close(self, syncer: asyncio.Task[None]) -> None:
        """Stop the background syncs; record what finished meanwhile, after one last sync
        when waiting, else as unsynced (module doc). On a failure or cancel too: what is
        placed is verified, and is worth recording."""
        self.closing.set()
        self.wake.set()
        with contextlib.suppress(Exception):
            await syncer
        if self.wait:
            await self.flush()
            return
        batch, self.pending = self.pending, []
        for path, st, sha256 in batch:
            self.state.put(path, st, {"sha256": sha256}, synced=False)


def sync_tree(root: Path) -> None:
    """Write back the file system holding ``root`` (Linux: syncfs, that one only; else sync)."""
    fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        if _syncfs is None or _syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _find_syncfs() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError, TypeError):  # no libc by that name (not Linux)
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return cast(Callable[[int], int], fn)


_syncfs = _find_syncfs()


def _find_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError, TypeError):  # not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], fn)


_sync_file_range = _find_sync_file_range()


def start_writeback(fd: int) -> None:
    """Start writing ``fd``'s dirty pages to disk, without waiting (a hint: the sync that
    lets the state record the file still decides). Elsewhere than Linux, nothing."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _WRITE)
