"""Where fetched bytes go: written at their offsets, hashed in order, memory bounded.

Chunks of one file may arrive out of order (several XRootD reads in flight). Each chunk
is written with ``pwrite`` in a worker thread as soon as it arrives; the digests need the
bytes in order, so chunks wait in a small reorder buffer until the gap before them is
filled. Digests are split into lanes (md5 alone, adler32 and the rest together), each fed
by its own task through the thread pool, so the two costliest hashes of one big file use
both cores (md5 alone is ~750 MB/s on one core). Tiny in-order chunks take a fast path:
one thread hop writes and hashes them. ``ByteBudget`` caps the bytes held in memory
across all transfers: a chunk's reservation is returned only when every lane is done.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor

from ferry.checksums import MultiHasher, hash_file

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

    __slots__ = ("data", "left", "reserved")

    def __init__(self, data: bytes, reserved: int, lanes: int) -> None:
        self.data = data
        self.reserved = reserved
        self.left = lanes


class _Lane:
    """One group of digests, fed in order by its own task."""

    def __init__(self, hasher: MultiHasher, executor: Executor, done: Callable[[_Chunk], None]) -> None:
        self.hasher = hasher
        self._executor = executor
        self._done = done
        self._queue: asyncio.Queue[_Chunk | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def push(self, chunk: _Chunk) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._queue.put_nowait(chunk)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            chunk = await self._queue.get()
            if chunk is None:
                return
            await loop.run_in_executor(self._executor, self.hasher.update, chunk.data)
            self._done(chunk)

    async def drain(self) -> None:
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


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
    ) -> None:
        self._fd = fd
        self._next = start  # first offset not yet handed to the digests
        self._budget = budget
        self._executor = executor
        self._on_bytes = on_bytes
        self._pending: dict[int, _Chunk] = {}
        self._in_lanes: set[_Chunk] = set()  # queued in lanes, not yet hashed by all
        self._fast_busy = False
        self.hashers = hashers
        self._lanes = [_Lane(h, executor, self._lane_done) for h in hashers]
        self.written = 0  # bytes written by this sink (not counting the resumed prefix)

    async def reserve(self, nbytes: int) -> None:
        # Returned value is what to release later; callers pass it back as ``reserved``.
        await self._budget.acquire(nbytes)

    def release(self, nbytes: int) -> None:
        self._budget.release(min(nbytes, self._budget.capacity))

    async def put(self, offset: int, data: bytes, *, reserved: int) -> None:
        size = len(data)
        if offset < self._next or offset in self._pending:
            self.release(reserved)
            raise ValueError(f"chunk at offset {offset} delivered twice")
        loop = asyncio.get_running_loop()
        if (
            offset == self._next
            and size <= SMALL_CHUNK
            and not self._pending
            and not self._in_lanes
            and not self._fast_busy
        ):
            # Nothing can be hashed before this chunk and nothing is hashing: write and
            # hash in one thread hop. Chunks arriving meanwhile wait in _pending.
            self._fast_busy = True
            self._next += size
            try:
                await loop.run_in_executor(self._executor, self._write_and_hash, data, offset)
            finally:
                self._fast_busy = False
                self.release(reserved)
            self._count(size)
            self._drain()
            return
        try:
            await loop.run_in_executor(self._executor, _pwrite_all, self._fd, data, offset)
        except BaseException:
            self.release(reserved)
            raise
        self._count(size)
        self._pending[offset] = _Chunk(data, reserved, len(self._lanes))
        self._drain()

    def _drain(self) -> None:
        """Hand every chunk that is next in order to the lanes."""
        if self._fast_busy:
            return
        while self._next in self._pending:
            chunk = self._pending.pop(self._next)
            self._next += len(chunk.data)
            if not self._lanes:  # nothing to hash: the chunk is done once written
                self.release(chunk.reserved)
                continue
            self._in_lanes.add(chunk)
            for lane in self._lanes:
                lane.push(chunk)

    def _write_and_hash(self, data: bytes, offset: int) -> None:
        _pwrite_all(self._fd, data, offset)
        for hasher in self.hashers:
            hasher.update(data)

    def _count(self, size: int) -> None:
        self.written += size
        if self._on_bytes is not None:
            self._on_bytes(size)

    def _lane_done(self, chunk: _Chunk) -> None:
        chunk.left -= 1
        if chunk.left == 0:
            self._in_lanes.discard(chunk)
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
        for chunk in (*self._pending.values(), *self._in_lanes):
            self.release(chunk.reserved)
        self._pending.clear()
        self._in_lanes.clear()

    def hexdigests(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for hasher in self.hashers:
            out.update(hasher.hexdigests())
        return out


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


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
