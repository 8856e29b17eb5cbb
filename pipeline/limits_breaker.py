"""The circuit breaker: pauses a run whose target fails most requests, then probes it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from pipeline.limits_rate import Clock, Sleep

log = logging.getLogger(__name__)

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
