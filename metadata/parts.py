"""One part of a record split into a series (``oversize = "split"``, pipeline/oversize.py).

A record larger than its target allows goes as records "part 1 of N" .. "N of N", each
holding some of the files. A part's body is the profile's body for the record with only
that part's files (so its sizes and formats are the part's own), changed here so that:

- its title says "(part i of N)", and its description opens with a paragraph naming the
  source record and the series;
- it is known by its own identifier (``cernopendata:81009.part-1-of-3``; Zenodo: the
  keyword ``cernopendata:recid:81009.part-1-of-3``): the profile's ``find_query`` of the
  part key finds the part again on a re-run, and the query of the whole record never
  finds a part (NRP: no ``recid`` field, which that query searches);
- it is part of the source record: the source page and DOI, "isidenticalto" for a whole
  record, become "ispartof" (a part is not identical to the record);
- it is related to the other parts by their pages on the target: the previous one
  "continues", the next one "iscontinuedby", the others "references" (DataCite has no
  "sibling" relation; the order is what these say).

RDM-shaped bodies (inveniordm, nrp-particles) and Zenodo's deposit metadata are the two
shapes; a profile of another shape cannot be split (ConfigError naming it).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ferry.core.errors import ConfigError
from metadata.html import escape, link_html
from metadata.readers.relations import ZENODO_NAMES

RDM_PROFILES = frozenset({"inveniordm", "nrp-particles"})
ZENODO_PROFILES = frozenset({"zenodo"})


@dataclass(frozen=True)
class Part:
    index: int  # 1-based
    total: int
    whole_identifier: str  # cernopendata:81009
    part_identifier: str  # cernopendata:81009.part-1-of-3
    source_url: str | None  # the source record's page, when it has one
    file_count: int
    whole_file_count: int
    siblings: Mapping[int, str]  # index -> the page of that part on the target (known ones)


def title(base: str, part: Part) -> str:
    return f"{base} (part {part.index} of {part.total})"


def _relation_to(part: Part, other: int) -> str:
    if other == part.index - 1:
        return "continues"
    if other == part.index + 1:
        return "iscontinuedby"
    return "references"


def _intro(part: Part) -> str:
    source = part.whole_identifier
    named = link_html(source, part.source_url) if part.source_url else escape(source)
    others = [
        link_html(f"part {i} of {part.total}", url) for i, url in sorted(part.siblings.items()) if i != part.index
    ]
    text = (
        f"<p>Part {part.index} of {part.total} of the record {named}, which is larger than this repository "
        f"allows per record: this part holds {part.file_count} of its {part.whole_file_count} files."
    )
    if others:
        text += f" The other parts: {', '.join(others)}."
    return text + "</p>"


def _rdm(md: dict[str, Any], part: Part) -> None:
    for entry in md.get("identifiers") or []:
        if isinstance(entry, dict) and entry.get("identifier") == part.whole_identifier:
            entry["identifier"] = part.part_identifier
    md.pop("recid", None)  # NRP's find_query of the whole record searches it
    related = [r for r in md.get("related_identifiers") or [] if isinstance(r, dict)]
    for entry in related:
        if entry.get("relation_type", {}).get("id") == "isidenticalto":
            entry["relation_type"] = {"id": "ispartof"}
    for index, url in sorted(part.siblings.items()):
        if index != part.index:
            related.append({"identifier": url, "scheme": "url", "relation_type": {"id": _relation_to(part, index)}})
    if related:
        md["related_identifiers"] = related


def _zenodo(md: dict[str, Any], part: Part) -> None:
    whole = part.whole_identifier.replace(":", ":recid:", 1)
    words = [w for w in md.get("keywords") or [] if isinstance(w, str)]
    md["keywords"] = [part.part_identifier.replace(":", ":recid:", 1) if w == whole else w for w in words]
    related = [r for r in md.get("related_identifiers") or [] if isinstance(r, dict)]
    for entry in related:
        if entry.get("relation") == ZENODO_NAMES["isidenticalto"]:
            entry["relation"] = ZENODO_NAMES["ispartof"]
    for index, url in sorted(part.siblings.items()):
        if index != part.index:
            related.append({"identifier": url, "relation": ZENODO_NAMES[_relation_to(part, index)], "scheme": "url"})
    if related:
        md["related_identifiers"] = related


def part_body(profile: str, body: Mapping[str, Any], part: Part) -> dict[str, Any]:
    """``body`` (the profile's body for the part's files) as part ``part`` of the series."""
    if profile not in RDM_PROFILES | ZENODO_PROFILES:
        raise ConfigError(
            f'profile {profile} cannot carry a record split into parts (oversize = "split"); '
            'use oversize = "bundle" or "refuse" for its target',
            field="oversize",
        )
    out = copy.deepcopy(dict(body))
    md = out.setdefault("metadata", {})
    md["title"] = title(str(md.get("title") or part.whole_identifier), part)
    md["description"] = _intro(part) + str(md.get("description") or "")
    (_rdm if profile in RDM_PROFILES else _zenodo)(md, part)
    return out


__all__ = ["Part", "part_body", "title"]
