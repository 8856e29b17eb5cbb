"""CERN Open Data record JSON -> ``Record``: file lists, checksums, file indexes, cache entries.

The one parser behind every way in (the record API, a records file, a master cache); the
sources that use it are in ``download.sources.cernopendata``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from download.sources.cernopendata_index import (
    INDEX_TYPES,
    MAX_INDEX_BYTES,
    ReadIndex,
    expand_indexes,
    is_index,
    parse_index_json,
    parse_index_txt,
    stem,
    verify_bytes,
)
from ferry.core.checksums import Checksum
from ferry.core.errors import ChecksumFormatError, InputError, NoFilesError, UnsafePathError
from ferry.core.model import FileEntry, Record, assign_keys

# Index handling lives in cernopendata_index; its names are still imported from here.
__all__ = [
    "INDEX_TYPES",
    "MAX_INDEX_BYTES",
    "ON_DEMAND",
    "ReadIndex",
    "build_record",
    "cache_file_entries",
    "check_cache_entry",
    "expand_indexes",
    "is_index",
    "parse_index_json",
    "parse_index_txt",
    "record_from_api",
    "record_from_fixture",
    "verify_bytes",
]

log = logging.getLogger(__name__)

ON_DEMAND = "on demand"


# --- parsing ------------------------------------------------------------------------------


def _file_list(value: Any, recid: str, field: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{field} is not a list", recid=recid, field=field)
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise InputError(f"{field}[{i}] is not an object: {item!r}", recid=recid, field=f"{field}[{i}]")
    return value


def build_record(
    recid: str, metadata: Mapping[str, Any], entries: Iterable[Mapping[str, Any]], *, allow_empty: bool = False
) -> Record:
    """A ``Record`` from data file entries (``uri``, ``size``, ``checksum`` or a list in
    ``checksums``[, ``availability``, ``description``]): the one place where file entries
    become ``FileEntry``s, whatever they came from (API, fixture file, master cache).

    Raises ``NoFilesError`` for an empty list (unless ``allow_empty``: the master cache keeps
    parent records), ``InputError`` subclasses for a bad entry, each naming the record and file.
    """
    raw = list(entries)
    if not raw and not allow_empty:
        raise NoFilesError("the record lists no files (a parent record with only relations?)", recid=recid)
    uris: list[str] = []
    for i, entry in enumerate(raw):
        uri = entry.get("uri")
        if not isinstance(uri, str) or not uri.strip():
            raise InputError(f"file entry {i} has no uri", recid=recid, field=f"files[{i}].uri")
        uris.append(uri.strip())
    try:
        keys = assign_keys(uris)
    except UnsafePathError as exc:
        raise UnsafePathError(
            f"refused: {exc.message}; nothing of this record is downloaded", recid=recid, file=exc.file
        ) from exc
    files: list[FileEntry] = []
    notes: list[str] = []
    for entry, uri, key in zip(raw, uris, keys, strict=True):
        size = entry.get("size")
        if isinstance(size, str) and size.isdigit():
            size = int(size)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise InputError(f"size {size!r} is not a byte count", recid=recid, file=uri, field="size")
        texts = entry.get("checksums") or ([entry["checksum"]] if entry.get("checksum") else [])
        try:
            checksums = tuple(Checksum.parse(str(text)) for text in texts)
        except ChecksumFormatError as exc:
            raise ChecksumFormatError(exc.message, recid=recid, file=uri, field="checksum") from exc
        if any(str(text).split(":", 1)[0].strip().lower() == "alder32" for text in texts):
            notes.append(f"{key}: checksum written as 'alder32', read as adler32")
        availability = str(entry.get("availability") or "online")
        files.append(
            FileEntry(
                key=key,
                uri=uri,
                size=size,
                checksums=checksums,
                availability=availability,
                description=entry.get("description") if isinstance(entry.get("description"), str) else None,
            )
        )
    return Record(recid=recid, metadata=metadata, files=tuple(files), notes=tuple(notes))


def cache_file_entries(recid: str, files: Any) -> list[dict[str, Any]]:
    """A master-cache entry's ``files`` (ours or the seed's: ``remote``, ``size``,
    ``checksum``/``checksums``, ...) as file entries for ``build_record``. The local key is
    always derived from the URI by our rules, never taken from a cache's ``path``."""
    out = []
    for i, f in enumerate(_file_list(files, recid, "files")):
        remote = f.get("remote")
        if not isinstance(remote, str) or not remote.strip():
            raise InputError(f"files[{i}] has no remote URI", recid=recid, field=f"files[{i}].remote")
        out.append(
            {
                "uri": remote,
                "size": f.get("size"),
                "checksum": f.get("checksum"),
                "checksums": f.get("checksums"),
                "availability": f.get("availability"),
            }
        )
    return out


# A seed cache entry may lack "record" (no metadata yet); it always has one of these.
CACHE_ENTRY_KEYS = frozenset({"record", "files", "error", "done", "checked"})


def check_cache_entry(path: Path, key: str, entry: Any) -> None:
    """Refuse a JSON object whose values are not master-cache entries (``{"a": 1}``,
    ``{"hits": {"hits": "x"}}``): read as a cache, such a file gave one failed record per key
    and an exit status of 0 or 1 instead of an input error naming the file."""
    if not isinstance(entry, Mapping):
        raise InputError(
            f'{path}: key {key!r} is not a master-cache entry (an object with "record"), '
            f"but {type(entry).__name__}; a records file is a JSON array of records",
        )
    record = entry.get("record")
    if not CACHE_ENTRY_KEYS & set(entry):
        raise InputError(
            f"{path}: key {key!r} is not a master-cache entry: it has none of "
            f"{', '.join(sorted(CACHE_ENTRY_KEYS))} "
            f"(keys: {', '.join(sorted(map(str, entry))[:5]) or 'none'}); a records file is a JSON array of records",
        )
    if record is not None and not isinstance(record, Mapping):
        raise InputError(
            f'{path}: key {key!r}: "record" must be an object, not {type(record).__name__}',
        )
    files = entry.get("files")
    if files is not None and not (isinstance(files, list) and all(isinstance(f, Mapping) for f in files)):
        shown = type(files).__name__ if not isinstance(files, list) else "a list holding a non-object"
        raise InputError(f'{path}: key {key!r}: "files" must be a list of objects, not {shown}')


async def record_from_fixture(raw: Mapping[str, Any], read_index: ReadIndex | None) -> Record:
    """A ``Record`` from one record of the portal's fixture format (index files expanded)."""
    recid = str(raw.get("recid") or "").strip()
    if not recid:
        raise InputError("record has no recid", field="recid")
    files = _file_list(raw.get("files"), recid, "files")
    notes: list[str] = []
    entries = await expand_indexes(recid, files, read_index, notes)
    # A record without files (author list, documentation) is migrated as metadata only:
    # the pipeline decides what a target does with it, not the resolver.
    return _noted(build_record(recid, raw, entries, allow_empty=True), notes)


def _noted(record: Record, notes: list[str]) -> Record:
    return dataclasses.replace(record, notes=(*notes, *record.notes)) if notes else record


async def record_from_api(body: Mapping[str, Any], recid: str, read_index: ReadIndex | None) -> Record:
    """A ``Record`` from the record API's answer: ``metadata.files[]`` + ``_file_indices``."""
    metadata = body.get("metadata")
    if not isinstance(metadata, Mapping):
        raise InputError("the portal's answer has no 'metadata' object", recid=recid, field="metadata")
    files = _file_list(metadata.get("files"), recid, "metadata.files")
    entries: list[Mapping[str, Any]] = []
    indices = _file_list(metadata.get("_file_indices"), recid, "metadata._file_indices")
    expanded = set()
    for i, index in enumerate(indices):
        entries.extend(_file_list(index.get("files"), recid, f"metadata._file_indices[{i}].files"))
        expanded.add(stem(str(index.get("key") or "")))
    # The portal removes index files from files[]; if one is still there and was not
    # expanded for us, expand it ourselves.
    pending = [f for f in files if is_index(f) and stem(str(f.get("uri") or f.get("key") or "")) not in expanded]
    notes: list[str] = []
    own = await expand_indexes(recid, [f for f in files if not is_index(f)] + pending, read_index, notes)
    record = build_record(recid, metadata, [*own, *entries], allow_empty=True)  # no files: metadata only
    return _noted(record, notes)
