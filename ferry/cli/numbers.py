"""Numeric flag types: a bad number is a usage error naming the flag, never a traceback.

``float("nan")`` and ``float("inf")`` parse, and then compare false with every bound or
overflow an ``int()`` later; these types refuse them where argparse reads the flag.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def positive_float(text: str) -> float:
    """A finite number > 0 (``--staging-gb 1.5``, ``--deadline 600``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """A whole number >= ``minimum`` that fits 64 bits (``--jobs 4``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or value >= 2**63:
            raise argparse.ArgumentTypeError(f"{text!r} must be a whole number from {minimum} to 2**63-1")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse
