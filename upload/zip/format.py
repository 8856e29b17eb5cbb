"""What a record's zip bundles look like: names, the bundle manifest, safe directory reads.

A zipped record folder holds ``<recid>_bundle.zip``, ``<recid>_bundle_002.zip``, ... and
``<recid>_bundle_manifest.json`` (which file is in which bundle, with size, crc32, md5 and
adler32). Each bundle also carries the part of that manifest that describes it, as its last
entry ``.ferry-bundle-manifest.json``, so a bundle alone still says what it holds. Every
entry name read from an archive or a manifest goes through ``safe_relpath``: nothing we read
can name a file outside the record folder.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ferry.core.errors import InputError, UnsafePathError, VerificationError
from ferry.core.model import safe_relpath

MANIFEST_FORMAT = "dataferry-bundle-manifest"
MANIFEST_VERSION = 1
EMBEDDED_NAME = ".ferry-bundle-manifest.json"  # last entry of every bundle
# Fixed timestamp of the embedded manifest entry: bundles stay byte-identical across runs.
EMBEDDED_DATE = (1980, 1, 1, 0, 0, 0)


class BundleCorrupt(VerificationError):
    """A bundle on disk is truncated, unreadable, or does not hold what it should."""


def bundle_name(recid: str, index: int) -> str:
    """``index`` counts from 1: ``<recid>_bundle.zip``, then ``<recid>_bundle_002.zip``..."""
    return f"{recid}_bundle.zip" if index == 1 else f"{recid}_bundle_{index:03d}.zip"


def manifest_name(recid: str) -> str:
    return f"{recid}_bundle_manifest.json"


def bundle_index(recid: str, name: str) -> int | None:
    """The index of a bundle file name of this record, or None for any other name."""
    if name == f"{recid}_bundle.zip":
        return 1
    m = re.fullmatch(re.escape(recid) + r"_bundle_(\d{3,})\.zip", name)
    return int(m.group(1)) if m and int(m.group(1)) >= 2 else None


def is_zip_output(recid: str, name: str) -> bool:
    return name == manifest_name(recid) or bundle_index(recid, name) is not None


@dataclass(frozen=True)
class MemberRecord:
    """One record file inside a bundle, as the bundle manifest lists it."""

    key: str
    size: int
    crc32: str  # 8 lowercase hex digits
    md5: str
    adler32: str

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "crc32": self.crc32, "md5": self.md5, "adler32": self.adler32}


@dataclass(frozen=True)
class EntryRecord:
    """One entry of a zip central directory, with what a sequential scan needs."""

    name: str
    header_offset: int
    compress_size: int
    file_size: int
    crc32: int
    compress_type: int


def crc_hex(value: int) -> str:
    return f"{value & 0xFFFFFFFF:08x}"


def embedded_manifest(recid: str, bundle: str, members: Iterable[MemberRecord]) -> bytes:
    """The bytes of the manifest stored inside ``bundle``: deterministic (sorted, no dates)."""
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "recid": recid,
        "bundle": bundle,
        "files": [m.to_json() for m in members],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def record_manifest(recid: str, bundles: Mapping[str, Mapping[str, Any]]) -> bytes:
    """The bytes of ``<recid>_bundle_manifest.json``; ``bundles`` maps name -> JSON (sorted)."""
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "recid": recid,
        "bundles": [{"name": name, **bundles[name]} for name in sorted(bundles, key=_bundle_sort_key)],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def _bundle_sort_key(name: str) -> tuple[int, str]:
    m = re.search(r"_bundle(?:_(\d+))?\.zip$", name)
    return (int(m.group(1)) if m and m.group(1) else 1, name)


def parse_members(raw: Any, *, where: str) -> list[MemberRecord]:
    """Member rows from a manifest's ``files`` list, each key checked for safety."""
    if not isinstance(raw, list):
        raise InputError(f"{where}: 'files' is not a list")
    out = []
    for i, row in enumerate(raw):
        try:
            out.append(
                MemberRecord(
                    key=safe_relpath(str(row["key"]), where=where),
                    size=int(row["size"]),
                    crc32=str(row["crc32"]).lower(),
                    md5=str(row["md5"]).lower(),
                    adler32=str(row["adler32"]).lower(),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, UnsafePathError):
                raise
            raise InputError(f"{where}: files[{i}] is malformed ({exc})") from exc
    return out


def parse_embedded(data: bytes, *, where: str) -> tuple[str, list[MemberRecord]]:
    """(bundle name, members) from an embedded manifest; InputError if it is not one."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{where}: not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or doc.get("version") != MANIFEST_VERSION:
        raise InputError(f"{where}: not a version {MANIFEST_VERSION} dataferry bundle manifest")
    return str(doc.get("bundle", "")), parse_members(doc.get("files"), where=where)


def parse_record_manifest(data: bytes, *, where: str) -> dict[str, list[MemberRecord]]:
    """bundle name -> members, from ``<recid>_bundle_manifest.json`` bytes."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{where}: not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("bundles"), list):
        raise InputError(f"{where}: not a dataferry bundle manifest")
    out: dict[str, list[MemberRecord]] = {}
    for b in doc["bundles"]:
        if not isinstance(b, dict) or not isinstance(b.get("name"), str):
            raise InputError(f"{where}: a bundle without a name")
        out[safe_relpath(b["name"], where=where)] = parse_members(b.get("files"), where=f"{where}, {b['name']}")
    return out


def read_directory(zf: zipfile.ZipFile, *, where: str) -> list[EntryRecord]:
    """The central directory of an open archive, every name checked; refuses unsafe names.

    Raises ``UnsafePathError`` naming the entry for ``../x``, ``/abs``, backslashes, NUL;
    ``BundleCorrupt`` for duplicate names or directory entries (we never write either).
    """
    out: list[EntryRecord] = []
    seen: set[str] = set()
    for info in zf.infolist():
        name = info.filename
        try:
            clean = safe_relpath(name, where=where)
        except UnsafePathError as exc:
            raise UnsafePathError(f"archive {where} has an unsafe entry {name!r}: {exc.message}", file=name) from None
        if clean != name or name.endswith("/"):
            # A name we would not have written ("a//b", "./a", "dir/"): unsafe to trust.
            raise UnsafePathError(f"archive {where} has a non-normalised entry {name!r}", file=name)
        if name in seen:
            raise BundleCorrupt(f"archive {where} lists entry {name!r} twice", file=name)
        seen.add(name)
        out.append(
            EntryRecord(
                name=name,
                header_offset=info.header_offset,
                compress_size=info.compress_size,
                file_size=info.file_size,
                crc32=info.CRC,
                compress_type=info.compress_type,
            )
        )
    return out
