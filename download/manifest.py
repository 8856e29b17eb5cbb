"""The per-record manifest: what was downloaded and verified, with every checksum.

Lives at ``DEST/<recid>/.ferry/manifest.json``. Written atomically (temp file + rename)
after each verified file, so a crash leaves either the old or the new manifest. An entry
whose size and mtime still match the file on disk is trusted without re-hashing: resumes
of terabytes must not re-read them. Uploads take md5 from here instead of re-reading.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ferry.core.atomic import atomic_write_bytes
from ferry.core.errors import InputError
from ferry.core.model import safe_relpath

META_DIR = ".ferry"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ManifestEntry:
    key: str  # path relative to the record folder
    size: int
    mtime_ns: int
    # algorithm -> lowercase hex: at least adler32 and md5 for downloaded files; our zip
    # bundles have none until an upload computed their md5 (pipeline.job records it).
    checksums: dict[str, str]
    source_uri: str | None = None
    source_checksum: str | None = None  # as the source declared it, normalised ("adler32:...")

    def matches_stat(self, st: os.stat_result) -> bool:
        return st.st_size == self.size and st.st_mtime_ns == self.mtime_ns

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "checksums": dict(sorted(self.checksums.items())),
            "source_uri": self.source_uri,
            "source_checksum": self.source_checksum,
        }


@dataclass
class Manifest:
    record_dir: Path
    recid: str
    entries: dict[str, ManifestEntry] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # other stages' notes (zip bundles...)

    @property
    def path(self) -> Path:
        return manifest_path(self.record_dir)

    def fresh_entry(self, key: str) -> ManifestEntry | None:
        """The entry for ``key`` if the file on disk still has its size and mtime."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        try:
            st = (self.record_dir / key).stat()
        except OSError:
            return None
        return entry if entry.matches_stat(st) else None

    def put(self, entry: ManifestEntry) -> None:
        self.entries[entry.key] = entry

    def drop(self, key: str) -> None:
        self.entries.pop(key, None)

    def save(self) -> None:
        """Atomic write; blocking (small file): call from a thread in hot paths."""
        data = {
            "version": MANIFEST_VERSION,
            "recid": self.recid,
            "files": {k: e.to_json() for k, e in sorted(self.entries.items())},
            "extra": self.extra,
        }
        atomic_write_bytes(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def manifest_path(record_dir: Path) -> Path:
    return record_dir / META_DIR / MANIFEST_NAME


def load_manifest(record_dir: Path, recid: str | None = None) -> Manifest:
    """Read the manifest of a record folder; an absent one is empty, a corrupt one an error."""
    path = manifest_path(record_dir)
    rid = recid or record_dir.name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Manifest(record_dir=record_dir, recid=rid)
    try:
        data = orjson.loads(raw)
        if data.get("version") != MANIFEST_VERSION:
            raise InputError(f"manifest {path} has unsupported version {data.get('version')!r}", recid=rid)
        entries = {}
        for key, value in data["files"].items():
            safe = safe_relpath(key, where=f"manifest {path}")
            entries[safe] = ManifestEntry(
                key=safe,
                size=int(value["size"]),
                mtime_ns=int(value["mtime_ns"]),
                checksums={str(a): str(v) for a, v in value["checksums"].items()},
                source_uri=value.get("source_uri"),
                source_checksum=value.get("source_checksum"),
            )
        return Manifest(
            record_dir=record_dir, recid=str(data.get("recid", rid)), entries=entries, extra=data.get("extra") or {}
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"manifest {path} is corrupt: {exc}", recid=rid) from exc
