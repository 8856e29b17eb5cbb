"""Draft body validation the way InvenioRDM reports it.

InvenioRDM loads a draft with `raise_errors=False`: invalid or unknown fields are
dropped from what it stores and listed in `errors` ([{field, messages}]), and the
create/update still succeeds. Publishing runs the same checks strictly. This module
returns (cleaned body, errors) so the caller can do either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

Errors = list[dict[str, Any]]

MISSING = "Missing data for required field."

# Stock InvenioRDM metadata fields (rdm-records MetadataSchema); anything else is "Unknown field.".
RDM_FIELDS = frozenset(
    {
        "resource_type",
        "creators",
        "title",
        "additional_titles",
        "publisher",
        "publication_date",
        "subjects",
        "contributors",
        "dates",
        "languages",
        "identifiers",
        "related_identifiers",
        "sizes",
        "formats",
        "version",
        "rights",
        "copyright",
        "description",
        "additional_descriptions",
        "locations",
        "funding",
        "references",
    }
)

# The NRP "particles" model adds the physics fields the seed uploader filled.
PARTICLES_FIELDS = RDM_FIELDS | {
    "recid",
    "file_types",
    "experiment",
    "collision_information",
    "category",
    "dataset_type",
    "number_of_events",
}

# InvenioRDM's stock resource types (invenio-rdm-records' resource_types.yaml fixture), read
# from the project's one copy of the stock vocabularies: a file, not the metadata package's
# code, so the sandbox stays a stand-in of the server and not of the client.
VOCABULARIES = Path(__file__).resolve().parent.parent / "metadata" / "vocabularies.json"
RESOURCE_TYPES = frozenset(json.loads(VOCABULARIES.read_text(encoding="utf-8"))["resource_types"])

TOP_LEVEL = frozenset({"metadata", "access", "files", "custom_fields", "pids", "parent", "media_files"})

_EDTF_DAY = r"\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?"
_EDTF = re.compile(rf"^({_EDTF_DAY})(/({_EDTF_DAY}))?$")


def valid_edtf(value: Any) -> bool:
    """EDTF level 0 dates and intervals: YYYY, YYYY-MM, YYYY-MM-DD, A/B."""
    if not isinstance(value, str) or not _EDTF.match(value):
        return False
    if "/" in value:
        start, end = value.split("/")
        return start <= end
    return True


def validate_draft(body: dict[str, Any], model: str) -> tuple[dict[str, Any], Errors]:
    """Return the body InvenioRDM would store (invalid parts dropped) and its errors."""
    errors: Errors = []
    clean: dict[str, Any] = {k: v for k, v in body.items() if k in TOP_LEVEL}
    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        errors.append(_err("metadata", "Invalid input type."))
        metadata = {}
    allowed = PARTICLES_FIELDS if model == "particles" else RDM_FIELDS
    kept: dict[str, Any] = {}
    for name, value in metadata.items():
        if name not in allowed:
            errors.append(_err(f"metadata.{name}", "Unknown field."))
            continue
        field_errors = _check_field(name, value)
        if field_errors:
            errors.extend(field_errors)
            continue
        kept[name] = value
    for name in ("resource_type", "title", "publication_date", "creators"):
        if name not in metadata:
            errors.append(_err(f"metadata.{name}", MISSING))
    clean["metadata"] = kept
    errors.extend(_check_access(clean))
    files = clean.get("files")
    if files is not None and not (isinstance(files, dict) and isinstance(files.get("enabled", True), bool)):
        errors.append(_err("files.enabled", "Not a valid boolean."))
        clean.pop("files")
    return clean, errors


def _check_resource_type(path: str, value: Any) -> Errors:
    if not isinstance(value, dict) or "id" not in value:
        return [_err(f"{path}.id", MISSING)]
    if value["id"] not in RESOURCE_TYPES:
        return [_err(path, f"The resource type '{value['id']}' does not exist.")]
    return []


def _check_title(path: str, value: Any) -> Errors:
    if not isinstance(value, str):
        return [_err(path, "Not a valid string.")]
    if len(value.strip()) < 3:
        return [_err(path, "Shorter than minimum length 3.")]
    return []


def _check_date(path: str, value: Any) -> Errors:
    return [] if valid_edtf(value) else [_err(path, "Please provide a valid date or interval.")]


def _check_string(path: str, value: Any) -> Errors:
    return [] if isinstance(value, str) else [_err(path, "Not a valid string.")]


def _check_integer(path: str, value: Any) -> Errors:
    ok = isinstance(value, int) and not isinstance(value, bool)
    return [] if ok else [_err(path, "Not a valid integer.")]


def _check_list(path: str, value: Any) -> Errors:
    return [] if isinstance(value, list) else [_err(path, "Not a valid list.")]


# The check each known metadata field gets; other fields are kept unchecked.
_FIELD_CHECKS: dict[str, Callable[[str, Any], Errors]] = {
    "resource_type": _check_resource_type,
    "title": _check_title,
    "publication_date": _check_date,
    "creators": lambda path, value: _check_creators(path, value),
    **dict.fromkeys(("description", "publisher", "version", "experiment", "dataset_type", "copyright"), _check_string),
    **dict.fromkeys(("recid", "number_of_events"), _check_integer),
    **dict.fromkeys(
        ("subjects", "rights", "dates", "identifiers", "related_identifiers", "file_types", "languages"), _check_list
    ),
}


def _check_field(name: str, value: Any) -> Errors:
    check = _FIELD_CHECKS.get(name)
    return check(f"metadata.{name}", value) if check is not None else []


def _check_creators(path: str, value: Any) -> Errors:
    if not isinstance(value, list):
        return [_err(path, "Not a valid list.")]
    if not value:
        return [_err(path, MISSING)]
    errors: Errors = []
    for index, creator in enumerate(value):
        item = f"{path}.{index}.person_or_org"
        person = creator.get("person_or_org") if isinstance(creator, dict) else None
        if not isinstance(person, dict):
            errors.append(_err(item, MISSING))
            continue
        kind = person.get("type")
        if kind == "personal":
            if not str(person.get("family_name") or "").strip():
                errors.append(_err(f"{item}.family_name", "Family name must be filled."))
        elif kind == "organizational":
            if not str(person.get("name") or "").strip():
                errors.append(_err(f"{item}.name", "Name cannot be blank."))
        elif kind is None:
            errors.append(_err(f"{item}.type", MISSING))
        else:
            errors.append(_err(f"{item}.type", "Invalid value. Choose one of ['organizational', 'personal']."))
    return errors


def _check_access(clean: dict[str, Any]) -> Errors:
    access = clean.get("access")
    if access is None:
        clean["access"] = {"record": "public", "files": "public"}
        return []
    errors: Errors = []
    if not isinstance(access, dict):
        clean["access"] = {"record": "public", "files": "public"}
        return [_err("access", "Invalid input type.")]
    for name in ("record", "files"):
        if access.get(name, "public") not in ("public", "restricted"):
            errors.append(_err(f"access.{name}", "Must be one of: public, restricted."))
            access[name] = "public"
        access.setdefault(name, "public")
    return errors


def _err(field: str, message: str) -> dict[str, Any]:
    return {"field": field, "messages": [message]}
