"""Where fetched bytes go: written at their offsets, hashed in order, memory bounded.

Chunks of one file may arrive out of order (several XRootD reads in flight). Each chunk
is written with ``pwrite`` in a worker thread as soon as it arrives; the digests need the
bytes in order, so chunks wait in a small reorder buffer until the gap before them is
filled, and are hashed while they are being written. Digests are split into lanes (md5
alone, adler32 and the rest together); a lane is worked by one pool thread at a time,
back to back while chunks are queued, so the two costliest hashes of one big file use both
cores (md5 alone is ~750 MB/s on one core). Small in-order chunks take a fast path: one
thread hop writes and hashes them. ``MemorySink`` keeps a small file whole so it can be
verified before it is written. ``ByteBudget`` caps the bytes held in memory across all
transfers: a chunk's reservation is returned only when its write and every lane are done.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor

from ferry.core.checksums import MultiHasher, hash_file
from ferry.core.errors import DiskFull, is_disk_full

# Chunks up to this size, arriving in order with no hashing queued, are written and hashed
# in one thread hop: per-file overhead dominates for small files, not hashing.
SMALL_CHUNK = 1024 * 1024


class ByteBudget:
    """A semaphore counted in bytes; a request larger than the whole budget waits for all of it."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("ByteBudget capacity must be positive")
        self.capacity = capacity
        self.available = capacity
        self._cond = asyncio.Condition()

    async def acquire(self, nbytes: int) -> int:
        """Wait until ``nbytes`` (capped at the capacity) are free; return what was taken."""
        take = min(nbytes, self.capacity)
        async with self._cond:
            await self._cond.wait_for(lambda: self.available >= take)
            self.available -= take
        return take

    def release(self, nbytes: int) -> None:
        self.available += nbytes
        # Wake waiters without awaiting the lock: release is called from plain callbacks.
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()


def lanes_for(algorithms: Iterable[str]) -> list[tuple[str, ...]]:
    """Split digests into lanes that run in parallel: each slow hash gets its own lane.

    adler32 is cheap (~3.4 GB/s): it gets its own lane next to md5 (two lanes, two
    cores) or rides with the last slow hash when there are already two or more.
    """
    algs = list(dict.fromkeys(algorithms))
    lanes: list[tuple[str, ...]] = [(a,) for a in algs if a != "adler32"]
    if "adler32" in algs:
        if len(lanes) >= 2:
            lanes[-1] = (*lanes[-1], "adler32")
        else:
            lanes.append(("adler32",))
    return lanes


class _Chunk:
    """A chunk waiting to be hashed; hashable by identity so it can sit in a set."""

    __slots__ = ("data", "left", "reserved", "size")

    def __init__(self, data: bytes, reserved: int, lanes: int) -> None:
        self.data = data
        self.size = len(data)
        self.reserved = reserved
        self.left = lanes


class _Lane:
    """One group of digests, fed in order, worked by one pool thread at a time.

    While chunks are queued, the same worker thread hashes them back to back without a
    trip through the event loop: a round trip per chunk would leave md5 (the slowest
    digest, ~750 MB/s) idle for up to a GIL switch interval between chunks.
    """

    def __init__(
        self, hasher: MultiHasher, executor: Executor, loop: asyncio.AbstractEventLoop, done: Callable[[_Chunk], None]
    ) -> None:
        self.hasher = hasher
        self._executor = executor
        self._loop = loop
        self._done = done
        self._lock = threading.Lock()
        self._queue: deque[_Chunk] = deque()
        self._working = False
        self._cancelled = False
        self._pushed = 0
        self._finished = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def push(self, chunk: _Chunk) -> None:
        self._pushed += 1
        with self._lock:
            self._queue.append(chunk)
            if self._working:
                return
            self._working = True
        self._executor.submit(self._work)

    def _work(self) -> None:  # in a pool thread
        while True:
            with self._lock:
                if not self._queue or self._cancelled:
                    self._queue.clear()
                    self._working = False
                    return
                chunk = self._queue.popleft()
            # A pool-thread task's boundary: whatever the hasher raises is reported by drain();
            # letting anything escape here would skip _finish_one and leave drain() waiting forever.
            try:
                self.hasher.update(chunk.data)
            except BaseException as exc:  # noqa: BLE001 - worker task boundary; re-raised by drain()
                self._error = exc
            try:
                self._loop.call_soon_threadsafe(self._finish_one, chunk)
            except RuntimeError:  # the loop is gone: the transfer was abandoned
                return

    def _finish_one(self, chunk: _Chunk) -> None:
        self._finished += 1
        self._done(chunk)
        if self._waiter is not None and self._finished >= self._pushed and not self._waiter.done():
            self._waiter.set_result(None)

    async def drain(self) -> None:
        if self._finished < self._pushed:
            self._waiter = self._loop.create_future()
            await self._waiter
            self._waiter = None
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True


class FileSink:
    """A ``ChunkSink`` writing one ``.part`` file from ``start`` and hashing it in order.

    ``hashers`` carry the digests of the bytes before ``start`` (a verified resumed prefix);
    use ``prefix_hashers`` to build them.
    """

    def __init__(
        self,
        fd: int,
        *,
        start: int,
        hashers: list[MultiHasher],
        budget: ByteBudget,
        executor: Executor,
        on_bytes: Callable[[int], None] | None = None,
        on_written: Callable[[int, int], None] | None = None,
    ) -> None:
        self._fd = fd
        self._on_written = on_written  # (offset, size) once a write returned: download.part_mark
        self._next = start  # first offset not yet handed to the digests
        self._budget = budget
        self._executor = executor
        self._on_bytes = on_bytes
        self._pending: dict[int, _Chunk] = {}  # arrived, waiting for the bytes before them
        self._held: set[_Chunk] = set()  # not yet released: pending, writing or hashing
        self._fast_busy = False
        self.hashers = hashers
        loop = asyncio.get_running_loop()
        self._lanes = [_Lane(h, executor, loop, self._unit_done) for h in hashers]
        self.written = 0  # bytes written by this sink (not counting the resumed prefix)

    async def reserve(self, nbytes: int) -> None:
        await self._budget.acquire(nbytes)

    def release(self, nbytes: int) -> None:
        self._budget.release(min(nbytes, self._budget.capacity))

    async def put(self, offset: int, data: bytes, *, reserved: int) -> None:
        size = len(data)
        if offset < self._next or offset in self._pending:
            self.release(reserved)
            raise ValueError(f"chunk at offset {offset} delivered twice")
        loop = asyncio.get_running_loop()
        if offset == self._next and size <= SMALL_CHUNK and not self._held and not self._fast_busy:
            # Nothing can be hashed before this chunk and nothing is hashing: write and
            # hash in one thread hop. Chunks arriving meanwhile wait in _pending.
            self._fast_busy = True
            self._next += size
            try:
                await loop.run_in_executor(self._executor, self._write_and_hash, data, offset)
            finally:
                self._fast_busy = False
                self.release(reserved)
            self._count(offset, size)
            self._drain()
            return
        # Hash (in order) and write (at its offset) at the same time: the bytes are
        # immutable. The reservation goes back when the write and every lane are done.
        chunk = _Chunk(data, reserved, len(self._lanes) + 1)
        self._held.add(chunk)
        self._pending[offset] = chunk
        self._drain()
        try:
            await loop.run_in_executor(self._executor, pwrite_all, self._fd, data, offset)
        finally:
            self._unit_done(chunk)
        self._count(offset, size)

    def _drain(self) -> None:
        """Hand every chunk that is next in order to the lanes."""
        if self._fast_busy:
            return
        while self._next in self._pending:
            chunk = self._pending.pop(self._next)
            self._next += chunk.size
            for lane in self._lanes:
                lane.push(chunk)

    def _write_and_hash(self, data: bytes, offset: int) -> None:
        pwrite_all(self._fd, data, offset)
        for hasher in self.hashers:
            hasher.update(data)

    def _count(self, offset: int, size: int) -> None:
        self.written += size
        if self._on_written is not None:
            self._on_written(offset, size)
        if self._on_bytes is not None:
            self._on_bytes(size)

    def _unit_done(self, chunk: _Chunk) -> None:
        """One of a chunk's jobs (its write, or one lane's hashing) is done."""
        chunk.left -= 1
        if chunk.left == 0 and chunk in self._held:
            self._held.discard(chunk)
            chunk.data = b""
            self.release(chunk.reserved)

    async def finish(self) -> int:
        """Wait for all hashing; return the end offset of the in-order bytes."""
        for lane in self._lanes:
            await lane.drain()
        if self._pending:
            gap = min(self._pending)
            raise ValueError(f"bytes missing before offset {gap} (hashed up to {self._next})")
        return self._next

    def abort(self) -> None:
        """Stop hashing after a failure and give every reservation back."""
        for lane in self._lanes:
            lane.cancel()
        for chunk in self._held:
            self.release(chunk.reserved)
        self._held.clear()
        self._pending.clear()

    def hexdigests(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for hasher in self.hashers:
            out.update(hasher.hexdigests())
        return out


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.pwrite(fd, view, offset)
        except OSError as exc:
            if is_disk_full(exc):
                # Named here, where the size is known: the file and the bytes still to write.
                raise DiskFull("downloading", path=_fd_path(fd), needed=len(view)) from exc
            raise
        view = view[n:]
        offset += n


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"file descriptor {fd}"


class MemorySink:
    """A ``ChunkSink`` that keeps a small file in memory, so that verifying, writing and
    renaming it take one thread hop (per-file overhead dominates small files). Its bytes
    stay counted in the budget until ``close``."""

    def __init__(self, budget: ByteBudget, on_bytes: Callable[[int], None] | None = None) -> None:
        self._budget = budget
        self._on_bytes = on_bytes
        self._parts: dict[int, bytes] = {}
        self._reserved = 0
        self.written = 0

    async def reserve(self, nbytes: int) -> None:
        self._reserved += await self._budget.acquire(nbytes)

    def release(self, nbytes: int) -> None:
        give = min(nbytes, self._budget.capacity, self._reserved)
        self._reserved -= give
        self._budget.release(give)

    async def put(self, offset: int, data: bytes, *, reserved: int) -> None:
        if offset in self._parts:
            raise ValueError(f"chunk at offset {offset} delivered twice")
        self._parts[offset] = data
        self.written += len(data)
        if self._on_bytes is not None:
            self._on_bytes(len(data))

    def data(self, start: int = 0) -> bytes:
        """The bytes from ``start``, joined in order; a gap is an error."""
        out = []
        at = start
        for offset in sorted(self._parts):
            if offset != at:
                raise ValueError(f"bytes missing at offset {at}")
            out.append(self._parts[offset])
            at += len(self._parts[offset])
        return b"".join(out)

    def close(self) -> None:
        self._parts.clear()
        if self._reserved:
            self._budget.release(self._reserved)
            self._reserved = 0


async def prefix_hashers(path: str, length: int, lanes: list[tuple[str, ...]], executor: Executor) -> list[MultiHasher]:
    """Hash the first ``length`` bytes of a file, one thread per lane (both cores)."""
    loop = asyncio.get_running_loop()
    if length == 0:
        return [MultiHasher(lane) for lane in lanes]
    jobs = [loop.run_in_executor(executor, _hash_prefix, path, lane, length) for lane in lanes]
    return list(await asyncio.gather(*jobs))


def _hash_prefix(path: str, lane: tuple[str, ...], length: int) -> MultiHasher:
    hasher = hash_file(path, lane, limit=length)
    if hasher.size != length:
        raise ValueError(f"{path} is shorter than {length} bytes")
    return hasher
