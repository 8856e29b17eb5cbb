"""The request-rate throttle: two sliding windows (per minute and per hour) per target.

Built on ``asyncio_throttle.Throttler`` (one per window), plus ``pause_until`` so one 429's
``Retry-After`` pauses every request to that target. The clock and the sleep are
injectable, so tests drive time by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType

from asyncio_throttle.throttler import Throttler

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
        return max(0.0, float(oldest) + float(self.period) - self._clock())

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
