"""A small declarative checker for draft bodies: JSON-schema-like, but plain Python.

A schema is a ``Check``: a function ``(value, path, issues) -> None`` that appends a
``FieldIssue`` for every problem it finds. The constructors below (``obj``, ``array``,
``string``, ``integer``, ``number``, ``edtf``, ``vocab``...) compose into one schema per
profile, so a profile's rules read like a table. We do not use jsonschema itself: its
error paths and messages are awkward to map onto InvenioRDM's dotted field paths, and
cross-field rules (``energy_min <= energy_max``, names by creator type) would need
extensions anyway.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldIssue:
    """One problem in a draft body: the dotted field path and the reason."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


Check = Callable[[Any, str, list[FieldIssue]], None]
Rule = Callable[[Mapping[str, Any], str, list[FieldIssue]], None]


def join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


@dataclass(frozen=True)
class Key:
    """One property of an object: its check and whether it must be present."""

    check: Check
    required: bool = False


def req(check: Check) -> Key:
    return Key(check, required=True)


def opt(check: Check) -> Key:
    return Key(check)


def obj(
    properties: Mapping[str, Key],
    *,
    rules: tuple[Rule, ...] = (),
    closed: bool = False,
) -> Check:
    """An object with known properties; ``closed`` refuses keys not listed.

    ``rules`` run after the properties, on the whole object (cross-field constraints).
    """

    def check(value: Any, path: str, issues: list[FieldIssue]) -> None:
        if not isinstance(value, Mapping):
            issues.append(FieldIssue(path, f"must be an object, not {_type_name(value)}"))
            return
        for name, key in properties.items():
            where = join(path, name)
            if name not in value or value[name] is None:
                if key.required:
                    issues.append(FieldIssue(where, "is required"))
                continue
            key.check(value[name], where, issues)
        if closed:
            for name in value:
                if name not in properties:
                    issues.append(FieldIssue(join(path, str(name)), "is not an allowed field"))
        for rule in rules:
            rule(value, path, issues)

    return check


def array(item: Check, *, min_items: int = 0, max_items: int | None = None, unique: bool = False) -> Check:
    def check(value: Any, path: str, issues: list[FieldIssue]) -> None:
        if not isinstance(value, list):
            issues.append(FieldIssue(path, f"must be an array, not {_type_name(value)}"))
            return
        if len(value) < min_items:
            issues.append(FieldIssue(path, f"needs at least {min_items} item(s)"))
        if max_items is not None and len(value) > max_items:
            issues.append(FieldIssue(path, f"allows at most {max_items} item(s)"))
        seen: list[Any] = []
        for i, element in enumerate(value):
            item(element, join(path, i), issues)
            if unique:
                if element in seen:
                    issues.append(FieldIssue(join(path, i), "duplicates an earlier item"))
                seen.append(element)

    return check


def string(
    *,
    min_len: int = 0,
    max_len: int | None = None,
    pattern: str | None = None,
    choices: Collection[str] | None = None,
    strip: bool = True,
) -> Check:
    """A string; length is measured after stripping (InvenioRDM strips before validating)."""
    compiled = re.compile(pattern) if pattern else None

    def check(value: Any, path: str, issues: list[FieldIssue]) -> None:
        if not isinstance(value, str):
            issues.append(FieldIssue(path, f"must be a string, not {_type_name(value)}"))
            return
        text = value.strip() if strip else value
        if len(text) < min_len:
            issues.append(
                FieldIssue(path, "must not be empty" if min_len == 1 else f"must have at least {min_len} characters")
            )
        if max_len is not None and len(text) > max_len:
            issues.append(FieldIssue(path, f"must have at most {max_len} characters"))
        if compiled is not None and not compiled.fullmatch(value):
            issues.append(FieldIssue(path, f"{value!r} does not match {compiled.pattern}"))
        if choices is not None and value not in choices:
            shown = ", ".join(sorted(choices)[:12])
            more = ", ..." if len(choices) > 12 else ""
            issues.append(FieldIssue(path, f"{value!r} is not one of {shown}{more}"))

    return check


def integer(*, minimum: int | None = None, maximum: int | None = None) -> Check:
    def check(value: Any, path: str, issues: list[FieldIssue]) -> None:
        # bool is an int subclass; JSON true is not a number.
        if isinstance(value, bool) or not isinstance(value, int):
            issues.append(FieldIssue(path, f"must be an integer, not {_type_name(value)}"))
            return
        if minimum is not None and value < minimum:
            issues.append(FieldIssue(path, f"must be >= {minimum}, not {value}"))
        if maximum is not None and value > maximum:
            issues.append(FieldIssue(path, f"must be <= {maximum}, not {value}"))

    return check


def number(*, minimum: float | None = None, maximum: float | None = None) -> Check:
    def check(value: Any, path: str, issues: list[FieldIssue]) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            issues.append(FieldIssue(path, f"must be a number, not {_type_name(value)}"))
            return
        if value != value or value in (float("inf"), float("-inf")):
            issues.append(FieldIssue(path, "must be a finite number"))
            return
        if minimum is not None and value < minimum:
            issues.append(FieldIssue(path, f"must be >= {minimum}, not {value}"))
        if maximum is not None and value > maximum:
            issues.append(FieldIssue(path, f"must be <= {maximum}, not {value}"))

    return check


def boolean() -> Check:
    def check(value: Any, path: str, issues: list[FieldIssue]) -> None:
        if not isinstance(value, bool):
            issues.append(FieldIssue(path, f"must be true or false, not {_type_name(value)}"))

    return check


def constant(expected: Any) -> Check:
    def check(value: Any, path: str, issues: list[FieldIssue]) -> None:
        if value != expected:
            issues.append(FieldIssue(path, f"must be {expected!r}, not {value!r}"))

    return check


def vocab(ids: Collection[str] | None = None, *, closed: bool = True) -> Check:
    """A vocabulary reference ``{"id": ...}``; with ``ids`` the id must be one of them.

    Stock InvenioRDM accepts only ``id`` (it resolves ``title`` itself), hence ``closed``.
    """
    return obj({"id": req(string(min_len=1, choices=ids))}, closed=closed)


# --- EDTF level 0 ------------------------------------------------------------------------

_EDTF_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def edtf_bounds(text: str) -> tuple[dt.date, dt.date] | None:
    """First and last day covered by an EDTF level-0 date, or None when it is not one."""
    m = _EDTF_DATE.fullmatch(text)
    if not m:
        return None
    year = int(m.group(1))
    if year < 1:  # datetime has no year 0; EDTF's 0000 is not useful for our records
        return None
    try:
        if m.group(3):
            day = dt.date(year, int(m.group(2)), int(m.group(3)))
            return day, day
        if m.group(2):
            month = int(m.group(2))
            first = dt.date(year, month, 1)
            nxt = dt.date(year + 1, 1, 1) if month == 12 else dt.date(year, month + 1, 1)
            return first, nxt - dt.timedelta(days=1)
    except ValueError:
        return None
    return dt.date(year, 1, 1), dt.date(year, 12, 31)


def edtf_problem(value: str) -> str | None:
    """Why ``value`` is not an EDTF level-0 date or interval (``None`` when it is one)."""
    parts = value.split("/")
    if len(parts) > 2:
        return f"{value!r} is not an EDTF date (YYYY, YYYY-MM, YYYY-MM-DD or an interval A/B)"
    bounds = [edtf_bounds(p) for p in parts]
    if any(b is None for b in bounds):
        return f"{value!r} is not an EDTF date (YYYY, YYYY-MM, YYYY-MM-DD or an interval A/B)"
    if len(bounds) == 2:
        start, end = bounds
        assert start is not None and end is not None
        if start[0] > end[1]:
            return f"interval {value!r} ends before it starts"
    return None


def is_edtf(value: str) -> bool:
    return edtf_problem(value) is None


def edtf() -> Check:
    def check(value: Any, path: str, issues: list[FieldIssue]) -> None:
        if not isinstance(value, str):
            issues.append(FieldIssue(path, f"must be an EDTF date string, not {_type_name(value)}"))
            return
        problem = edtf_problem(value)
        if problem:
            issues.append(FieldIssue(path, problem))

    return check


def run(schema: Check, body: Any) -> list[FieldIssue]:
    issues: list[FieldIssue] = []
    schema(body, "", issues)
    return issues
