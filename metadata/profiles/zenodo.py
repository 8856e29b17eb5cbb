"""Profile "zenodo": Zenodo's legacy deposit metadata (``PUT /api/deposit/depositions/{id}``).

- ``upload_type`` by the record's kind (``metadata/kinds.py``): dataset / software;
  presentation, poster, lesson, physical object as such; documentation is a
  ``publication`` (its own ``publication_type`` when Zenodo has it, else other),
  supplementaries a ``publication`` of type ``technicalnote``; environments (VM images,
  conditions) ``other``; images (with their ``image_type``, ``other`` when the source
  names none) and videos as such.
- ``creators``: the authors as ``{"name": "Family, Given", "affiliation", "orcid"}`` (several
  affiliations joined by "; "), in order; the collaboration as ``{"name"}`` only without authors.
- ``description``: the abstract as sanitised HTML (Zenodo requires one: without any text
  it names the source record); ``method``: the methodology; ``notes``: every other text
  block, every source-only fact, the relations as the source names them, and the source's
  own publication date when Zenodo's needed full date had to be completed.
- ``publication_date``: YYYY-MM-DD as the legacy API requires ("2024" -> "2024-01-01").
- ``access_right`` open; ``license`` the SPDX id when the vocabulary knows it (none stated:
  none sent, and the notes say so, because Zenodo would otherwise apply its default).
- ``keywords``: the experiments, the portal's type, the energy, categories, collections,
  keywords, and ``cernopendata:recid:<recid>``: the field find_query() searches.
- ``related_identifiers``: the source DOI and record page (``isIdenticalTo``), then every
  relation in Zenodo's camelCase vocabulary.

find_query(recid) -> ``metadata.subjects.subject:"cernopendata:recid:<recid>"``: since
Zenodo runs on InvenioRDM, a deposit's ``keywords`` are indexed as free subjects, and the
deposition search (``GET /api/deposit/depositions?q=``) takes that query syntax.

Records without files: Zenodo publishes no deposition without a file. ``record_document``
gives the closest honest thing: the source's own record JSON as the one file.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from metadata import kinds, readers
from metadata.base import SchemaProfile
from metadata.dataset import Dataset, Person
from metadata.html import escape, link_html
from metadata.profiles import rdm
from metadata.readers import IDENTIFIER, read, split_key
from metadata.readers.relations import ZENODO_NAMES
from metadata.readers.values import vocabulary
from metadata.schema import FieldIssue, array, join, obj, opt, req, string

RECID_KEYWORD = "cernopendata:recid:"
UPLOAD_TYPES = kinds.ZENODO_UPLOAD_TYPES
PUBLICATION_TYPES = kinds.ZENODO_PUBLICATION_TYPES
CONTRIBUTOR_TYPES = ("ContactPerson", "DataCollector", "DataCurator", "Producer", "ResearchGroup", "Other")
ACCESS_RIGHTS = ("open", "embargoed", "restricted", "closed")
IMAGE_TYPES = kinds.ZENODO_IMAGE_TYPES
_ORCID = r"\d{4}-\d{4}-\d{4}-\d{3}[\dX]"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def upload_type(ds: Dataset) -> tuple[str, str | None]:
    return kinds.zenodo_upload_type(ds.kind, ds.type_secondary)


def creator(c: Any) -> dict[str, str]:
    if not isinstance(c, Person):
        return {"name": c.name}
    out = {"name": c.display_name}
    if c.affiliations:
        out["affiliation"] = "; ".join(c.affiliations)
    if c.orcid:
        out["orcid"] = c.orcid
    return out


def publication_date(ds: Dataset) -> str | None:
    """A full date: a year or a month is completed to its first day (the legacy API needs one)."""
    value = (ds.date_published or "").split("/")[0]
    if not value:
        return None
    parts = value.split("-")
    return "-".join([*parts, *["01"] * (3 - len(parts))])


def keywords(ds: Dataset) -> list[str]:
    words = [*ds.experiments]
    words += [f"{ds.type_primary}/{s}" for s in ds.type_secondary] if ds.type_primary else []
    words += [ds.type_primary] if ds.type_primary and not ds.type_secondary else []
    words += [ds.energy_text] if ds.energy_text else []
    words += [*ds.categories, *ds.collections, *ds.keywords]
    if ds.identifier:  # cernopendata:recid:81009, zenodo:recid:123, dir:recid:<name>
        scheme, _, ident = ds.identifier.partition(":")
        words.append(f"{scheme}:recid:{ident}")
    seen: set[str] = set()
    out = []
    for w in words:
        if w.casefold() not in seen:
            seen.add(w.casefold())
            out.append(w)
    return out


def related_identifiers(ds: Dataset) -> list[dict[str, str]]:
    out = []
    for entry in rdm.related_identifiers(ds):
        out.append(
            {
                "identifier": entry["identifier"],
                "relation": ZENODO_NAMES[entry["relation_type"]["id"]],
                "scheme": entry["scheme"],
            }
        )
    return out


def _notes(ds: Dataset) -> str | None:
    blocks = [s for s in ds.sections if s.key != "methodology"]
    blocks += list(ds.extras)
    relations = rdm.relations_section(ds)
    if relations is not None:
        blocks.append(relations)
    parts = [rdm.headed(s) for s in blocks]
    facts = []
    if ds.date_published and ds.date_published != publication_date(ds):
        facts.append(f"Published on the source by {escape(ds.publisher)}: {escape(ds.date_published)}.")
    else:
        facts.append(f"Published on the source by {escape(ds.publisher)}.")
    if ds.date_created:
        facts.append(f"Created: {escape(ds.date_created)}.")
    if ds.license is None:
        facts.append("The source record states no license.")
    elif ds.license.spdx is None:
        facts.append(f"License as the source states it: {escape(ds.license.source)}.")
    if ds.metadata_only:
        facts.append("The source record lists no data files.")
        if ds.identifier:
            name = readers.document_name(ds.identifier)
            facts.append(
                f"The one file of this deposition, {escape(name)}, is the source record's metadata as JSON "
                "(Zenodo publishes no deposition without a file)."
            )
    if facts:
        parts.append(f"<h4>Source record</h4><p>{' '.join(facts)}</p>")
    return "".join(parts) or None


def _description(ds: Dataset) -> str | None:
    if ds.description:
        return ds.description.html
    if ds.url:
        return f"<p>Copy of CERN Open Data Portal record {link_html(ds.url, ds.url)}.</p>"
    return None


def _metadata(ds: Dataset) -> dict[str, Any]:
    kind, pub = upload_type(ds)
    md: dict[str, Any] = {"upload_type": kind}
    rdm.put(md, "publication_type", pub)
    if kind == "image":  # required with upload_type image
        md["image_type"] = kinds.zenodo_image_type(ds.type_secondary)
    rdm.put(md, "title", rdm.title(ds))
    rdm.put(md, "creators", [creator(c) for c in (ds.creators or ds.organisations)])
    if ds.creators:  # the collaboration is still named, as a research group
        rdm.put(md, "contributors", [{"name": o.name, "type": "ResearchGroup"} for o in ds.organisations])
    rdm.put(md, "description", _description(ds))
    md["access_right"] = "open"
    if ds.license is not None and ds.license.spdx:
        md["license"] = ds.license.spdx
    rdm.put(md, "publication_date", publication_date(ds))
    rdm.put(md, "keywords", keywords(ds))
    rdm.put(md, "related_identifiers", related_identifiers(ds))
    method = next((s for s in ds.sections if s.key == "methodology"), None)
    rdm.put(md, "method", method.html if method else None)
    rdm.put(md, "notes", _notes(ds))
    rdm.put(md, "version", ds.version)
    md["language"] = "eng"
    return md


# --- validation --------------------------------------------------------------------------


def _full_date(value: Any, path: str, issues: list[FieldIssue]) -> None:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        issues.append(FieldIssue(path, f"must be a date YYYY-MM-DD, not {value!r}"))
        return
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        issues.append(FieldIssue(path, f"{value!r} is not a calendar date"))


def _publication_type(value: Mapping[str, Any], path: str, issues: list[FieldIssue]) -> None:
    if value.get("upload_type") == "publication" and not value.get("publication_type"):
        issues.append(FieldIssue(join(path, "publication_type"), "is required when upload_type is publication"))


def _recid_keyword(value: Mapping[str, Any], path: str, issues: list[FieldIssue]) -> None:
    words = value.get("keywords")
    found = isinstance(words, list) and any(
        isinstance(w, str) and IDENTIFIER.fullmatch(w.replace(":recid:", ":", 1)) and ":recid:" in w for w in words
    )
    if not found:
        issues.append(FieldIssue(join(path, "keywords"), f"needs the source keyword {RECID_KEYWORD}<recid>"))


CREATOR = obj(
    {"name": req(string(min_len=1)), "affiliation": opt(string(min_len=1)), "orcid": opt(string(pattern=_ORCID))},
    closed=True,
)
CONTRIBUTOR = obj(
    {"name": req(string(min_len=1)), "type": req(string(choices=CONTRIBUTOR_TYPES)), "affiliation": opt(string())},
    closed=True,
)
RELATED = obj(
    {
        "identifier": req(string(min_len=1)),
        "relation": req(string(choices=frozenset(ZENODO_NAMES.values()))),
        "scheme": opt(string(min_len=1)),
        "resource_type": opt(string(min_len=1)),
    },
    closed=True,
)
SCHEMA = obj(
    {
        "metadata": req(
            obj(
                {
                    "upload_type": req(string(choices=UPLOAD_TYPES)),
                    "publication_type": opt(string(choices=PUBLICATION_TYPES)),
                    "image_type": opt(string(choices=IMAGE_TYPES)),
                    "title": req(string(min_len=1)),
                    "creators": req(array(CREATOR, min_items=1)),
                    "contributors": opt(array(CONTRIBUTOR)),
                    "description": req(string(min_len=1)),
                    "access_right": req(string(choices=ACCESS_RIGHTS)),
                    "license": opt(string(min_len=1, choices=vocabulary("licenses"))),
                    "publication_date": req(_full_date),
                    "keywords": opt(array(string(min_len=1), unique=True)),
                    "related_identifiers": opt(array(RELATED, unique=True)),
                    "method": opt(string(min_len=1)),
                    "notes": opt(string(min_len=1)),
                    "language": opt(string(pattern=r"[a-z]{3}")),
                    "version": opt(string(min_len=1)),
                },
                rules=(_publication_type, _recid_keyword),
                closed=True,  # the deposit API refuses unknown metadata fields
            )
        ),
    },
    closed=True,
)


class ZenodoProfile(SchemaProfile):
    name = "zenodo"

    def __init__(self) -> None:
        self.schema = SCHEMA

    def transform(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"metadata": _metadata(read(record))}

    def find_query(self, recid: str) -> str:
        scheme, ident = split_key(recid)  # "81009" (CERN), "zenodo:123", "dir:name"
        return f'metadata.subjects.subject:"{scheme}:recid:{ident}"'


def record_document(record: Any) -> tuple[str, bytes]:
    """The one file of a metadata-only deposition: the source record JSON, as the source gave it.

    Zenodo publishes no deposition without a file; this file is the record itself (no
    invented content), named ``cernopendata-record-<recid>.json`` (``zenodo-record-<id>.json``,
    ``dir-record-<name>.json`` for records of other sources): ``metadata.readers.record_document``.
    """
    return readers.record_document(record)


PROFILE = ZenodoProfile()
