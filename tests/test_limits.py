"""Limits: the two-window rate limiter, the bytes-weighted limiter, the circuit breaker, the
staging budget. Time is a fake clock driven by the fake sleep, so nothing waits for real."""

from __future__ import annotations

import asyncio

import pytest

from upload.limits import RateLimiter


class FakeClock:
    """Monotonic time that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


async def test_rate_limiter_enforces_both_windows() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, 12, minute=60, hour=3600, clock=clock, sleep=clock.sleep)
    stamps: list[float] = []

    async def request() -> None:
        async with limiter:
            stamps.append(clock.now)

    await asyncio.gather(*(request() for _ in range(30)))
    assert len(stamps) == 30
    assert stamps == sorted(stamps)
    for i, t in enumerate(stamps):
        in_minute = [s for s in stamps if t <= s < t + 60]
        in_hour = [s for s in stamps if t <= s < t + 3600]
        assert len(in_minute) <= 5, (i, in_minute)
        assert len(in_hour) <= 12, (i, in_hour)
    # The first five go at once; the minute window then holds the sixth for a minute.
    assert stamps[:5] == [1000.0] * 5
    assert stamps[5] == pytest.approx(1060.0)
    # The hour window: the 13th request waits for the first one to leave the hour.
    assert stamps[12] == pytest.approx(1000.0 + 3600)
    assert limiter.acquired == 30


async def test_rate_limiter_pause_until_holds_everyone() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, 1000, clock=clock, sleep=clock.sleep)
    async with limiter:
        pass
    limiter.pause_until(clock.now + 30)
    limiter.pause_until(clock.now + 10)  # a shorter pause never shortens a longer one
    stamps: list[float] = []

    async def request() -> None:
        async with limiter:
            stamps.append(clock.now)

    await asyncio.gather(*(request() for _ in range(3)))
    assert min(stamps) >= 1030.0


async def test_rate_limiter_real_clock_small_windows() -> None:
    limiter = RateLimiter(3, 4, minute=0.2, hour=0.6)
    count = 0

    async def request() -> None:
        nonlocal count
        async with limiter:
            count += 1

    await asyncio.gather(*(request() for _ in range(6)))
    assert count == 6
    with pytest.raises(ValueError):
        RateLimiter(0, 10)
