"""What a download may record as durable, and how the bytes get to disk without a sync per file.

The page cache survives a kill -9, not a power cut. A fetched file is recorded in the
tree's state (and so trusted later without hashing) as durable only after a sync of its
file system that began after the file was closed; an fsync per file cost more than the
fetching of 1,000 small files. The syncs run beside the fetches, one at a time, each
covering every file finished before it, in a child process (``sync_tree``); the state is
written in a thread, a second's files at a time.

By default (``wait=False``, on a machine with a boot id) the run does not wait for the
disk: a fetched file is recorded within a second, unsynced, tagged with the boot id
(``TreeState.put(synced=False)``), trusted while the machine runs that boot and hashed
again by the first run after a reboot, which is when the disk could hold other bytes
than the page cache did; a kill -9 costs no hash. A sync every ``SETTLE_EVERY`` (30 s,
the first 30 s in) settles every tag of this boot stored before it, this run's and
earlier ones'; the kernel writes dirty pages back after 30 s on its own
(``vm.dirty_expire_centisecs``), so such a sync finds little left to write, and a crash
costs at most the last half minute's files a hash. Syncing every second cost a download
of two 500 MiB files 2.14-2.37 s against 1.95-2.01 s without (rclone, which never syncs:
1.7-1.9 s); the writeback it forced held the fsyncs at the end (the completion marker's,
the state's) for 0.13-0.25 s each. dd of 1 GiB wrote 392 MB/s with fdatasync and 1.7
GB/s into the page cache on the machine of 2026-12-05, 1.6 and 5.1 GB/s on that of
2026-12-06: what a sync costs is the machine's.

``wait=True`` (``ferry archive download --sync``, and where there is no boot id) waits:
a sync every second, one last sync that records everything as durable before the run
returns, and a large file asks the kernel to start writing each batch back as soon as
it is written (``start_writeback``, Linux ``sync_file_range``, which does not wait) so
that the last sync has less left to do (it took 0.38 s of a 2.2 s download without,
strace -T).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from subprocess import DEVNULL
from typing import cast

from ferry.core.tree import FileStat
from ferry.core.tree_state import TreeState

__all__ = ["RECORD_EVERY", "SETTLE_EVERY", "Durable", "start_writeback", "sync_tree"]

RECORD_EVERY = 1.0  # seconds between two recordings of the files placed meanwhile
SETTLE_EVERY = 30.0  # seconds between the syncs of a run that does not wait (module doc)
_WRITE = 2  # SYNC_FILE_RANGE_WRITE: start writeback of the dirty pages, do not wait
_Placed = tuple[str, FileStat, str]  # a placed file: path, stat, sha256
_SYNC = shutil.which("sync") if sys.platform.startswith("linux") else None  # `-f`: coreutils on Linux


class Durable:
    """Records fetched files in the state: as durable after a sync, else unsynced (module doc)."""

    def __init__(
        self,
        state: TreeState,
        root: Path,
        *,
        wait: bool = False,
        every: float = RECORD_EVERY,
        settle_every: float = SETTLE_EVERY,
    ) -> None:
        self.state = state
        self.root = root
        self.wait = wait or state.boot is None  # without a boot id an unsynced entry means nothing
        self.every = every
        self.settle_every = settle_every
        self.pending: list[_Placed] = []
        self.wake = asyncio.Event()
        self.closing = asyncio.Event()
        # The threads touch the state under this lock only; a close that does not wait
        # takes it to say that they are to touch it no more (``_abandoned``).
        self._lock = threading.Lock()
        self._abandoned = False
        self._inflight: list[_Placed] = []  # handed to a thread, not recorded yet

    def placed(self, path: str, st: FileStat, sha256: str) -> None:
        self.pending.append((path, st, sha256))
        self.wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        settled_at = loop.time()  # the first sync ``settle_every`` in, not at the first file
        while not self.closing.is_set():
            await self.wake.wait()
            self.wake.clear()
            if self.wait:
                await self.flush()
            else:
                # Recorded at once, unsynced: a kill -9 (same boot) then costs no hash.
                await self._in_thread(self._record_unsynced)
                if loop.time() - settled_at >= self.settle_every:
                    await _in_daemon_thread(lambda: self._sync_then_record([]))
                    settled_at = loop.time()
            with contextlib.suppress(TimeoutError):  # a second's files per thread hop
                await asyncio.wait_for(self.closing.wait(), self.every)

    async def flush(self) -> None:
        """Sync, then record what was placed before it as durable."""
        await self._in_thread(self._sync_then_record)

    async def _in_thread(self, fn: Callable[[list[_Placed]], None]) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        self._inflight = batch
        # Off the loop that carries every byte; a daemon thread, see _in_daemon_thread.
        await _in_daemon_thread(lambda: fn(batch))

    def _record_unsynced(self, batch: list[_Placed]) -> None:
        with self._lock:
            if self._abandoned:  # close recorded the batch
                return
            for path, st, sha256 in batch:
                self.state.put(path, st, {"sha256": sha256}, synced=False)
            self.state.save()  # committed: a kill keeps it
            self._inflight = []

    def _sync_then_record(self, batch: list[_Placed]) -> None:
        """One sync; then ``batch`` is recorded as durable, and every entry of this boot
        stored unsynced before the sync (this run's or an earlier one's) is settled."""
        with self._lock:
            if self._abandoned:
                return
            keys = self.state.unsynced()
        sync_tree(self.root)
        with self._lock:
            if self._abandoned:  # close recorded the batch, unsynced
                return
            for path, st, sha256 in batch:
                self.state.put(path, st, {"sha256": sha256})
            self.state.settle(keys)
            self.state.save()
            self._inflight = []

    async def close(self, syncer: asyncio.Task[None]) -> None:
        """Stop the background work; record what is left, after one last sync when waiting,
        else as unsynced without waiting for a sync in flight either (one took 0.43 s at
        the end of a download of two 500 MiB files, strace). On a failure or cancel too:
        what is placed is verified, and is worth recording."""
        self.closing.set()
        self.wake.set()
        if self.wait:
            with contextlib.suppress(Exception):
                await syncer
            await self.flush()
            return
        syncer.cancel()
        with contextlib.suppress(BaseException):
            await syncer
        with self._lock:  # held by a thread only while it touches the state
            self._abandoned = True
            batch, self._inflight, self.pending = self._inflight + self.pending, [], []
        for path, st, sha256 in batch:
            self.state.put(path, st, {"sha256": sha256}, synced=False)


def _in_daemon_thread(fn: Callable[[], None]) -> asyncio.Future[None]:
    """``fn()`` in a thread of its own that the process does not wait for at exit
    (asyncio.to_thread's are joined): a sync left running by a close that does not wait
    must not hold the exit. The kernel goes on writing back without it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(exc: BaseException | None) -> None:
        if done.done():  # its waiter was cancelled
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    def work() -> None:
        exc: BaseException | None = None
        try:
            fn()
        except BaseException as e:  # noqa: BLE001  # handed to the awaiting coroutine
            exc = e
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, exc)

    threading.Thread(target=work, name="ferry-sync", daemon=True).start()
    return done


def sync_tree(root: Path) -> None:
    """Write back the file system holding ``root`` (Linux: syncfs, that one only; else sync).

    In a child process (coreutils ``sync -f``) where there is one: a thread of ours in
    syncfs would hold the process's exit until the call returns, since the kernel ends a
    process only once all its threads have left their system calls (0.23 s after
    exit_group at the end of a download that did not wait, strace); a child's call does
    not. This thread waits for the child, and so the sync, as before."""
    if _SYNC is not None:
        done = subprocess.run(
            [_SYNC, "-f", os.fspath(root)], check=False, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL
        )
        if done.returncode == 0:
            return
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
