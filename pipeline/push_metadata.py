"""`ferry push`'s metadata: the flags and ``--metadata FILE.json`` as a record's document.

The flags speak Zenodo's dialect (``title``, ``creators``, ``description``, ``upload_type``);
``DIALECTS`` turns them into the document of the target's profile. A new record must carry
every field a publish needs, checked here before the push makes any request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from ferry.core.errors import InputError
from upload.targets.base import RemoteRecord

# What a publish needs in a new record: the flags that give it, named as in the document.
REQUIRED = ("title", "creators", "description", "upload_type")


@runtime_checkable
class MetadataReader(Protocol):
    """A target that can read a record's current metadata document (Zenodo)."""

    async def read_metadata(self, rec: RemoteRecord) -> dict[str, Any]: ...


def creators_from(names: Sequence[str]) -> list[dict[str, str]]:
    """``"Family, Given"`` strings as Zenodo creators (anything else is refused, named)."""
    out = []
    for name in names:
        family, _, given = name.partition(",")
        if not family.strip() or not given.strip():
            raise InputError(f'--creators {name!r}: write each creator as "Family, Given"', field="creators")
        out.append({"name": f"{family.strip()}, {given.strip()}"})
    return out


def wanted_metadata(metadata_file: Path | None, flags: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata fields this push sets: ``--metadata FILE.json``, then the flags over it."""
    fields: dict[str, Any] = {}
    if metadata_file is not None:
        try:
            doc = orjson.loads(metadata_file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise InputError(f"--metadata {metadata_file}: cannot read it as JSON: {exc}") from exc
        doc = doc.get("metadata", doc) if isinstance(doc, dict) else doc
        if not isinstance(doc, dict):
            raise InputError(f"--metadata {metadata_file}: must hold a JSON object")
        fields.update(doc)
    fields.update({k: v for k, v in flags.items() if v not in (None, "", [])})
    return fields


def missing_required(fields: Mapping[str, Any]) -> list[str]:
    return [k for k in REQUIRED if fields.get(k) in (None, "", [])]


def check_new_metadata(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A new record's metadata: every field a publish needs, the date defaulting to today."""
    missing = missing_required(fields)
    if missing:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in missing)
        raise InputError(
            f"a new deposition needs {', '.join(missing)} (give {flags} or --metadata FILE.json)", field=missing[0]
        )
    return {"publication_date": date.today().isoformat(), **fields}


def zenodo_document(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Zenodo's deposit metadata: the fields as they are (the flags speak its dialect)."""
    return {"metadata": dict(fields)}


def rdm_document(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The same fields as an InvenioRDM/NRP draft body (``resource_type``, ``person_or_org``)."""
    metadata: dict[str, Any] = {k: v for k, v in fields.items() if k not in ("upload_type", "creators")}
    if fields.get("upload_type"):
        metadata["resource_type"] = {"id": fields["upload_type"]}
    people = []
    for creator in fields.get("creators") or []:
        family, _, given = str(creator.get("name", "")).partition(",")
        people.append(
            {"person_or_org": {"type": "personal", "family_name": family.strip(), "given_name": given.strip()}}
        )
    if people:
        metadata["creators"] = people
    return {"access": {"record": "public", "files": "public"}, "files": {"enabled": True}, "metadata": metadata}


# The push's metadata flags in each profile's dialect (by the target's profile name).
DIALECTS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "zenodo": zenodo_document,
    "inveniordm": rdm_document,
    "nrp-particles": rdm_document,
}


def dialect(profile: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    try:
        return DIALECTS[profile]
    except KeyError:
        raise InputError(f"ferry push has no metadata dialect for profile {profile!r}") from None


def metadata_changes(current: Mapping[str, Any], fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``current`` document's metadata with ``fields`` over it, and the keys that changed."""
    before = current.get("metadata", {})
    merged = {**before, **fields}
    merged.setdefault("publication_date", date.today().isoformat())
    if merged == current.get("metadata"):
        return merged, []
    return merged, sorted(k for k in merged if merged[k] != before.get(k))
