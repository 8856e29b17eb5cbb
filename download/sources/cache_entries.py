"""Master-cache entries: one recid's record JSON, resolved files and flags (the format is in
``download.sources.cache``), and the Record each one gives back."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from download.sources.cernopendata_records import build_record, cache_file_entries
from ferry.core.errors import InputError
from ferry.core.model import Record

Entry = dict[str, Any]
Parse = Callable[[Mapping[str, Any]], Record]

CATEGORIES = ("collision", "simulated", "unclassified", "no-metadata")
WHY = {
    "collision": "collision (type.secondary has Collision)",
    "simulated": "simulated (type.secondary has Simulated)",
    "unclassified": "unclassified (type.secondary has neither Collision nor Simulated)",
    "no-metadata": "no metadata (not resolved, or resolution failed)",
}


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def fingerprint(record_json: Any) -> str:
    """A stable digest of a record's JSON, to tell a changed record from an unchanged one."""
    return hashlib.sha1(orjson.dumps(record_json, option=orjson.OPT_SORT_KEYS)).hexdigest()


def category_of(metadata: Mapping[str, Any] | None) -> str:
    """Priority class from ``type.secondary`` (as the seed): collision, simulated, unclassified."""
    if not metadata:
        return "no-metadata"
    kind = metadata.get("type")
    secondary = kind.get("secondary") if isinstance(kind, Mapping) else None
    values = {str(v).strip().lower() for v in secondary} if isinstance(secondary, list) else set()
    if "collision" in values:
        return "collision"
    if "simulated" in values:
        return "simulated"
    return "unclassified"


# --- record JSON -> Record (fallback parser) -----------------------------------------------


def record_from_json(data: Mapping[str, Any]) -> Record:
    """A ``Record`` from portal record JSON: the fixture format or the API's ``metadata``.

    ``files[]`` and ``metadata._file_indices[].files[]`` (expanded index entries) are read,
    and parsed by ``download.sources.cernopendata_records.build_record``. Index files that were not
    expanded (``type: index.json|index.txt`` in the fixture format) cannot be listed
    without fetching them: that is an ``InputError`` naming them (the CERN source module
    expands them). A record without files is kept (parents with only relations).
    """
    metadata = data.get("metadata") if isinstance(data.get("metadata"), Mapping) else data
    assert isinstance(metadata, Mapping)
    recid = str(metadata.get("recid") or data.get("id") or "").strip()
    if not recid:
        raise InputError("record has no recid", field="recid")
    raw: list[Mapping[str, Any]] = []
    indexes = []
    files = metadata.get("files") or []
    if not isinstance(files, list):
        raise InputError(f"files must be a list, not {type(files).__name__}", recid=recid, field="files")
    for f in files:
        if not isinstance(f, Mapping):
            raise InputError(f"files entry {f!r} is not an object", recid=recid, field="files")
        if str(f.get("type", "")).startswith("index."):
            indexes.append(str(f.get("uri") or f.get("key")))
            continue
        raw.append(f)
    expanded = metadata.get("_file_indices") or []
    for index in expanded:
        raw.extend(x for x in (index.get("files") or []) if isinstance(x, Mapping))
    if indexes and not expanded:
        raise InputError(
            f"index file(s) not expanded: {', '.join(indexes)} (resolve this record through the portal)",
            recid=recid,
            field="files",
        )
    return build_record(recid, metadata, raw, allow_empty=True)


def inner_recid(record_json: Any) -> str | None:
    """The recid a stored record JSON carries (as ``record_from_json`` reads it), or None."""
    if not isinstance(record_json, Mapping):
        return None
    nested = record_json.get("metadata")
    metadata: Mapping[str, Any] = nested if isinstance(nested, Mapping) else record_json
    value = metadata.get("recid") or record_json.get("id")
    text = str(value).strip() if value is not None else ""
    return text or None


# --- entries ------------------------------------------------------------------------------


def entry_from_record(record: Record, *, old: Entry | None = None) -> Entry:
    """A cache entry for ``record``; flags of unchanged files are kept from ``old``."""
    kept: dict[str, Mapping[str, Any]] = {}
    if old:
        for f in old.get("files") or []:
            if isinstance(f, Mapping) and f.get("path"):
                kept[str(f["path"])] = f
    files = []
    for f in record.files:
        checksum = str(f.checksums[0]) if f.checksums else None
        prev = kept.get(f.key)
        same = prev is not None and prev.get("remote") == f.uri and prev.get("size") == f.size
        same = same and prev is not None and prev.get("checksum") == checksum
        item: dict[str, Any] = {
            "remote": f.uri,
            "path": f.key,
            "size": f.size,
            "checksum": checksum,
            "downloaded": bool(prev.get("downloaded")) if same and prev is not None else False,
        }
        if len(f.checksums) > 1:
            item["checksums"] = [str(c) for c in f.checksums]
        if f.availability != "online":
            item["availability"] = f.availability
        files.append(item)
    unchanged = old is not None and old.get("fingerprint") == fingerprint(dict(record.metadata))
    return {
        "record": dict(record.metadata),
        "files": files,
        "done": bool(old.get("done")) if unchanged and old else False,
        "checked": bool(old.get("checked")) if unchanged and old else False,
        "category": category_of(record.metadata),
        "source": record.source,
        "resolved_at": now_utc(),
        "fingerprint": fingerprint(dict(record.metadata)),
        "error": None,
        **({"notes": list(record.notes)} if record.notes else {}),
    }


def record_from_entry(recid: str, entry: Mapping[str, Any], *, parse: Parse = record_from_json) -> Record:
    """The ``Record`` a cache entry describes (ours or the seed's shape).

    ``files`` of the entry are used when present; otherwise they are derived from the
    stored record JSON. Raises ``InputError`` naming the recid/file/field on bad entries.
    """
    meta = entry.get("record")
    if not isinstance(meta, Mapping) or not meta:
        why = entry.get("error") or "the cache has no record metadata for it"
        raise InputError(str(why), recid=recid, field="record")
    source = str(entry.get("source") or "cernopendata")
    files_json = entry.get("files")
    if not files_json:
        record = parse(meta)
        return Record(recid=recid, metadata=record.metadata, files=record.files, source=source)
    record = build_record(recid, meta, cache_file_entries(recid, files_json))
    return dataclasses.replace(record, source=source)


def entry_size(entry: Mapping[str, Any] | None) -> int | None:
    """Total bytes of an entry's files (None when unknown)."""
    if not entry or not entry.get("files"):
        return None
    sizes = [f.get("size") for f in entry["files"] if isinstance(f, Mapping)]
    return sum(int(s) for s in sizes if isinstance(s, int | float))


def recid_key(recid: str) -> tuple[int, int, str]:
    """Numeric recids in numeric order, then any others by text."""
    return (0, int(recid), "") if recid.isdigit() else (1, 0, recid)
