"""Collision energies as numbers: "181-210 GeV", "7 TeV", "0.9-13 TeV", "ecms=206.5".

Everything is normalised to GeV so records from LEP (GeV) and LHC (TeV) compare and
range-search on the target. Arithmetic goes through ``Decimal`` so that "5.02 TeV" becomes
5020.0, not 5019.999999999999.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

UNIT = "GeV"
_TO_GEV = {"k": Decimal("1e-6"), "m": Decimal("1e-3"), "g": Decimal(1), "t": Decimal(1000), "p": Decimal(10**6)}

_NUM = r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
# Numbers joined by these share the unit written after the last one: "0.9-13 TeV".
_SEP = r"\s*(?:-|\u2013|\u2014|\.\.|to|and|,|/|&)\s*"
_GROUP = re.compile(
    rf"(?<![\w.])(?P<nums>{_NUM}(?:{_SEP}{_NUM})*)\s*(?P<unit>[kmgtp]eV)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(_NUM)
_COUNTER = re.compile(r"\b(?:run|period|phase|version|v)\s*$", re.IGNORECASE)
# DELPHI abstracts: "done at ecms=91.25 , RAL", "ecm=91.2 GeV"; unit GeV when omitted.
_ECMS = re.compile(rf"\becms?\s*[=:]\s*(?P<num>{_NUM})(?:\s*(?P<unit>[kmgtp]eV)\b)?", re.IGNORECASE)


@dataclass(frozen=True)
class Energy:
    """An energy or energy range in GeV; ``text`` is how to show it."""

    minimum: float
    maximum: float
    text: str
    unit: str = UNIT


def _gev(number: str, unit: str) -> Decimal | None:
    try:
        value = Decimal(number) * _TO_GEV[unit[0].lower()]
        value = value.normalize()
    except (ArithmeticError, KeyError, IndexError):  # decimal.Overflow/InvalidOperation
        return None
    return value if value.is_finite() and math.isfinite(float(value)) else None


def _as_float(value: Decimal) -> float:
    # float() of an exact decimal is the nearest double: 5020, not 5019.999999999999.
    return float(value)


def _format(lo: Decimal, hi: Decimal) -> str:
    def show(v: Decimal) -> str:
        return format(v, "f") if abs(v.adjusted()) < 30 else format(v, "g")

    return f"{show(lo)} {UNIT}" if lo == hi else f"{show(lo)}-{show(hi)} {UNIT}"


def _from_values(values: list[Decimal]) -> Energy | None:
    if not values:
        return None
    lo, hi = min(values), max(values)
    return Energy(_as_float(lo), _as_float(hi), _format(lo, hi))


def parse_energy(text: object) -> Energy | None:
    """Parse a collision energy; None when there is no number with a unit in it.

    A bare number without a unit ("13") is refused rather than guessed: LEP records mean
    GeV, LHC records TeV, and a wrong guess would be searchable nonsense.
    """
    if isinstance(text, bool) or not isinstance(text, str):
        return None
    values: list[Decimal] = []
    for group in _GROUP.finditer(text):
        unit = group.group("unit")
        numbers = _NUMBER.findall(group.group("nums"))
        if _COUNTER.search(text, 0, group.start()):
            numbers = numbers[1:]  # "Run 2, 13 TeV": the 2 counts runs, it is no energy
        for number in numbers:
            gev = _gev(number, unit)
            if gev is not None:
                values.append(gev)
    return _from_values(values)


def ecms_from_text(text: object) -> Energy | None:
    """The centre-of-mass energy stated as ``ecms=`` (or ``ecm=``) in free text."""
    if not isinstance(text, str):
        return None
    values = []
    for m in _ECMS.finditer(text):
        gev = _gev(m.group("num"), m.group("unit") or UNIT)
        if gev is not None:
            values.append(gev)
    return _from_values(values)
