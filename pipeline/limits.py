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

They live in ``limits_rate``, ``limits_bytes`` and ``limits_breaker``; this module is the
one name the pipeline imports them by.
"""

from __future__ import annotations

from pipeline.limits_breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from pipeline.limits_bytes import ByteBudget, Reservation, WeightedLimiter
from pipeline.limits_rate import Clock, RateLimiter, Sleep

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "ByteBudget",
    "CircuitBreaker",
    "Clock",
    "RateLimiter",
    "Reservation",
    "Sleep",
    "WeightedLimiter",
]
