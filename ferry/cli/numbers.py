"""Checked flag values: a bad number or an unwritable path is a usage error naming the
flag, never a traceback (or an OSError half-way through a run).

``float("nan")`` and ``float("inf")`` parse, and then compare false with every bound or
overflow an ``int()`` later; these types refuse them where argparse reads the flag.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from ferry.core.errors import InputError


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


def check_writable_dir(flag: str, path: str | os.PathLike[str] | None) -> None:
    """Refuse a folder flag (``--dest``, ``--stats-dir``) that cannot be written, before any
    work starts: found late, the same fault was an OSError in the middle of a run. Nothing is
    created here (a dry run creates nothing); the nearest existing ancestor is checked."""
    if path is None:
        return
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise InputError(f"{flag} {p}: exists and is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise InputError(f"{flag} {p}: the directory is not writable")
        return
    _check_creatable(flag, p)


def check_writable_file(flag: str, path: str | os.PathLike[str] | None) -> None:
    """Refuse a file flag (``--ledger``, ``-o``) that cannot be written (see check_writable_dir)."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{flag} {p}: is a directory, not a file")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise InputError(f"{flag} {p}: the file is not writable")
        return
    _check_creatable(flag, p)


def _check_creatable(flag: str, p: Path) -> None:
    ancestor = p.absolute().parent
    while not ancestor.exists() and not ancestor.is_symlink():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{flag} {p}: cannot be created, {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {p}: cannot be created, {ancestor} is not writable")
