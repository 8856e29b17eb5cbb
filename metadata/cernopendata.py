"""Reading a CERN Open Data record (portal JSON) defensively into plain facts.

Profiles map these facts onto a target's schema. Everything here tolerates junk: a
missing key, a number where a string was expected, a dict where a list was: the fact is
then absent (None / empty), never an exception. What is absent and required is reported by
the profile's validation, with the target field path.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from ferry.core.errors import InputError
from metadata.energy import Energy, ecms_from_text, parse_energy
from metadata.schema import edtf_bounds, is_edtf
from metadata.text import PORTAL, Link, Section

PUBLISHER = "CERN Open Data Portal"
RECORD_URL = PORTAL + "/record/{recid}"
IDENTIFIER_PREFIX = "cernopendata:"  # the alternate identifier that find_query() matches

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


# --- small typed getters -------------------------------------------------------------------


def text(value: Any) -> str | None:
    """A non-empty stripped string; numbers are accepted as text (a recid of 81009)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        stripped = " ".join(value.split())
        return stripped or None
    return None


def texts(value: Any) -> list[str]:
    """A list of non-empty strings from a list, a single string, or junk."""
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for item in items:
        t = text(item)
        if t is not None:
            out.append(t)
    return out


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def dedupe(values: list[str]) -> list[str]:
    """Keep the first spelling of each value, comparing case-insensitively."""
    seen: set[str] = set()
    out = []
    for v in values:
        if v.casefold() not in seen:
            seen.add(v.casefold())
            out.append(v)
    return out


def recid_of(record: Mapping[str, Any]) -> int | None:
    value = record.get("recid")
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


@cache
def _vocabularies() -> dict[str, Any]:
    path = resources.files("metadata").joinpath("vocabularies.json")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def vocabulary(name: str) -> frozenset[str]:
    """Stock InvenioRDM vocabulary ids (``metadata/vocabularies.json``)."""
    return frozenset(_vocabularies()[name])


@dataclass(frozen=True)
class License:
    """A license as the source states it; ``vocab_id`` when the stock vocabulary knows it."""

    source: str
    vocab_id: str | None


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


# --- the facts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    relation: str  # InvenioRDM relation type id, e.g. "haspart"
    recid: int
    title: str | None


_RELATIONS = {"isparentof": "haspart", "ischildof": "ispartof", "haspart": "haspart", "ispartof": "ispartof"}


@dataclass(frozen=True)
class Person:
    family_name: str
    given_name: str | None
    affiliation: str | None


@dataclass(frozen=True)
class SourceRecord:
    """What a CERN Open Data record says, read safely. Empty/None means "not stated"."""

    raw_recid: str | None
    recid: int | None
    title: str | None
    publisher: str
    date_published: str | None  # EDTF
    date_published_raw: str | None
    date_created: str | None  # EDTF, an interval when the portal lists several years
    experiments: list[str]
    collaboration: str | None
    accelerator: str | None
    doi: str | None
    license: License | None
    type_primary: str | None
    type_secondary: list[str]
    categories: list[str]
    collections: list[str]
    keywords: list[str]
    formats: list[str]
    number_of_events: int | None
    number_of_files: int | None
    size: int | None
    collision_type: str | None
    energy: Energy | None
    energy_text: str | None  # how to show the energy: the portal's text, or the ecms value
    sections: list[Section]
    relations: list[Relation]
    authors: list[Person]

    @property
    def url(self) -> str | None:
        return RECORD_URL.format(recid=self.recid) if self.recid else None

    @property
    def identifier(self) -> str | None:
        return f"{IDENTIFIER_PREFIX}{self.recid}" if self.recid else None

    @property
    def dataset_type(self) -> str:
        """collision / simulated / other, from ``type.secondary`` (then ``type.primary``)."""
        words = " ".join([*self.type_secondary, self.type_primary or ""]).casefold()
        if "collision" in words:
            return "collision"
        if "simulat" in words or "monte carlo" in words:
            return "simulated"
        return "other"

    @property
    def creator_name(self) -> str | None:
        """The collaboration as an organisation: "DELPHI" -> "DELPHI collaboration".

        A bare experiment name is completed so that one collaboration is one creator on
        the target (DELPHI records say both "DELPHI" and "DELPHI collaboration"); any
        other organisation name is kept as written.
        """
        name = self.collaboration
        if name is None and self.experiments:
            name = self.experiments[0]
        if name is None or "collaboration" in name.casefold():
            return name
        if self.collaboration is None or name.casefold() in {e.casefold() for e in self.experiments}:
            return f"{name} collaboration"
        return name


def _doi_of(record: Mapping[str, Any]) -> str | None:
    value = text(record.get("doi"))
    if value is None:
        return None
    for prefix in _DOI_PREFIXES:
        if value.lower().startswith(prefix):
            value = value[len(prefix) :]
    return value if _DOI.fullmatch(value) else None


def _count(value: Any) -> int | None:
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


def _section(record: Mapping[str, Any], key: str, title: str) -> Section:
    raw = record.get(key)
    if isinstance(raw, str):
        return Section(title, raw.strip() or None)
    value = mapping(raw)
    description = value.get("description")
    body = description.strip() if isinstance(description, str) and description.strip() else None
    links = []
    raw_links = value.get("links")
    for link in raw_links if isinstance(raw_links, list) else []:
        entry = mapping(link)
        url = text(entry.get("url"))
        if url:
            links.append(Link(text(entry.get("description")) or url, url))
    return Section(title, body, tuple(links))


def _relations(record: Mapping[str, Any]) -> list[Relation]:
    out = []
    raw = record.get("relations")
    for item in raw if isinstance(raw, list) else []:
        entry = mapping(item)
        kind = _RELATIONS.get((text(entry.get("type")) or "").casefold())
        recid = recid_of(entry)
        if kind and recid:
            out.append(Relation(kind, recid, text(entry.get("title"))))
    return out


def _authors(record: Mapping[str, Any]) -> list[Person]:
    out = []
    raw = record.get("authors")
    for item in raw if isinstance(raw, list) else []:
        entry = mapping(item)
        raw_name = entry.get("name")
        name = text(raw_name) if isinstance(raw_name, str) else None
        if not name:
            continue
        family, _, given = name.partition(",")
        out.append(Person(family.strip() or name, given.strip() or None, text(entry.get("affiliation"))))
    return out


def _energy_text(source: str | None, energy: Energy | None) -> str | None:
    """The portal's text when it was used; unparsed text only when it has a number in it
    ("13" without a unit is still worth showing, "unknown" is not)."""
    if source is None:
        return energy.text if energy else None
    if energy is not None or re.search(r"\d", source):
        return source
    return None


def read(record: Any) -> SourceRecord:
    """Read a portal record; raises InputError only when it is not a JSON object at all."""
    r = unwrap(record)
    ctype = mapping(r.get("type"))
    collision = mapping(r.get("collision_information"))
    distribution = mapping(r.get("distribution"))
    categories = mapping(r.get("categories"))

    sections = [
        _section(r, "abstract", "Abstract"),
        _section(r, "methodology", "Methodology"),
        _section(r, "usage", "Usage"),
        _section(r, "note", "Note"),
    ]

    source_energy_text = text(collision.get("energy"))
    energy = parse_energy(source_energy_text)
    # The abstract's "ecms=" is the energy the sample was actually made at: it wins over
    # the portal's broad run range ("89-94 GeV").
    ecms = ecms_from_text(sections[0].text)
    if ecms is not None:
        energy = ecms
        source_energy_text = None

    published_raw = text(r.get("date_published"))
    published = edtf_date(r.get("date_published"))
    created_values = [d for d in (edtf_date(v) for v in texts(r.get("date_created"))) if d]

    formats = [f.lower() for f in texts(distribution.get("formats"))]
    collaboration = mapping(r.get("collaboration"))

    return SourceRecord(
        raw_recid=text(r.get("recid")),
        recid=recid_of(r),
        title=text(r.get("title")),
        publisher=text(r.get("publisher")) or PUBLISHER,
        date_published=published,
        date_published_raw=published_raw,
        date_created=span(created_values),
        experiments=dedupe(texts(r.get("experiment"))),
        collaboration=text(collaboration.get("name")) or text(r.get("collaboration")),
        accelerator=text(r.get("accelerator")),
        doi=_doi_of(r),
        license=license_of(r),
        type_primary=text(ctype.get("primary")),
        type_secondary=texts(ctype.get("secondary")),
        categories=dedupe(texts(categories.get("primary")) + texts(categories.get("secondary"))),
        collections=dedupe(texts(r.get("collections"))),
        keywords=dedupe(texts(r.get("keywords"))),
        formats=dedupe(formats),
        number_of_events=_count(distribution.get("number_events")),
        number_of_files=_count(distribution.get("number_files")),
        size=_count(distribution.get("size")),
        collision_type=text(collision.get("type")),
        energy=energy,
        energy_text=_energy_text(source_energy_text, energy),
        sections=sections,
        relations=_relations(r),
        authors=_authors(r),
    )
