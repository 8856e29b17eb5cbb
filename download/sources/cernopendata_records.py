"""CERN Open Data record JSON -> ``Record``: file lists, checksums, file indexes, cache entries.

The one parser behind every way in (the record API, a records file, a master cache); the
sources that use it are in ``download.sources.cernopendata``.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferry.core.checksums import Checksum, MultiHasher
from ferry.core.errors import (
    ChecksumFormatError,
    InputError,
    NoFilesError,
    UnsafePathError,
    VerificationError,
)
from ferry.core.model import FileEntry, Record, assign_keys, uri_path

if TYPE_CHECKING:
    # Imported where a session is made (~0.1 s): `--records` with root:// never needs it.

    pass

log = logging.getLogger(__name__)

INDEX_TYPES = ("index.json", "index.txt")
MAX_INDEX_BYTES = 256 * 1024 * 1024  # the largest real indexes (CMS) are tens of MB
ON_DEMAND = "on demand"

ReadIndex = Callable[[str], Awaitable[bytes]]


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


def is_index(entry: Mapping[str, Any]) -> bool:
    return str(entry.get("type") or "") in INDEX_TYPES


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


def parse_index_json(data: bytes, *, recid: str, index_uri: str) -> list[dict[str, Any]]:
    """Entries of an index JSON file: an array of ``{checksum, filename, size, uri}``."""
    try:
        items = json.loads(data)
    except ValueError as exc:
        raise InputError(f"index file is not valid JSON: {exc}", recid=recid, file=index_uri) from exc
    if not isinstance(items, list):
        raise InputError("index file is not a JSON array", recid=recid, file=index_uri)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InputError(f"index entry {i} is not an object", recid=recid, file=index_uri)
        out.append(item)
    return out


def parse_index_txt(data: bytes, *, recid: str, index_uri: str) -> list[dict[str, Any]]:
    """Entries of an index text file: one URI a line, no sizes or checksums."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("index file is not UTF-8 text", recid=recid, file=index_uri) from exc
    return [{"uri": line.strip()} for line in text.splitlines() if line.strip()]


def _stem(uri: str) -> str:
    name = posixpath.basename(uri_path(uri))
    for suffix in (".json", ".txt"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def verify_bytes(data: bytes, expected: Checksum | None, size: int | None, *, recid: str, uri: str) -> None:
    """Check a small in-memory file (an index) against its declared size and checksum."""
    if size is not None and len(data) != size:
        raise VerificationError(
            f"index file is {len(data)} bytes, the record says {size}",
            expected=str(size),
            actual=str(len(data)),
            recid=recid,
            file=uri,
        )
    if expected is not None:
        hasher = MultiHasher((expected.algorithm,))
        hasher.update(data)
        actual = hasher.hexdigests()[expected.algorithm]
        if actual != expected.value:
            raise VerificationError(
                f"index file checksum mismatch: expected {expected}, got {expected.algorithm}:{actual}",
                expected=str(expected),
                actual=f"{expected.algorithm}:{actual}",
                recid=recid,
                file=uri,
            )


async def expand_indexes(
    recid: str, files: list[Mapping[str, Any]], read_index: ReadIndex | None
) -> list[Mapping[str, Any]]:
    """Data file entries of a fixture-format ``files[]``: data files as they are, plus the
    entries of each index file (fetched with ``read_index``). A ``.txt`` index is read only
    when no ``.json`` twin carries the same list with sizes and checksums."""
    data = [f for f in files if not is_index(f)]
    indexes = [f for f in files if is_index(f)]
    json_stems = {_stem(str(f.get("uri", ""))) for f in indexes if f.get("type") == "index.json"}
    for index in indexes:
        uri = str(index.get("uri") or "")
        kind = index.get("type")
        if kind == "index.txt" and _stem(uri) in json_stems:
            continue
        if read_index is None:
            raise InputError(f"index file {uri} cannot be expanded here (no fetcher)", recid=recid, file=uri)
        raw = await read_index(uri)
        expected = None
        if index.get("checksum"):
            try:
                expected = Checksum.parse(str(index["checksum"]))
            except ChecksumFormatError as exc:
                raise ChecksumFormatError(exc.message, recid=recid, file=uri, field="checksum") from exc
        size = index.get("size")
        verify_bytes(raw, expected, size if isinstance(size, int) else None, recid=recid, uri=uri)
        parse = parse_index_json if kind == "index.json" else parse_index_txt
        data.extend(parse(raw, recid=recid, index_uri=uri))
    return data


async def record_from_fixture(raw: Mapping[str, Any], read_index: ReadIndex | None) -> Record:
    """A ``Record`` from one record of the portal's fixture format (index files expanded)."""
    recid = str(raw.get("recid") or "").strip()
    if not recid:
        raise InputError("record has no recid", field="recid")
    files = _file_list(raw.get("files"), recid, "files")
    entries = await expand_indexes(recid, files, read_index)
    # A record without files (author list, documentation) is migrated as metadata only:
    # the pipeline decides what a target does with it, not the resolver.
    return build_record(recid, raw, entries, allow_empty=True)


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
        expanded.add(_stem(str(index.get("key") or "")))
    # The portal removes index files from files[]; if one is still there and was not
    # expanded for us, expand it ourselves.
    pending = [f for f in files if is_index(f) and _stem(str(f.get("uri") or f.get("key") or "")) not in expanded]
    entries = [*await expand_indexes(recid, [f for f in files if not is_index(f)] + pending, read_index), *entries]
    return build_record(recid, metadata, entries, allow_empty=True)  # no files: a metadata-only record
