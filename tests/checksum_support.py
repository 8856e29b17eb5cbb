"""Small helpers for tests that speak md5 to md5-only targets."""

from __future__ import annotations

from ferry.core.checksums import Checksum


def md5_sum(value: str | None) -> Checksum | None:
    """``Checksum("md5", value)``, or None for None (the target computes it)."""
    return Checksum("md5", value) if value is not None else None
