"""Limits: the two-window rate limiter, the bytes-weighted limiter, the circuit breaker, the
staging budget. Time is a fake clock driven by the fake sleep, so nothing waits for real."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.limits import CLOSED, HALF_OPEN, OPEN, ByteBudget, CircuitBreaker, RateLimiter, WeightedLimiter


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
    limiter = RateLimiter(5, 12, minute=60, hour=3600, margin_s=0.5, clock=clock, sleep=clock.sleep)
    stamps: list[float] = []

    async def request() -> None:
        async with limiter:
            stamps.append(clock.now)

    await asyncio.gather(*(request() for _ in range(30)))
    assert len(stamps) == 30
    assert stamps == sorted(stamps)
    for i, t in enumerate(stamps):
        in_minute = [s for s in stamps if t <= s < t + 60.5]  # margin included
        in_hour = [s for s in stamps if t <= s < t + 3600.5]
        assert len(in_minute) <= 5, (i, in_minute)
        assert len(in_hour) <= 12, (i, in_hour)
    # The first five go at once; the minute window then holds the sixth for a minute.
    assert stamps[:5] == [1000.0] * 5
    assert stamps[5] == pytest.approx(1060.5)
    # The hour window: the 13th request waits for the first one to leave the hour.
    assert stamps[12] == pytest.approx(1000.0 + 3600.5)
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


async def test_weighted_limiter_never_exceeds_capacity_and_big_runs_alone() -> None:
    limiter = WeightedLimiter(100)
    sizes = [30, 50, 20, 250, 10, 60, 40, 100, 5, 70, 0, 99]
    active: dict[int, int] = {}
    log: list[tuple[str, int]] = []
    overlaps_with_big: list[int] = []

    async def job(i: int, size: int) -> None:
        async with limiter.hold(size) as held:
            assert held == min(size, 100)
            active[i] = size
            assert limiter.in_flight <= 100
            # Granted waiters that have not resumed yet are counted too, hence <=.
            assert sum(min(s, 100) for s in active.values()) <= limiter.in_flight
            if size >= 100:
                overlaps_with_big.append(len(active))
            log.append(("start", i))
            for _ in range(3):
                await asyncio.sleep(0)
                if size >= 100:
                    overlaps_with_big.append(len(active))
            del active[i]
            log.append(("end", i))

    await asyncio.gather(*(job(i, s) for i, s in enumerate(sizes)))
    assert limiter.in_flight == 0 and limiter.holders == 0
    assert limiter.peak <= 100
    assert overlaps_with_big and set(overlaps_with_big) == {1}  # big items alone
    # FIFO: items start in arrival order.
    starts = [i for kind, i in log if kind == "start"]
    assert starts == sorted(starts)


async def test_weighted_limiter_fifo_blocks_small_behind_big() -> None:
    limiter = WeightedLimiter(100)
    first = await limiter.acquire(60)
    order: list[str] = []

    async def big() -> None:
        async with limiter.hold(80):
            order.append("big")

    async def small() -> None:
        async with limiter.hold(10):
            order.append("small")

    tasks = [asyncio.create_task(big())]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(small()))
    await asyncio.sleep(0)
    assert order == []  # small would fit (60+10) but waits behind big
    limiter.release(first)
    await asyncio.gather(*tasks)
    assert order == ["big", "small"]


async def test_weighted_limiter_cancelled_waiter_unblocks_queue() -> None:
    limiter = WeightedLimiter(100)
    first = await limiter.acquire(50)
    blocked = asyncio.create_task(limiter.acquire(90))
    await asyncio.sleep(0)
    behind = asyncio.create_task(limiter.acquire(20))
    await asyncio.sleep(0)
    assert not behind.done()
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    assert await behind == 20
    limiter.release(first)
    limiter.release(20)
    assert limiter.in_flight == 0
    with pytest.raises(RuntimeError):
        limiter.release(1)


async def test_byte_budget_reserve_release_and_claim() -> None:
    budget = ByteBudget(1000)
    a = await budget.reserve(600)
    b = await budget.reserve(400)
    assert budget.staged == 1000
    waiting = asyncio.create_task(budget.reserve(300))
    await asyncio.sleep(0)
    assert not waiting.done() and budget.waiting == 1
    a.release(200)  # one file of the record verified
    await asyncio.sleep(0)
    assert not waiting.done()
    a.release(200)
    c = await waiting
    assert budget.staged == 900
    a.release()
    a.release()  # twice is harmless
    b.release()
    c.release()
    assert budget.staged == 0
    huge = await budget.reserve(5000)  # larger than the budget: alone
    assert huge.held == 1000 and huge.nbytes == 5000
    huge.release()
    claimed = budget.claim(700)
    more = budget.claim(700)  # resumed staging may overflow; new reservations then wait
    assert budget.staged == 1400
    pending = asyncio.create_task(budget.reserve(10))
    await asyncio.sleep(0)
    assert not pending.done()
    claimed.release()
    more.release()
    (await pending).release()
    assert budget.staged == 0 and budget.peak == 1400


async def test_circuit_breaker_states_with_fake_clock() -> None:
    clock = FakeClock()
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        window_s=10,
        min_requests=4,
        failure_ratio=0.5,
        cool_down_s=30,
        clock=clock,
        sleep=clock.sleep,
        on_change=lambda old, new: changes.append((old, new)),
    )
    assert breaker.state == CLOSED
    # Failures spread over more than the window never open it.
    for _ in range(6):
        breaker.record(False)
        clock.now += 11
    assert breaker.state == CLOSED
    # Few requests: under min_requests, stays closed.
    breaker.record(False)
    breaker.record(True)
    breaker.record(False)
    assert breaker.state == CLOSED
    breaker.record(False)  # 3 of 4 failed in the window
    assert breaker.state == OPEN and breaker.opened == 1
    breaker.record(True)  # late outcome of a request started before: ignored
    assert breaker.state == OPEN
    assert not breaker.allow()
    opened_at = clock.now
    await breaker.wait_closed()  # sleeps (fake) until the cool-down, passes as the probe
    assert clock.now >= opened_at + 30
    assert breaker.state == HALF_OPEN
    assert not breaker.allow()  # only one probe at a time
    breaker.record(False)  # probe failed: open again
    assert breaker.state == OPEN and breaker.opened == 2
    await breaker.wait_closed()
    breaker.record(True)  # probe succeeded
    assert breaker.state == CLOSED
    assert breaker.allow()
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


async def test_circuit_breaker_waiters_resume_after_probe() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        window_s=10, min_requests=2, failure_ratio=1.0, cool_down_s=5, clock=clock, sleep=clock.sleep
    )
    breaker.record(False)
    breaker.record(False)
    assert breaker.state == OPEN
    passed: list[int] = []

    async def caller(i: int) -> None:
        await breaker.wait_closed()
        passed.append(i)
        if len(passed) == 1:
            breaker.record(True)  # the probe succeeds

    await asyncio.gather(*(caller(i) for i in range(5)))
    assert len(passed) == 5 and breaker.state == CLOSED


async def test_rate_limiter_refund_gives_the_newest_slot_back() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 10, minute=60, hour=3600, margin_s=0, clock=clock, sleep=clock.sleep)
    for _ in range(2):
        await limiter.acquire()
        limiter.refund()  # neither reached the server
    assert limiter.used() == (0, 0) and limiter.refunded == 2
    await limiter.acquire()
    await limiter.acquire()
    assert clock.now == 1000.0  # both went at once: the refunds left the minute's room
    limiter.refund()
    limiter.refund()
    limiter.refund()  # more refunds than slots: nothing below zero
    assert limiter.used() == (0, 0)


async def test_connection_refused_requests_do_not_spend_the_budget() -> None:
    """A target that is down refuses connections: the retries against it are not the
    server's requests, so they leave the per-minute budget whole (a 60 s stall with Zenodo's
    100/min after a short outage, docs/reliability.md)."""
    from ferry.core.errors import TargetUnavailable
    from ferry.core.retry import RetryPolicy
    from sandbox.xrootd import free_port
    from upload.targets.http import HttpClient, Where

    clock = FakeClock()
    limiter = RateLimiter(3, 100, minute=60, hour=3600, clock=clock, sleep=clock.sleep)
    http = HttpClient(f"http://127.0.0.1:{free_port()}/", None, limiter=limiter, policy=RetryPolicy(attempts=4, base=0))
    try:
        for _ in range(3):
            with pytest.raises(TargetUnavailable, match="cannot connect"):
                await http.request("GET", "api/x", Where("probe", "1"))
    finally:
        await http.aclose()
    assert limiter.acquired == 12 and limiter.refunded == 12
    assert limiter.used() == (0, 0) and clock.now == 1000.0  # no request waited for the window
