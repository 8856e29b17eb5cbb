"""The shared record model: a record, its files, and where each file lives locally.

A ``FileEntry.key`` is the file's path relative to the record folder (``DEST/<recid>/``):
its basename, or, when basenames collide inside one record, the sub-path after the
common directory prefix of the colliding URIs. Keys are checked once, here, so that no
later stage can write outside the record folder.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ferry.core.checksums import Checksum
from ferry.core.errors import UnsafePathError


@dataclass(frozen=True)
class FileEntry:
    """One file of a record as the source describes it."""

    key: str  # relative path inside DEST/<recid>/, safe (see safe_relpath)
    uri: str  # where the source serves it (root://..., https://..., file://...)
    size: int | None
    checksums: tuple[Checksum, ...] = ()  # expected values from the source
    availability: str = "online"  # "online" or "on demand" (tape)
    description: str | None = None

    def expected(self, algorithm: str) -> Checksum | None:
        for c in self.checksums:
            if c.algorithm == algorithm:
                return c
        return None


@dataclass(frozen=True)
class Record:
    """A source record: its id, the source's own metadata (JSON) and its data files."""

    recid: str
    metadata: Mapping[str, Any]
    files: tuple[FileEntry, ...] = ()
    source: str = "cernopendata"
    notes: tuple[str, ...] = field(default=())  # warnings met while resolving

    @property
    def total_size(self) -> int:
        return sum(f.size or 0 for f in self.files)


def uri_path(uri: str) -> str:
    """The path part of a URI: ``root://host//eos/x/y`` -> ``/eos/x/y``."""
    parts = urlsplit(uri)
    path = parts.path if parts.scheme else uri
    # root://host//eos/... carries a double slash that means an absolute path.
    while path.startswith("//"):
        path = path[1:]
    return path


def safe_relpath(key: str, *, where: str = "") -> str:
    """Return ``key`` as a normalised relative POSIX path, or raise ``UnsafePathError``.

    Refuses empty keys, NUL bytes, absolute paths, backslashes, drive letters and any
    ``..`` component: such a key would let a record write outside its folder.
    """
    suffix = f" ({where})" if where else ""
    if not isinstance(key, str) or key == "":
        raise UnsafePathError(f"empty file path{suffix}")
    if "\x00" in key:
        raise UnsafePathError(f"file path {key!r} contains a NUL byte{suffix}")
    if "\\" in key:
        raise UnsafePathError(f"file path {key!r} contains a backslash{suffix}")
    if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
        raise UnsafePathError(f"file path {key!r} is absolute{suffix}")
    # str.split, not PurePosixPath: this runs for every file of every record (10,000s).
    parts = key.split("/")
    if ".." in parts:
        raise UnsafePathError(f"file path {key!r} climbs out of its folder with '..'{suffix}")
    clean = [p for p in parts if p not in ("", ".")]
    if not clean:
        raise UnsafePathError(f"file path {key!r} names no file{suffix}")
    return "/".join(clean)


def inside(root: Path, key: str, *, where: str = "") -> Path:
    """Join ``root`` and a key, and prove the result stays inside ``root`` (no symlink tricks)."""
    rel = safe_relpath(key, where=where)
    root_resolved = root.resolve()
    target = (root_resolved / rel).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise UnsafePathError(f"file path {key!r} resolves outside {root}{' (' + where + ')' if where else ''}")
    return target


def assign_keys(uris: Sequence[str], *, where: str = "") -> list[str]:
    """Local keys for a record's file URIs: basenames, or sub-paths when basenames repeat.

    When two URIs share a basename, every URI of the record keeps its path after the
    common directory prefix of all the record's URIs, so keys stay unique and stable.
    """
    paths = [uri_path(u) for u in uris]
    for u, p in zip(uris, paths, strict=True):
        if not p or p.endswith("/"):
            raise UnsafePathError(f"URI {u!r} names no file", file=u)
        if "\x00" in p:
            raise UnsafePathError(f"URI {u!r} contains a NUL byte", file=u)
        if ".." in p.split("/"):
            raise UnsafePathError(f"URI {u!r} climbs out of its folder with '..'", file=u)
    names = [posixpath.basename(p) for p in paths]
    if len(set(names)) == len(names):
        keys = names
    else:
        dirs = [posixpath.dirname(p) for p in paths]
        common = posixpath.commonpath(dirs) if all(d.startswith("/") for d in dirs) else ""
        keys = [posixpath.relpath(p, common) if common else p.lstrip("/") for p in paths]
    out = []
    for u, k in zip(uris, keys, strict=True):
        try:
            out.append(safe_relpath(k))
        except UnsafePathError:  # again, with the message naming the URI (built only here)
            safe_relpath(k, where=f"{where}, URI {u}" if where else f"URI {u}")
    if len(set(out)) != len(out):
        dupes = sorted({k for k in out if out.count(k) > 1})
        raise UnsafePathError(
            f"the same file path appears twice: {', '.join(dupes)}{' (' + where + ')' if where else ''}"
        )
    return out


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
