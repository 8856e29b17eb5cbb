"""Pieces the non-portal readers share: file facts, people from "Family, Given" names, licenses.

The portal reader (``cernopendata``) has its own richer versions of these, tied to the
portal's shapes; the Zenodo and directory readers read simpler, Zenodo-like metadata.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from metadata.dataset import FileFacts, License, Organisation, Person
from metadata.readers.cernopendata import file_type
from metadata.readers.values import count, items, license_of, text, texts

_ORCID = re.compile(r"(\d{4}-\d{4}-\d{4}-\d{3}[\dX])")
_ORG_WORDS = re.compile(
    r"\b(collaboration|group|team|consortium|experiment|project|university|institute|laboratory|centre|center)\b",
    re.IGNORECASE,
)


def resolved_pairs(record: Any) -> list[tuple[str, int | None]] | None:
    """``(key, size)`` of a resolved ``Record``'s real files; None for a plain mapping."""
    files = getattr(record, "files", None)
    if isinstance(record, Mapping) or not isinstance(files, tuple):
        return None
    return [(str(getattr(f, "key", "")), getattr(f, "size", None)) for f in files]


def file_facts(pairs: list[tuple[str, int | None]], *, resolved: bool = True) -> FileFacts:
    """Count, total size (None when a size is unknown) and extensions of the files."""
    sizes = [s for _, s in pairs]
    total = sum(s for s in sizes if s is not None) if pairs and None not in sizes else None
    types = tuple(dict.fromkeys(t for t in (file_type(k) for k, _ in pairs) if t))
    return FileFacts(len(pairs), total, types, resolved)


def listed_pairs(value: Any) -> list[tuple[str, int | None]]:
    """``(key, size)`` of a JSON file list (``[{"key"|"filename", "size"|"filesize"}]``)."""
    out = []
    for f in items(value):
        key = text(f.get("key")) or text(f.get("filename")) or ""
        out.append((key, count(f.get("size", f.get("filesize")))))
    return out


def orcid(value: Any) -> str | None:
    raw = text(value)
    m = _ORCID.search(raw) if raw else None
    return m.group(1) if m else None


def person(entry: Any) -> Person | Organisation | None:
    """A creator: ``{"name": "Family, Given", "affiliation", "orcid"}`` or a bare name string.

    A name without a comma that names a group ("ATLAS Collaboration") is an organisation;
    any other name without a comma is kept whole as the family name (nothing is guessed).
    """
    data: Mapping[str, Any] = entry if isinstance(entry, Mapping) else {"name": entry}
    name = text(data.get("name"))
    if not name:
        family, given = text(data.get("family_name")), text(data.get("given_name"))
        if not family:
            return None
        name = f"{family}, {given}" if given else family
    if "," not in name and _ORG_WORDS.search(name):
        return Organisation(name)
    family, _, given = name.partition(",")
    affiliations = texts(data.get("affiliation")) or texts(data.get("affiliations"))
    return Person(
        family_name=family.strip() or name,
        given_name=given.strip() or None,
        affiliations=tuple(a for part in affiliations for a in _split_affiliations(part)),
        orcid=orcid(data.get("orcid")),
    )


def _split_affiliations(value: str) -> list[str]:
    # Zenodo holds one affiliation string per creator; "A; B" is how several are written.
    return [a.strip() for a in value.split(";") if a.strip()]


def license_from(value: Any) -> License | None:
    """``"cc-by-4.0"`` or ``{"id": "cc-by-4.0"}`` (Zenodo's records API) as a License."""
    return license_of({"license": value})


__all__ = ["file_facts", "license_from", "listed_pairs", "orcid", "person", "resolved_pairs"]
