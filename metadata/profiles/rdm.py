"""InvenioRDM building blocks shared by every profile: field builders and their checks.

Shapes follow the InvenioRDM metadata reference (v12/v13): vocabulary references are
``{"id": ...}`` only (the server resolves titles), rights are an ``id`` *or* a free
``title``, people are ``person_or_org`` with ``type`` personal/organizational.
Vocabulary ids below are the stock ones (invenio-rdm-records fixtures).

Why one module of about 400 lines: one field builder and its check per InvenioRDM
field, in the order of the metadata reference; split, one schema would be spread
over several files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from metadata import kinds
from metadata.dataset import Dataset, Person, Section
from metadata.html import escape, link_html, list_html
from metadata.readers import IDENTIFIER, split_key
from metadata.readers.values import vocabulary
from metadata.schema import (
    Check,
    FieldIssue,
    array,
    boolean,
    edtf,
    join,
    obj,
    opt,
    req,
    string,
    vocab,
)

IDENTIFIER_PREFIX = "cernopendata:"  # the alternate identifier that find_query() matches (CERN records)

# --- stock vocabularies ------------------------------------------------------------------

DATE_TYPES = vocabulary("date_types")
TITLE_TYPES = ("alternative-title", "subtitle", "translated-title", "other")
DESCRIPTION_TYPES = vocabulary("description_types")
RELATION_TYPES = vocabulary("relation_types")
IDENTIFIER_SCHEMES = vocabulary("identifier_schemes")
PERSON_TYPES = ("organizational", "personal")

_DOI = re.compile(r"10\.\d{4,9}/\S+")
_URL = re.compile(r"https?://[^\s/$.?#][^\s]*", re.IGNORECASE)


# --- builders ----------------------------------------------------------------------------

# Record kind -> stock resource type: each kind its own type (metadata/kinds.py, MAPPING.md).
EMITTED_RESOURCE_TYPES = kinds.RDM_EMITTED

# Where each text block and extra goes among InvenioRDM's description types.
_DESCRIPTION_TYPES = {
    "methodology": "methods",
    "pileup": "methods",
    "methodology.steps": "methods",
    "usage": "technical-info",
    "validation": "technical-info",
    "use_with": "technical-info",
    "system_details": "technical-info",
    "dataset_semantics": "technical-info",
    "dataset_semantics_files": "technical-info",
}


def resource_type(ds: Dataset) -> str:
    return kinds.rdm_resource_type(ds.kind, ds.type_secondary)


def envelope(metadata: dict[str, Any], ds: Dataset) -> dict[str, Any]:
    """The full draft body; a record without files is a metadata-only record."""
    return {
        "metadata": metadata,
        "access": {"record": "public", "files": "public"},
        "files": {"enabled": not ds.metadata_only},
    }


def title(ds: Dataset) -> str | None:
    """The record's title; a neutral one naming the recid only for a record with files.

    A record with neither files nor a title has nothing to describe it: no title then,
    and validation says so.
    """
    if ds.title:
        return ds.title
    if ds.recid and not ds.metadata_only:
        return f"CERN Open Data record {ds.recid}"
    return None


def _person(p: Person) -> dict[str, Any]:
    name: dict[str, Any] = {"type": "personal", "family_name": p.family_name}
    if p.given_name:
        name["given_name"] = p.given_name
    if p.orcid:
        name["identifiers"] = [{"scheme": "orcid", "identifier": p.orcid}]
    entry: dict[str, Any] = {"person_or_org": name}
    if p.affiliations:
        entry["affiliations"] = [{"name": a} for a in p.affiliations]
    return entry


def creators(ds: Dataset) -> list[dict[str, Any]]:
    """The record's authors in order; the collaboration only when there are none."""
    out = []
    for c in ds.creators or ds.organisations:
        if isinstance(c, Person):
            out.append(_person(c))
        else:
            out.append({"person_or_org": {"type": "organizational", "name": c.name}})
    return out


def contributors(ds: Dataset) -> list[dict[str, Any]]:
    """With authors as creators, the collaboration is still named: as a research group."""
    if not ds.creators:
        return []
    return [
        {"person_or_org": {"type": "organizational", "name": o.name}, "role": {"id": "researchgroup"}}
        for o in ds.organisations
    ]


def rights(ds: Dataset) -> list[dict[str, Any]]:
    """The source license: a vocabulary id when stock InvenioRDM knows it, else free text.

    No license stated -> no rights: we do not assert terms the source did not state.
    """
    lic = ds.license
    if lic is None:
        return []
    if lic.spdx:
        return [{"id": lic.spdx}]
    return [{"title": {"en": lic.source}}]


def subjects(ds: Dataset) -> list[dict[str, str]]:
    seen: set[str] = set()
    out = []
    kinds = [f"{ds.type_primary}/{t}" for t in ds.type_secondary] or ([ds.type_primary] if ds.type_primary else [])
    for value in [*ds.experiments, *kinds, *ds.categories, *ds.collections, *ds.keywords]:
        if value.casefold() not in seen:
            seen.add(value.casefold())
            out.append({"subject": value})
    return out


def dates(ds: Dataset) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if ds.date_created:
        out.append({"date": ds.date_created, "type": {"id": "created"}})
    if ds.date_reprocessed:
        out.append({"date": ds.date_reprocessed, "type": {"id": "other"}, "description": "reprocessed"})
    return out


def additional_titles(ds: Dataset) -> list[dict[str, Any]]:
    if not ds.title_additional or ds.title_additional == ds.title:
        return []
    return [{"title": ds.title_additional, "type": {"id": "alternative-title"}, "lang": {"id": "eng"}}]


def identifiers(ds: Dataset) -> list[dict[str, str]]:
    """``cernopendata:<recid>`` (scheme other): what find_query() matches exactly."""
    return [{"identifier": ds.identifier, "scheme": "other"}] if ds.identifier else []


def related_identifiers(ds: Dataset) -> list[dict[str, Any]]:
    """The source DOI and page (identical content), then every relation and record link."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()

    def add(identifier: str, scheme: str, relation: str) -> None:
        if (identifier, relation) not in seen:
            seen.add((identifier, relation))
            out.append({"identifier": identifier, "scheme": scheme, "relation_type": {"id": relation}})

    if ds.doi:
        add(ds.doi, "doi", "isidenticalto")
    if ds.url:
        add(ds.url, "url", "isidenticalto")
    related = {r.url for r in ds.relations if r.origin == "relations"}
    for rel in ds.relations:
        if rel.origin != "relations" and rel.url in related:
            continue  # a text link to a record already related: the relation says more
        if rel.url:
            add(rel.url, "url", rel.relation)
        if rel.doi:
            add(rel.doi, "doi", rel.relation)
    return out


def relations_section(ds: Dataset) -> Section | None:
    """Every relation as the source names it (isChildOf, isSiblingOf...), beside its DataCite type."""
    rows = []
    for rel in ds.relations:
        if rel.origin != "relations":
            continue
        label = rel.title or (f"CERN Open Data record {rel.recid}" if rel.recid else rel.doi or "")
        line = f"{escape(rel.source_type)}: {link_html(label, rel.url or _doi_url(rel.doi))}"
        if rel.description:
            line += f" ({escape(rel.description)})"
        rows.append(line + f" [{escape(rel.relation)}]")
    return (
        Section("relations", "Related records (as the source names the relations)", list_html(rows)) if rows else None
    )


def _doi_url(doi: str | None) -> str | None:
    return f"https://doi.org/{doi}" if doi else None


def headed(section: Section) -> str:
    return f"<h4>{escape(section.title)}</h4>{section.html}"


def additional_descriptions(sections: Iterable[Section]) -> list[dict[str, Any]]:
    return [
        {"description": headed(s), "type": {"id": _DESCRIPTION_TYPES.get(s.key, "other")}} for s in sections if s.html
    ]


def sizes(ds: Dataset) -> list[str]:
    out = []
    if not ds.metadata_only:
        out.append(f"{ds.files.count} files")
        if ds.files.size is not None:
            out.append(f"{ds.files.size} bytes")
    if ds.number_of_events is not None:
        out.append(f"{ds.number_of_events} events")
    return out


def put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` only when there is something to say (no empty lists, no nulls)."""
    if value is None or value == [] or value == {} or value == "":
        return
    target[key] = value


# --- checks ------------------------------------------------------------------------------


def _names_by_type(value: Mapping[str, Any], path: str, issues: list[FieldIssue]) -> None:
    kind = value.get("type")
    if kind == "personal" and not _filled(value.get("family_name")):
        issues.append(FieldIssue(join(path, "family_name"), "is required for a personal name"))
    if kind == "organizational" and not _filled(value.get("name")):
        issues.append(FieldIssue(join(path, "name"), "is required for an organizational name"))


def _filled(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


PERSON_OR_ORG = obj(
    {
        "type": req(string(choices=PERSON_TYPES)),
        "name": opt(string(min_len=1)),
        "given_name": opt(string()),
        "family_name": opt(string()),
        "identifiers": opt(array(obj({"scheme": req(string(min_len=1)), "identifier": req(string(min_len=1))}))),
    },
    rules=(_names_by_type,),
)


def _id_or_name(value: Mapping[str, Any], path: str, issues: list[FieldIssue]) -> None:
    if not _filled(value.get("id")) and not _filled(value.get("name")):
        issues.append(FieldIssue(path, "needs an id or a name"))


CREATOR = obj(
    {
        "person_or_org": req(PERSON_OR_ORG),
        "role": opt(vocab()),
        "affiliations": opt(
            array(obj({"id": opt(string(min_len=1)), "name": opt(string(min_len=1))}, rules=(_id_or_name,)))
        ),
    }
)


def _lang_map(value: Any, path: str, issues: list[FieldIssue]) -> None:
    if not isinstance(value, Mapping) or not value:
        issues.append(FieldIssue(path, "must be an object of language code -> text"))
        return
    for lang, label in value.items():
        if not (isinstance(lang, str) and re.fullmatch(r"[a-z]{2}", lang)):
            issues.append(FieldIssue(join(path, str(lang)), "must be keyed by a 2-letter language code"))
        if not _filled(label):
            issues.append(FieldIssue(join(path, str(lang)), "must be a non-empty string"))


def _id_xor_title(value: Mapping[str, Any], path: str, issues: list[FieldIssue]) -> None:
    # InvenioRDM refuses an id with anything else beside it, and an entry with neither.
    has_id = value.get("id") is not None
    if not has_id and value.get("title") is None:
        issues.append(FieldIssue(path, "needs a license id or a free-text title"))
    elif has_id and len(value) > 1:
        others = ", ".join(sorted(k for k in value if k != "id"))
        issues.append(FieldIssue(path, f"a license id must stand alone (also has: {others})"))


def rights_check(ids: frozenset[str] | None) -> Check:
    return array(
        obj(
            {
                "id": opt(string(min_len=1, choices=ids)),
                "title": opt(_lang_map),
                "description": opt(_lang_map),
                "link": opt(string(pattern=_URL.pattern)),
            },
            rules=(_id_xor_title,),
        )
    )


def _subject_needs_value(value: Mapping[str, Any], path: str, issues: list[FieldIssue]) -> None:
    if not _filled(value.get("id")) and not _filled(value.get("subject")):
        issues.append(FieldIssue(path, "needs an id or a subject"))


SUBJECTS = array(
    obj({"id": opt(string(min_len=1)), "subject": opt(string(min_len=1))}, rules=(_subject_needs_value,)),
    unique=True,
)

DATES = array(obj({"date": req(edtf()), "type": req(vocab(DATE_TYPES)), "description": opt(string())}))


def _identifier_matches_scheme(value: Mapping[str, Any], path: str, issues: list[FieldIssue]) -> None:
    scheme, ident = value.get("scheme"), value.get("identifier")
    if not isinstance(ident, str):
        return
    if scheme == "doi" and not _DOI.fullmatch(ident):
        issues.append(FieldIssue(join(path, "identifier"), f"{ident!r} is not a DOI (10.NNNN/...)"))
    if scheme == "url" and not _URL.fullmatch(ident):
        issues.append(FieldIssue(join(path, "identifier"), f"{ident!r} is not an http(s) URL"))


IDENTIFIERS = array(
    obj(
        {"identifier": req(string(min_len=1)), "scheme": req(string(choices=IDENTIFIER_SCHEMES))},
        rules=(_identifier_matches_scheme,),
    ),
    unique=True,
)

RELATED_IDENTIFIERS = array(
    obj(
        {
            "identifier": req(string(min_len=1)),
            "scheme": req(string(choices=IDENTIFIER_SCHEMES)),
            "relation_type": req(vocab(RELATION_TYPES)),
            "resource_type": opt(vocab()),
        },
        rules=(_identifier_matches_scheme,),
    ),
    unique=True,
)

DESCRIPTION = string(min_len=3)
ADDITIONAL_DESCRIPTIONS = array(obj({"description": req(DESCRIPTION), "type": req(vocab(DESCRIPTION_TYPES))}))
ADDITIONAL_TITLES = array(obj({"title": req(string(min_len=3)), "type": req(vocab(TITLE_TYPES)), "lang": opt(vocab())}))
LANGUAGES = array(vocab(), unique=True)
STRINGS = array(string(min_len=1))

ACCESS = obj(
    {
        "record": req(string(choices=("public", "restricted"))),
        "files": req(string(choices=("public", "restricted"))),
    }
)
FILES = obj({"enabled": req(boolean())})


def has_source_identifier(metadata: Mapping[str, Any], path: str, issues: list[FieldIssue]) -> None:
    """The body must carry its source identifier (``cernopendata:<recid>``, ``zenodo:<id>``,
    ``dir:<name>``: ``metadata.readers.IDENTIFIER``), or a re-run could not find it again."""
    found = False
    idents = metadata.get("identifiers")
    for entry in idents if isinstance(idents, list) else []:
        ident = entry.get("identifier") if isinstance(entry, Mapping) else None
        if isinstance(ident, str) and IDENTIFIER.fullmatch(ident):
            found = True
    if not found:
        issues.append(FieldIssue(join(path, "identifiers"), f"needs the source identifier {IDENTIFIER_PREFIX}<recid>"))


def find_by_identifier(key: str) -> str:
    """The ``q=`` matching the identifier of the record with source key ``key`` exactly."""
    scheme, ident = split_key(key)
    return f'metadata.identifiers.identifier:"{scheme}:{ident}"'


def stock_license_ids() -> frozenset[str]:
    return vocabulary("licenses")
