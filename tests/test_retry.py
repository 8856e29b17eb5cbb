from __future__ import annotations

import random

import pytest

from ferry.core.errors import RateLimited, SourceUnavailable, ValidationError
from ferry.core.retry import RetryPolicy, retry, server_delay


async def test_retry_recovers_then_gives_up_on_fatal() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise SourceUnavailable("down")
        return "ok"

    assert await retry(flaky, policy=RetryPolicy(attempts=5, base=0.0)) == "ok"
    assert len(calls) == 3

    async def fatal() -> str:
        calls.append(1)
        raise ValidationError("bad")

    calls.clear()
    with pytest.raises(ValidationError):
        await retry(fatal, policy=RetryPolicy(attempts=5, base=0.0))
    assert len(calls) == 1


async def test_retry_stops_after_attempts_and_tags_error() -> None:
    async def always() -> None:
        raise SourceUnavailable("down")

    with pytest.raises(SourceUnavailable) as info:
        await retry(always, policy=RetryPolicy(attempts=3, base=0.0))
    assert info.value.attempts == 3  # type: ignore[attr-defined]


async def test_retry_waits_at_least_server_delay() -> None:
    waits: list[float] = []
    n = 0

    async def limited() -> int:
        nonlocal n
        n += 1
        if n == 1:
            raise RateLimited("slow down", retry_after=0.05)
        return n

    result = await retry(limited, policy=RetryPolicy(attempts=2, base=0.0), on_retry=lambda a, e, d: waits.append(d))
    assert result == 2 and waits == [0.05]


def test_server_delay_headers() -> None:
    assert server_delay({"Retry-After": "7"}) == 7.0
    assert server_delay({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert server_delay({"X-RateLimit-Reset": "1000", "X-RateLimit-Remaining": "0"}, now=990.0) == 10.0
    assert server_delay({"X-RateLimit-Reset": "1000", "X-RateLimit-Remaining": "5"}, now=990.0) is None
    assert server_delay({}) is None


def test_backoff_is_bounded_and_grows() -> None:
    policy = RetryPolicy(base=1.0, maximum=4.0)
    rng = random.Random(1)
    assert all(0 <= policy.backoff(n, rng) <= min(4.0, 2 ** (n - 1)) for n in range(1, 10))
