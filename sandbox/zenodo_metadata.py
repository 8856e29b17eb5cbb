"""Deposit metadata as Zenodo's legacy API checks it, and the search query matcher.

Two levels, as on Zenodo: a create or update with a malformed field (a wrong type, an
unknown upload type, a bad date) is refused with 400 and the field named; a draft may
lack required fields until ``actions/publish``, which then refuses with every missing
field named (title, upload_type, description, creators, publication_date).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
FieldErrors = list[Obj]

# The deposit API's vocabularies, from the one list the profiles use too (read as a file:
# the stand-in imports nothing of dataferry's metadata code).
_VOCABULARIES = json.loads(
    (Path(__file__).resolve().parent.parent / "metadata" / "vocabularies.json").read_text("utf-8")
)
UPLOAD_TYPES = tuple(_VOCABULARIES["zenodo_upload_types"])
PUBLICATION_TYPES = tuple(_VOCABULARIES["zenodo_publication_types"])
IMAGE_TYPES = tuple(_VOCABULARIES["zenodo_image_types"])
ACCESS_RIGHTS = ("open", "embargoed", "restricted", "closed")
RELATIONS = (
    "isCitedBy",
    "cites",
    "isSupplementTo",
    "isSupplementedBy",
    "isContinuedBy",
    "continues",
    "isDescribedBy",
    "describes",
    "hasMetadata",
    "isMetadataFor",
    "isNewVersionOf",
    "isPreviousVersionOf",
    "isPartOf",
    "hasPart",
    "isReferencedBy",
    "references",
    "isDocumentedBy",
    "documents",
    "isCompiledBy",
    "compiles",
    "isVariantFormOf",
    "isOriginalFormOf",
    "isIdenticalTo",
    "isAlternateIdentifier",
    "isReviewedBy",
    "reviews",
    "isDerivedFrom",
    "isSourceOf",
    "requires",
    "isRequiredBy",
    "isObsoletedBy",
    "obsoletes",
)
REQUIRED_TO_PUBLISH = ("upload_type", "publication_date", "title", "creators", "description")
STRING_FIELDS = (
    "title",
    "description",
    "license",
    "access_conditions",
    "doi",
    "notes",
    "version",
    "language",
    "method",
    "journal_title",
    "journal_volume",
    "journal_issue",
    "journal_pages",
    "conference_title",
    "conference_acronym",
    "conference_dates",
    "conference_place",
    "conference_url",
    "conference_session",
    "conference_session_part",
    "imprint_publisher",
    "imprint_isbn",
    "imprint_place",
    "partof_title",
    "partof_pages",
    "thesis_university",
)
LIST_FIELDS = ("references", "communities", "grants", "subjects", "locations", "dates", "thesis_supervisors")
KNOWN = {
    *STRING_FIELDS,
    *LIST_FIELDS,
    "upload_type",
    "publication_type",
    "image_type",
    "publication_date",
    "embargo_date",
    "creators",
    "contributors",
    "keywords",
    "related_identifiers",
    "access_right",
    "prereserve_doi",
    "custom",
}
_ORCID = re.compile(r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$")


def _err(field: str, message: str) -> Obj:
    return {"field": f"metadata.{field}", "messages": [message]}


def _iso_date(value: Any) -> bool:
    try:
        date.fromisoformat(str(value))
    except ValueError:
        return False
    return isinstance(value, str) and len(value) == 10


def _people(name: str, value: Any) -> Iterator[Obj]:
    if not isinstance(value, list) or (not value and name == "creators"):
        yield _err(name, "Shorter than minimum length 1." if isinstance(value, list) else "Not a valid list.")
        return
    for i, person in enumerate(value):
        if not isinstance(person, dict):
            yield _err(f"{name}.{i}", "Invalid input type.")
            continue
        if not isinstance(person.get("name"), str) or not person["name"].strip():
            yield _err(f"{name}.{i}.name", "Missing data for required field.")
        for key in ("affiliation", "gnd", "type"):
            if key in person and person[key] is not None and not isinstance(person[key], str):
                yield _err(f"{name}.{i}.{key}", "Not a valid string.")
        orcid = person.get("orcid")
        if orcid is not None and (not isinstance(orcid, str) or not _ORCID.match(orcid.rsplit("/", 1)[-1])):
            yield _err(f"{name}.{i}.orcid", f"Invalid ORCID identifier {orcid!r}.")


def field_errors(metadata: Any) -> FieldErrors:
    """Malformed fields of a deposit ``metadata`` object (missing ones are not errors here)."""
    if not isinstance(metadata, dict):
        return [{"field": "metadata", "messages": ["Invalid input type."]}]
    # One check per group of fields, in the order Zenodo lists its errors.
    checks = (_shape_errors, _upload_type_errors, _date_errors, _access_errors, _content_errors)
    return [error for check in checks for error in check(metadata)]


def _shape_errors(metadata: Obj) -> Iterator[Obj]:
    for key in sorted(set(metadata) - KNOWN):
        yield _err(key, "Unknown field.")
    for key in STRING_FIELDS:
        if key in metadata and not isinstance(metadata[key], str):
            yield _err(key, "Not a valid string.")
    for key in LIST_FIELDS:
        if key in metadata and not isinstance(metadata[key], list):
            yield _err(key, "Not a valid list.")


def _upload_type_errors(metadata: Obj) -> Iterator[Obj]:
    upload = metadata.get("upload_type")
    if upload is not None and upload not in UPLOAD_TYPES:
        yield _err("upload_type", f"Invalid upload type {upload!r}. Must be one of: {', '.join(UPLOAD_TYPES)}.")
    if upload == "publication" and metadata.get("publication_type") not in PUBLICATION_TYPES:
        yield _err("publication_type", "Invalid publication type.")
    if upload == "image" and metadata.get("image_type") not in IMAGE_TYPES:
        yield _err("image_type", "Invalid image type.")


def _date_errors(metadata: Obj) -> Iterator[Obj]:
    for key in ("publication_date", "embargo_date"):
        if key in metadata and not _iso_date(metadata[key]):
            yield _err(key, "Not a valid date.")


def _access_errors(metadata: Obj) -> Iterator[Obj]:
    access = metadata.get("access_right")
    if access is not None and access not in ACCESS_RIGHTS:
        yield _err("access_right", f"Must be one of: {', '.join(ACCESS_RIGHTS)}.")
    if access == "embargoed" and "embargo_date" not in metadata:
        yield _err("embargo_date", "Embargo date must be set when access right is embargoed.")
    if access == "restricted" and not metadata.get("access_conditions"):
        yield _err("access_conditions", "Access conditions are required when access right is restricted.")


def _content_errors(metadata: Obj) -> Iterator[Obj]:
    for key in ("creators", "contributors"):
        if key in metadata:
            yield from _people(key, metadata[key])
    keywords = metadata.get("keywords")
    if keywords is not None and (not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords)):
        yield _err("keywords", "Not a valid list of strings.")
    yield from _related(metadata.get("related_identifiers"))
    if "custom" in metadata and not isinstance(metadata["custom"], dict):
        yield _err("custom", "Not a valid mapping.")


def _related(value: Any) -> Iterator[Obj]:
    if value is None:
        return
    if not isinstance(value, list):
        yield _err("related_identifiers", "Not a valid list.")
        return
    for i, item in enumerate(value):
        where = f"related_identifiers.{i}"
        if not isinstance(item, dict):
            yield _err(where, "Invalid input type.")
            continue
        if not isinstance(item.get("identifier"), str) or not item["identifier"].strip():
            yield _err(f"{where}.identifier", "Missing data for required field.")
        if item.get("relation") not in RELATIONS:
            yield _err(f"{where}.relation", f"Invalid relation type {item.get('relation')!r}.")


def publish_errors(metadata: Obj, file_count: int) -> FieldErrors:
    """What stops a draft from being published: malformed and missing fields, no files."""
    errors = field_errors(metadata)
    for key in REQUIRED_TO_PUBLISH:
        value = metadata.get(key)
        if value is None or value == "" or value == []:
            errors.append(_err(key, "Missing data for required field."))
    if isinstance(metadata.get("title"), str) and 0 < len(metadata["title"].strip()) < 3:
        errors.append(_err("title", "Shorter than minimum length 3."))
    if file_count == 0:
        errors.append(
            {
                "field": "files.enabled",
                "messages": [
                    "Missing uploaded files. To disable files for this record please mark it as metadata-only."
                ],
            }
        )
    return errors


# --- search ---------------------------------------------------------------------------------
# A small subset of the query-string syntax Zenodo's search takes: terms separated by
# spaces (or AND), each `field:value`, `field:"a phrase"` or free text; every term must
# match. Field paths are dotted, relative to the document (`conceptrecid`, `id`) or to its
# metadata (`keywords`, `related_identifiers.identifier`, `custom.x`); a `metadata.` prefix
# is accepted too, and `subjects.subject` (RDM's name for keywords). Values match
# case-insensitively, as whole values (quoted) or as words.
_TERM = re.compile(r'(?:(?P<field>[\w.:-]+?):)?(?:"(?P<phrase>[^"]*)"|(?P<word>[^\s"]+))')


def _values(node: Any, path: list[str]) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _values(item, path)
        return
    if not path:
        if isinstance(node, dict):
            for value in node.values():
                yield from _values(value, [])
        elif node is not None:
            yield str(node)
        return
    if isinstance(node, dict) and path[0] in node:
        yield from _values(node[path[0]], path[1:])


def _term_matches(doc: Obj, field: str | None, value: str, phrase: bool) -> bool:
    want = value.lower()
    if field is None:
        candidates = list(_values(doc.get("metadata"), []))
    else:
        path = field.removeprefix("metadata.").split(".")
        if path == ["subjects", "subject"]:  # the RDM name of legacy keywords
            path = ["keywords"]
        top = doc.get(path[0]) if path[0] in ("id", "recid", "conceptrecid") else None
        candidates = [str(top)] if top is not None else list(_values(doc.get("metadata"), path))
    for text in candidates:
        low = text.lower()
        if (phrase and (low == want if field else want in low)) or (
            not phrase and (low == want or want in re.split(r"[^\w:./-]+", low))
        ):
            return True
    return False


def matches_query(doc: Obj, query: str) -> bool:
    query = (query or "").strip()
    if not query or query == "*":
        return True
    for match in _TERM.finditer(query):
        if match.group("word") in ("AND", "&&"):
            continue
        phrase = match.group("phrase") is not None
        value = match.group("phrase") if phrase else match.group("word")
        if not _term_matches(doc, match.group("field"), value or "", phrase):
            return False
    return True
