"""Concurrency and rate limits for the pipeline.

- ``RateLimiter``: a request-rate throttle with two sliding windows (per minute and per
  hour), built on ``asyncio_throttle.Throttler`` (one per window), plus ``pause_until`` so
  one 429's ``Retry-After`` pauses every request to that target.
- ``WeightedLimiter``: a bytes-weighted semaphore for uploads (a file weighs its size; one
  heavier than the whole capacity runs alone), first come first served.
- ``ByteBudget``: the staging-disk budget ("never download more than N bytes ahead of the
  uploads"): reserve before a download starts, release once the file is verified on the
  target (or deleted).
- ``CircuitBreaker``: pauses the run when the target fails most requests in a window, then
  lets one probe through after a cool-down.

Every class takes an injectable ``clock`` (monotonic seconds) and ``sleep`` so tests can
drive time by hand instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

from asyncio_throttle import Throttler

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class _Window(Throttler):
    """One sliding window: at most ``rate_limit`` acquisitions in any ``period`` seconds.

    The parent keeps the timestamps of recent acquisitions in ``_task_logs``; we reuse that
    state but read the time from our clock, and split "is there room" from "take a slot" so
    two windows can be checked together and stamped with the same instant (taking one
    window's slot and then waiting on the other would date the first slot too early).
    """

    def __init__(self, rate_limit: int, period: float, clock: Clock) -> None:
        super().__init__(rate_limit=rate_limit, period=period)
        self._clock = clock

    def flush(self) -> None:
        now = self._clock()
        logs = self._task_logs
        while logs and now - logs[0] >= self.period:
            logs.popleft()

    def wait_time(self) -> float:
        """Seconds until a slot frees (0 when there is room now)."""
        self.flush()
        if len(self._task_logs) < self.rate_limit:
            return 0.0
        # The oldest of the last ``rate_limit`` stamps must leave the window.
        oldest = self._task_logs[len(self._task_logs) - self.rate_limit]
        return max(0.0, oldest + self.period - self._clock())

    def take(self, now: float) -> None:
        self._task_logs.append(now)

    def give_back(self) -> None:
        """Forget the newest stamp (a refunded request); stamps are in order, newest last."""
        if self._task_logs:
            self._task_logs.pop()

    @property
    def used(self) -> int:
        self.flush()
        return len(self._task_logs)


class RateLimiter:
    """At most ``per_minute`` requests in any 60 s and ``per_hour`` in any 3600 s.

    Use ``async with limiter:`` around one request. Waiters are served in arrival order
    (one asyncio.Lock holds the queue, so only the head waiter sleeps on the clock and the
    others do not poll). ``pause_until(deadline)`` holds every new request until the
    monotonic ``deadline`` (a later call can only extend the pause, never shorten it).
    """

    def __init__(
        self,
        per_minute: int,
        per_hour: int,
        *,
        minute: float = 60.0,
        hour: float = 3600.0,
        margin_s: float = 0.1,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if per_minute <= 0 or per_hour <= 0:
            raise ValueError("RateLimiter needs per_minute > 0 and per_hour > 0")
        self._clock = clock
        self._sleep = sleep
        # The server counts arrivals, we count departures: network jitter can bring two
        # requests closer on its side. ``margin_s`` widens our windows to absorb that.
        self._windows = (
            _Window(per_minute, minute + margin_s, clock),
            _Window(per_hour, hour + margin_s, clock),
        )
        self._lock = asyncio.Lock()
        self._paused_until = 0.0
        self.acquired = 0  # total requests let through (stats)
        self.waited_s = 0.0  # total time spent waiting for a slot (stats)
        self.refunded = 0  # slots given back by requests that never reached the server

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def pause_until(self, monotonic_deadline: float) -> None:
        """Hold every new request until ``monotonic_deadline`` (e.g. now + Retry-After)."""
        self._paused_until = max(self._paused_until, monotonic_deadline)

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._clock() + max(0.0, seconds))

    def used(self) -> tuple[int, int]:
        """Requests counted in the (minute, hour) windows right now."""
        return self._windows[0].used, self._windows[1].used

    def stamps(self) -> list[float]:
        """When the requests still inside the longest window were let through (clock time)."""
        longest = max(self._windows, key=lambda w: w.period)
        longest.flush()
        return list(longest._task_logs)

    def preload(self, stamps: Iterable[float]) -> None:
        """Count earlier requests (clock times, oldest first) as spent, e.g. those of the
        process this one replaces: a budget share survives a restart."""
        for stamp in sorted(stamps):
            for w in self._windows:
                w.take(stamp)

    async def acquire(self) -> None:
        start = self._clock()
        async with self._lock:
            while True:
                now = self._clock()
                delay = max([self._paused_until - now, *(w.wait_time() for w in self._windows)])
                if delay <= 0:
                    for w in self._windows:
                        w.take(now)
                    break
                # Sleep in bounded steps so a pause set meanwhile, or a cancelled waiter, is
                # noticed within a second even when the hour window asks for a long wait.
                await self._sleep(min(delay, 1.0))
        self.acquired += 1
        self.waited_s += self._clock() - start

    def refund(self) -> None:
        """Give back the newest slot: its request never reached the server (connection
        refused), so the server did not count it either."""
        for w in self._windows:
            w.give_back()
        self.refunded += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


# --- bytes-weighted admission --------------------------------------------------------------


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


# --- circuit breaker -----------------------------------------------------------------------

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    """Stops traffic to a target that fails most requests, then probes it.

    Callers ``await breaker.wait_closed()`` before a request and ``breaker.record(ok)`` after
    it. Count only failures that say the target is unwell (5xx, timeouts, connection
    errors, 429), not a 404 or a validation error about one record.

    - closed: outcomes of the last ``window_s`` seconds are kept; when at least
      ``min_requests`` are in the window and the failed share is >= ``failure_ratio``, it opens.
    - open: every ``wait_closed()`` waits; after ``cool_down_s`` it turns half-open.
    - half-open: exactly one caller (the probe) passes; its success closes the breaker, its
      failure opens it again for another cool-down. A probe that never reports (cancelled)
      is replaced by a new one after another ``cool_down_s``.
    Outcomes reported while open (requests that started before it opened) are ignored.
    """

    def __init__(
        self,
        window_s: float = 60.0,
        min_requests: int = 10,
        failure_ratio: float = 0.5,
        cool_down_s: float = 30.0,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        poll_s: float = 0.25,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        if window_s <= 0 or min_requests < 1 or not 0 < failure_ratio <= 1 or cool_down_s < 0:
            raise ValueError("CircuitBreaker needs window_s > 0, min_requests >= 1, 0 < failure_ratio <= 1")
        self.window_s = window_s
        self.min_requests = min_requests
        self.failure_ratio = failure_ratio
        self.cool_down_s = cool_down_s
        self._clock = clock
        self._sleep = sleep
        self._poll = poll_s
        self._on_change = on_change
        self._state = CLOSED
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._failures = 0
        self._opened_at = 0.0
        self._probe_at: float | None = None  # when the current probe was let through
        self.opened = 0  # how many times it opened (stats)
        self.trips_in_a_row = 0  # openings since it last closed: a target that stays down
        self._listeners: list[Callable[[str, str], None]] = []

    @property
    def state(self) -> str:
        self._advance()
        return self._state

    def _set(self, state: str) -> None:
        if state == self._state:
            return
        old, self._state = self._state, state
        if state == OPEN:
            self.opened += 1
            self.trips_in_a_row += 1
        elif state == CLOSED:
            self.trips_in_a_row = 0
        log.warning("circuit breaker %s -> %s", old, state)
        if self._on_change is not None:
            self._on_change(old, state)
        for listener in list(self._listeners):
            listener(old, state)

    def add_listener(self, listener: Callable[[str, str], None]) -> None:
        """Also call ``listener(old, new)`` on every change (the bulk runner's bound)."""
        self._listeners.append(listener)

    def _trim(self, now: float) -> None:
        while self._outcomes and now - self._outcomes[0][0] >= self.window_s:
            _, ok = self._outcomes.popleft()
            if not ok:
                self._failures -= 1

    def _advance(self) -> None:
        if self._state == OPEN and self._clock() - self._opened_at >= self.cool_down_s:
            self._probe_at = None
            self._set(HALF_OPEN)

    def record(self, ok: bool) -> None:
        """Report the outcome of one request."""
        now = self._clock()
        self._advance()
        if self._state == OPEN:
            return
        if self._state == HALF_OPEN:
            if ok:
                self._outcomes.clear()
                self._failures = 0
                self._probe_at = None
                self._set(CLOSED)
            else:
                self._trip(now)
            return
        self._outcomes.append((now, ok))
        if not ok:
            self._failures += 1
        self._trim(now)
        n = len(self._outcomes)
        if n >= self.min_requests and self._failures / n >= self.failure_ratio:
            self._trip(now)

    def record_success(self) -> None:
        self.record(True)

    def record_failure(self) -> None:
        self.record(False)

    def _trip(self, now: float) -> None:
        self._opened_at = now
        self._probe_at = None
        self._outcomes.clear()
        self._failures = 0
        self._set(OPEN)

    def allow(self) -> bool:
        """Non-blocking check: may a request go now? (Takes the probe slot when half-open.)"""
        self._advance()
        if self._state == CLOSED:
            return True
        if self._state == HALF_OPEN:
            now = self._clock()
            if self._probe_at is None or now - self._probe_at >= max(self.cool_down_s, self._poll):
                self._probe_at = now
                return True
        return False

    async def wait_closed(self) -> None:
        """Return when a request may go: at once when closed, else after cool-down as probe."""
        while not self.allow():
            if self._state == OPEN:
                remaining = self._opened_at + self.cool_down_s - self._clock()
                await self._sleep(max(min(remaining, self._poll), 0.0))
            else:
                await self._sleep(self._poll)
