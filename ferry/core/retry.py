"""Retries with exponential backoff and full jitter, honouring server-given delays.

Policy lives here, once: which errors are retried is the error's ``retryable`` flag
(see ``ferry.core.errors``); how long to wait is the larger of the backoff and any delay the
server asked for (``Retry-After`` seconds or HTTP date, ``X-RateLimit-Reset`` epoch).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from ferry.core.config import Limits
from ferry.core.errors import FerryError, is_retryable

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # total tries, first included
    base: float = 0.5  # seconds before the second try (before jitter)
    maximum: float = 30.0  # cap on one wait
    max_server_delay: float = 3600.0  # never sleep longer than this because a server said so

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base < 0 or self.maximum < 0:
            raise ValueError("RetryPolicy needs attempts >= 1 and non-negative delays")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay after failed try number ``attempt`` (1-based): full jitter in [0, base*2^(n-1)]."""
        ceiling = min(self.maximum, self.base * (2 ** (attempt - 1)))
        return (rng or random).uniform(0, ceiling)


def request_policy(limits: Limits) -> RetryPolicy:
    """The one meaning of ``limits.retries``: how often ONE request (an HTTP call, an XRootD
    read, a portal GET) is repeated after its first try. Higher levels do not multiply it:
    a file or a record is tried again only for what a request retry cannot fix (a checksum
    mismatch, an entry the server dropped), each level with its own small, named count."""
    return RetryPolicy(attempts=limits.retries + 1, base=limits.backoff_base, maximum=limits.backoff_max)


def server_delay(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds a server asked us to wait, from ``Retry-After`` or ``X-RateLimit-Reset``."""
    now = time.time() if now is None else now
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                pass
    reset = headers.get("X-RateLimit-Reset")
    remaining = headers.get("X-RateLimit-Remaining")
    if reset and (remaining is None or remaining.strip() == "0"):
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            return None
    return None


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    retryable: Callable[[BaseException], bool] = is_retryable,
    delay_hint: Callable[[BaseException], float | None] = lambda exc: (
        exc.retry_after if isinstance(exc, FerryError) else None
    ),
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    what: str = "operation",
) -> T:
    """Run ``operation`` until it succeeds, a non-retryable error, or attempts run out.

    The last error is re-raised unchanged; ``attempts`` is set on ``FerryError``s so the
    stats can say how many tries a failure took.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt) or not retryable(exc):
                _tag(exc, attempt)
                raise
            if attempt >= policy.attempts:
                _tag(exc, attempt)
                raise
            delay = policy.backoff(attempt)
            hint = delay_hint(exc)
            if hint is not None:
                delay = max(delay, min(hint, policy.max_server_delay))
            log.info("%s failed (try %d of %d): %s; retrying in %.2fs", what, attempt, policy.attempts, exc, delay)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            await asyncio.sleep(delay)


def _tag(exc: BaseException, attempts: int) -> None:
    if isinstance(exc, FerryError):
        exc.attempts = attempts
