"""InvenioRDM building blocks shared by every profile: field builders and their checks.

Shapes follow the InvenioRDM metadata reference (v12/v13): vocabulary references are
``{"id": ...}`` only (the server resolves titles), rights are an ``id`` *or* a free
``title``, people are ``person_or_org`` with ``type`` personal/organizational.
Vocabulary ids below are the stock ones (invenio-rdm-records fixtures).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from metadata.cernopendata import IDENTIFIER_PREFIX, SourceRecord, vocabulary
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
from metadata.text import PORTAL

# --- stock vocabularies ------------------------------------------------------------------

DATE_TYPES = vocabulary("date_types")
DESCRIPTION_TYPES = vocabulary("description_types")
RELATION_TYPES = vocabulary("relation_types")
IDENTIFIER_SCHEMES = vocabulary("identifier_schemes")
PERSON_TYPES = ("organizational", "personal")

_DOI = re.compile(r"10\.\d{4,9}/\S+")
_URL = re.compile(r"https?://[^\s/$.?#][^\s]*", re.IGNORECASE)


# --- builders ----------------------------------------------------------------------------


def envelope(metadata: dict[str, Any]) -> dict[str, Any]:
    """The full draft body around ``metadata``.

    ``files.enabled`` is always true: the pipeline decides about metadata-only records
    (parents with no files) and may switch it off before creating the draft.
    """
    return {
        "metadata": metadata,
        "access": {"record": "public", "files": "public"},
        "files": {"enabled": True},
    }


def title(src: SourceRecord) -> str | None:
    """The record's title; a neutral one naming the recid when the portal gave none."""
    if src.title:
        return src.title
    return f"CERN Open Data record {src.recid}" if src.recid else None


def creators(src: SourceRecord) -> list[dict[str, Any]]:
    """The collaboration as one organisational creator; the author list only without one."""
    name = src.creator_name
    if name:
        return [{"person_or_org": {"type": "organizational", "name": name}}]
    out: list[dict[str, Any]] = []
    for person in src.authors:
        entry: dict[str, Any] = {
            "person_or_org": {"type": "personal", "family_name": person.family_name}
            | ({"given_name": person.given_name} if person.given_name else {})
        }
        if person.affiliation:
            entry["affiliations"] = [{"name": person.affiliation}]
        out.append(entry)
    return out


def rights(src: SourceRecord) -> list[dict[str, Any]]:
    """The source license: a vocabulary id when stock InvenioRDM knows it, else free text.

    No license stated -> no rights: we do not assert terms the source did not state.
    """
    lic = src.license
    if lic is None:
        return []
    if lic.vocab_id:
        return [{"id": lic.vocab_id}]
    return [{"title": {"en": lic.source}}]


def subjects(src: SourceRecord) -> list[dict[str, str]]:
    seen: set[str] = set()
    out = []
    for value in [*src.categories, *src.collections, *src.keywords]:
        if value.casefold() not in seen:
            seen.add(value.casefold())
            out.append({"subject": value})
    return out


def dates(src: SourceRecord) -> list[dict[str, Any]]:
    if not src.date_created:
        return []
    return [{"date": src.date_created, "type": {"id": "created"}}]


def identifiers(src: SourceRecord) -> list[dict[str, str]]:
    """``cernopendata:<recid>`` (scheme other): what find_query() matches exactly."""
    return [{"identifier": src.identifier, "scheme": "other"}] if src.identifier else []


def related_identifiers(src: SourceRecord) -> list[dict[str, Any]]:
    """The source DOI and record page (identical content), and parent/child records."""
    out: list[dict[str, Any]] = []
    if src.doi:
        out.append({"identifier": src.doi, "scheme": "doi", "relation_type": {"id": "isidenticalto"}})
    if src.url:
        out.append({"identifier": src.url, "scheme": "url", "relation_type": {"id": "isidenticalto"}})
    seen = {src.url}
    for rel in src.relations:
        url = f"{PORTAL}/record/{rel.recid}"
        if url not in seen:
            seen.add(url)
            out.append({"identifier": url, "scheme": "url", "relation_type": {"id": rel.relation}})
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
    """The body must carry ``cernopendata:<recid>``, or a re-run could not find it again."""
    found = False
    idents = metadata.get("identifiers")
    for entry in idents if isinstance(idents, list) else []:
        ident = entry.get("identifier") if isinstance(entry, Mapping) else None
        if isinstance(ident, str) and re.fullmatch(re.escape(IDENTIFIER_PREFIX) + r"[1-9]\d*", ident):
            found = True
    if not found:
        issues.append(FieldIssue(join(path, "identifiers"), f"needs the source identifier {IDENTIFIER_PREFIX}<recid>"))


def stock_license_ids() -> frozenset[str]:
    return vocabulary("licenses")
