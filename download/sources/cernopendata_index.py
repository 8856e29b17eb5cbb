"""File indexes of CERN Open Data records: fetched, verified, parsed; a missing twin replaced.

A record's ``files[]`` may list index files (``type: index.json`` / ``index.txt``) instead
of data: the JSON one carries sizes and checksums, the text one URIs only. Both usually sit
side by side (``X_file_index.json`` / ``X_file_index.txt``). When the one we read is missing
on the server, its twin is read instead (named in a warning and in the record's notes);
only when both are missing is it an error, naming both. A host that does not answer is
named, with the flags that choose another way in.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ferry.core.checksums import Checksum, MultiHasher
from ferry.core.errors import (
    ChecksumFormatError,
    InputError,
    SourceFileMissing,
    SourceUnavailable,
    VerificationError,
)
from ferry.core.model import uri_path

log = logging.getLogger(__name__)

INDEX_TYPES = ("index.json", "index.txt")
MAX_INDEX_BYTES = 256 * 1024 * 1024  # the largest real indexes (CMS) are tens of MB
_SUFFIX = {"index.json": ".json", "index.txt": ".txt"}
_TWIN = {"index.json": "index.txt", "index.txt": "index.json"}
_URL_HOST = re.compile(r"[a-z][a-z0-9+.-]*://([^/\s:]+(?::\d+)?)", re.IGNORECASE)

ReadIndex = Callable[[str], Awaitable[bytes]]


def is_index(entry: Mapping[str, Any]) -> bool:
    return str(entry.get("type") or "") in INDEX_TYPES


def stem(uri: str) -> str:
    name = posixpath.basename(uri_path(uri))
    for suffix in (".json", ".txt"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def host_of(text: str, fallback: str = "") -> str:
    """The host of the first URL in ``text`` (a fetcher's message names the URL it tried)."""
    found = _URL_HOST.search(text)
    if found:
        return found.group(1)
    return urlsplit(fallback).netloc or fallback


def unreachable_index(exc: SourceUnavailable, uri: str, recid: str) -> SourceUnavailable:
    """The error for an index whose server did not answer: the host, and what to try."""
    host = host_of(exc.message, uri)
    error = SourceUnavailable(
        f"cannot reach host {host} for index file {uri}: {exc.message}. Check that {host} is reachable, "
        "or choose another way in: --protocol https --https-base URL (files over HTTPS), --protocol root "
        "(the URIs as the record gives them), or --portal URL for another portal",
        recid=recid,
        file=uri,
    )
    error.retry_after = exc.retry_after
    return error


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


@dataclass(frozen=True)
class _Index:
    """One index file as the record lists it (or, for a twin it does not list, as derived)."""

    uri: str
    kind: str  # index.json | index.txt
    entry: Mapping[str, Any]  # size/checksum when listed; {} for a derived twin

    @classmethod
    def listed(cls, entry: Mapping[str, Any]) -> _Index:
        return cls(str(entry.get("uri") or ""), str(entry.get("type")), entry)

    def twin(self) -> _Index:
        """The same index in the other format, next to this one (nothing known about it)."""
        kind = _TWIN[self.kind]
        base = self.uri.removesuffix(_SUFFIX[self.kind])
        return _Index(base + _SUFFIX[kind], kind, {})


async def _read_one(index: _Index, recid: str, read_index: ReadIndex) -> list[dict[str, Any]]:
    try:
        raw = await read_index(index.uri)
    except SourceUnavailable as exc:
        raise unreachable_index(exc, index.uri, recid) from exc
    expected = None
    if index.entry.get("checksum"):
        try:
            expected = Checksum.parse(str(index.entry["checksum"]))
        except ChecksumFormatError as exc:
            raise ChecksumFormatError(exc.message, recid=recid, file=index.uri, field="checksum") from exc
    size = index.entry.get("size")
    verify_bytes(raw, expected, size if isinstance(size, int) else None, recid=recid, uri=index.uri)
    parse = parse_index_json if index.kind == "index.json" else parse_index_txt
    return parse(raw, recid=recid, index_uri=index.uri)


async def _read_with_twin(
    first: _Index, twin: _Index, recid: str, read_index: ReadIndex, notes: list[str]
) -> list[dict[str, Any]]:
    try:
        return await _read_one(first, recid, read_index)
    except SourceFileMissing:
        pass
    try:
        entries = await _read_one(twin, recid, read_index)
    except SourceFileMissing:
        raise SourceFileMissing(
            f"both file indexes are missing on the server: {first.uri} and {twin.uri}", recid=recid, file=first.uri
        ) from None
    lost = " (it lists URIs only: sizes and checksums come from the server)" if twin.kind == "index.txt" else ""
    note = f"index file {first.uri} is missing on the server; read its twin {twin.uri} instead{lost}"
    log.warning("record %s: %s", recid, note)
    notes.append(note)
    return entries


async def expand_indexes(
    recid: str, files: list[Mapping[str, Any]], read_index: ReadIndex | None, notes: list[str] | None = None
) -> list[Mapping[str, Any]]:
    """Data file entries of a fixture-format ``files[]``: data files as they are, plus the
    entries of each index (fetched with ``read_index``). Of a ``.json``/``.txt`` pair the JSON
    one is read (it has sizes and checksums); the other is the fallback when it is missing,
    whether the record lists it or not. Warnings go to ``notes``."""
    data: list[Mapping[str, Any]] = [f for f in files if not is_index(f)]
    by_stem: dict[tuple[str, str], dict[str, _Index]] = {}
    for entry in files:
        if is_index(entry):
            index = _Index.listed(entry)
            folder = posixpath.dirname(uri_path(index.uri))
            by_stem.setdefault((folder, stem(index.uri)), {})[index.kind] = index
    for pair in by_stem.values():
        first = pair.get("index.json") or pair["index.txt"]
        if read_index is None:
            what = f"index file {first.uri} cannot be expanded here (no fetcher)"
            raise InputError(what, recid=recid, file=first.uri)
        twin = pair.get(_TWIN[first.kind]) or first.twin()
        data.extend(await _read_with_twin(first, twin, recid, read_index, notes if notes is not None else []))
    return data
