"""Small typed getters that read untrusted JSON without ever raising.

Everything here tolerates junk: a missing key, a number where a string was expected, a
dict where a list was: the value is then absent (None / empty). What is absent and
required is reported by the profile's validation, with the target field path.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from ferry.core.errors import InputError
from metadata.dataset import License
from metadata.schema import edtf_bounds, is_edtf
from metadata.vocabularies import vocabulary as vocabulary  # the stock ids (metadata/vocabularies.json)

_DOI = re.compile(r"10\.\d{4,9}/\S+")
_DOI_PREFIXES = ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "http://dx.doi.org/", "doi:")


def unwrap(record: Any) -> Mapping[str, Any]:
    """The portal record JSON from a fixture entry, an API answer or a ``ferry.core.model.Record``.

    The record API wraps the fixture shape in ``{"id", "metadata": {...}}``.
    """
    metadata = getattr(record, "metadata", None)
    if not isinstance(record, Mapping) and isinstance(metadata, Mapping):
        record = metadata
    if not isinstance(record, Mapping):
        raise InputError(f"a record must be a JSON object, not {type(record).__name__}")
    inner = record.get("metadata")
    if "recid" not in record and isinstance(inner, Mapping):
        return inner
    return record


def text(value: Any) -> str | None:
    """A non-empty string with whitespace runs collapsed; numbers are accepted as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        stripped = " ".join(value.split())
        return stripped or None
    return None


def raw_text(value: Any) -> str | None:
    """A non-empty string as written (line breaks kept, for HTML rendering)."""
    return value.strip() or None if isinstance(value, str) else None


def texts(value: Any) -> list[str]:
    """A list of non-empty strings from a list, a single string, or junk."""
    items = value if isinstance(value, list | tuple) else [value]
    return [t for t in (text(item) for item in items) if t is not None]


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def items(value: Any) -> list[Mapping[str, Any]]:
    """The objects of a list (anything else dropped)."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def dedupe(values: list[str]) -> list[str]:
    """Keep the first spelling of each value, comparing case-insensitively."""
    seen: set[str] = set()
    out = []
    for v in values:
        if v.casefold() not in seen:
            seen.add(v.casefold())
            out.append(v)
    return out


def recid_of(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        number = int(value.strip())
        return number if number > 0 else None
    return None


def normalise_recid(recid: Any) -> str:
    """A recid as the digits string used in queries; InputError when it is not one."""
    if isinstance(recid, bool) or not isinstance(recid, int | str):
        raise InputError(f"recid must be a positive integer, not {type(recid).__name__}")
    value = str(recid).strip()
    if not (value.isascii() and value.isdigit()) or int(value) <= 0:
        raise InputError(f"recid must be a positive integer, not {str(recid)!r}", field="recid")
    return str(int(value))


def count(value: Any) -> int | None:
    """A non-negative integer from an int or a string like "1,234"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str):
        digits = value.strip().replace(",", "").replace("_", "")
        if digits.isascii() and digits.isdigit():
            return int(digits)
    return None


def doi_of(value: Any) -> str | None:
    doi = text(value)
    if doi is None:
        return None
    for prefix in _DOI_PREFIXES:
        if doi.lower().startswith(prefix):
            doi = doi[len(prefix) :]
    return doi if _DOI.fullmatch(doi) else None


# --- dates -------------------------------------------------------------------------------

_YEAR_RANGE = re.compile(r"(\d{4})\s*(?:-|\u2013|to)\s*(\d{4})")
_DATETIME = re.compile(r"(\d{4}-\d{2}-\d{2})[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?")
_HUMAN_FORMATS = ("%d %B %Y", "%d %b %Y", "%B %d, %Y", "%b %d, %Y", "%B %Y", "%b %Y", "%d.%m.%Y", "%Y/%m/%d")


def edtf_date(value: Any) -> str | None:
    """An EDTF level-0 date or interval from what the portal wrote, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 1000 <= value <= 9999:
        return str(value)
    if not isinstance(value, str):
        return None
    s = value.strip()
    if is_edtf(s):
        return s
    m = _YEAR_RANGE.fullmatch(s)
    if m and is_edtf(f"{m.group(1)}/{m.group(2)}"):
        return f"{m.group(1)}/{m.group(2)}"
    m = _DATETIME.fullmatch(s)
    if m and is_edtf(m.group(1)):
        return m.group(1)
    for fmt in _HUMAN_FORMATS:
        try:
            parsed = dt.datetime.strptime(s, fmt).date()
        except ValueError:
            continue
        return parsed.strftime("%Y-%m") if "%d" not in fmt else parsed.isoformat()
    return None


def span(dates: list[str]) -> str | None:
    """One EDTF value covering all ``dates``: a single date, or ``earliest/latest``."""
    if not dates:
        return None
    if len(set(dates)) == 1:
        return dates[0]
    starts, ends = [], []
    for d in dates:
        parts = d.split("/")
        first, last = edtf_bounds(parts[0]), edtf_bounds(parts[-1])
        if first is None or last is None:
            continue
        starts.append((first[0], parts[0]))
        ends.append((last[1], parts[-1]))
    if not starts:
        return None
    start, end = min(starts)[1], max(ends)[1]
    return start if start == end else f"{start}/{end}"


# --- licenses ----------------------------------------------------------------------------

# Spellings seen in the wild -> the SPDX id InvenioRDM's vocabulary uses.
_LICENSE_ALIASES = {
    "cc0": "cc0-1.0",
    "cc-0": "cc0-1.0",
    "cc0-1": "cc0-1.0",
    "cc-zero": "cc0-1.0",
    "gpl-2.0": "gpl-2.0-only",
    "gpl-3.0": "gpl-3.0-only",
    "lgpl-2.1": "lgpl-2.1-only",
    "lgpl-3.0": "lgpl-3.0-only",
    "agpl-3.0": "agpl-3.0-only",
}


def license_of(record: Mapping[str, Any]) -> License | None:
    raw = record.get("license")
    name = text(raw) if not isinstance(raw, Mapping) else None
    if isinstance(raw, Mapping):
        for key in ("attribution", "id", "license", "name", "title"):
            name = text(raw.get(key))
            if name:
                break
    if not name:
        return None
    key = re.sub(r"[\s_]+", "-", name.strip().lower())
    key = _LICENSE_ALIASES.get(key, key)
    return License(name, key if key in vocabulary("licenses") else None)
