"""Bytes-weighted admission: ``WeightedLimiter`` (uploads) and ``ByteBudget`` (staging disk).

A weight above the capacity is clamped to it, so a file bigger than the whole budget runs
alone instead of being refused; the queue is strictly first come first served.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass
class _Waiter:
    weight: int
    future: asyncio.Future[None]


class WeightedLimiter:
    """A semaphore whose units are bytes: ``async with limiter.hold(size):``.

    - In-flight weight never exceeds ``capacity`` (``in_flight <= capacity`` always holds).
    - A weight above the capacity is clamped to it, so such an item waits until nothing else
      holds any weight and then runs alone (it cannot be refused: big files must move too).
    - Strict FIFO: a waiter that does not fit blocks the ones behind it, even small ones that
      would fit; otherwise a stream of small files could starve a big one forever.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("WeightedLimiter capacity must be positive")
        self.capacity = capacity
        self._in_flight = 0
        self._holders = 0
        self._queue: deque[_Waiter] = deque()
        self.peak = 0  # highest in-flight weight seen (stats)

    @property
    def in_flight(self) -> int:
        """Weight (bytes, clamped to the capacity per item) currently held."""
        return self._in_flight

    @property
    def holders(self) -> int:
        return self._holders

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def _clamp(self, weight: int) -> int:
        if weight < 0:
            raise ValueError(f"weight must not be negative, not {weight}")
        return min(weight, self.capacity)

    def _fits(self, weight: int) -> bool:
        return self._in_flight + weight <= self.capacity

    def _grant(self, weight: int) -> None:
        self._in_flight += weight
        self._holders += 1
        self.peak = max(self.peak, self._in_flight)

    def _wake(self) -> None:
        # Serve the queue head first, as long as it fits; stop at the first that does not.
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # cancelled while queued
                self._queue.popleft()
                continue
            if not self._fits(head.weight):
                break
            self._queue.popleft()
            self._grant(head.weight)
            head.future.set_result(None)

    async def acquire(self, weight: int) -> int:
        """Wait for room for ``weight``; return the weight actually held (pass it to release)."""
        w = self._clamp(weight)
        if not self._queue and self._fits(w):
            self._grant(w)
            return w
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiter(w, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Granted just as we were cancelled: give the weight back.
                self.release(w)
            else:
                # Our place in the queue may have been blocking others that now fit.
                self._wake()
            raise
        return w

    def release(self, held: int) -> None:
        """Give back what ``acquire`` returned."""
        if held < 0 or held > self._in_flight or self._holders <= 0:
            raise RuntimeError(f"release({held}) without a matching acquire (in flight: {self._in_flight})")
        self._in_flight -= held
        self._holders -= 1
        self._wake()

    @contextlib.asynccontextmanager
    async def hold(self, weight: int) -> AsyncIterator[int]:
        held = await self.acquire(weight)
        try:
            yield held
        finally:
            self.release(held)


class Reservation:
    """Bytes reserved in a ``ByteBudget``; release all at once or piece by piece."""

    def __init__(self, budget: ByteBudget, held: int, nbytes: int) -> None:
        self._budget = budget
        self._held = held  # what the budget counts (clamped to its capacity)
        self.nbytes = nbytes  # what was asked for

    @property
    def held(self) -> int:
        return self._held

    def release(self, nbytes: int | None = None) -> None:
        """Release ``nbytes`` (default: everything left). Releasing twice is harmless."""
        if self._held <= 0:
            return
        part = self._held if nbytes is None else min(max(nbytes, 0), self._held)
        self._held -= part
        self._budget._give_back(part, last=self._held == 0)


class ByteBudget:
    """The staging-disk budget: at most ``capacity`` bytes downloaded but not yet uploaded.

    ``r = await budget.reserve(size)`` before a download starts; ``r.release()`` once the
    file is verified on the target (or deleted, or its download failed). A file larger than
    the whole budget waits until nothing is staged and then goes alone. ``claim(size)``
    takes bytes without waiting, for files a resumed run finds already staged on disk.
    """

    def __init__(self, capacity: int) -> None:
        self._limiter = WeightedLimiter(capacity)
        self._forced = 0  # bytes claimed beyond the limiter's accounting

    @property
    def capacity(self) -> int:
        return self._limiter.capacity

    @property
    def staged(self) -> int:
        """Bytes currently reserved (stats)."""
        return self._limiter.in_flight

    @property
    def peak(self) -> int:
        return self._limiter.peak

    @property
    def waiting(self) -> int:
        return self._limiter.waiting

    async def reserve(self, nbytes: int) -> Reservation:
        held = await self._limiter.acquire(nbytes)
        return Reservation(self, held, nbytes)

    def claim(self, nbytes: int) -> Reservation:
        """Reserve now even if that overflows the budget (already-staged files)."""
        held = min(max(nbytes, 0), self.capacity)
        self._limiter._grant(held)
        return Reservation(self, held, nbytes)

    def _give_back(self, part: int, *, last: bool) -> None:
        lim = self._limiter
        lim._in_flight -= part
        if last:
            lim._holders -= 1
        lim._wake()
