"""The master-cache file: ``MasterCache`` (load, atomic save, put), its stats, and the
compact per-run copy ``PackedEntries``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from download.sources.cache_entries import (
    CATEGORIES,
    Entry,
    Parse,
    category_of,
    entry_from_record,
    entry_size,
    fingerprint,
    inner_recid,
    now_utc,
    recid_key,
    record_from_entry,
    record_from_json,
)
from download.sources.cernopendata_records import check_cache_entry
from ferry.core.atomic import AtomicWriter
from ferry.core.errors import FerryError, InputError
from ferry.core.model import Record


@dataclass
class CacheStats:
    records: int = 0
    with_errors: int = 0
    without_files: int = 0
    files: int = 0
    bytes: int = 0
    downloaded_files: int = 0
    done: int = 0
    categories: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class MasterCache:
    """The cache in memory: ``entries[recid] -> entry``. ``load``/``save`` handle the file."""

    def __init__(self, entries: dict[str, Entry] | None = None, path: Path | None = None) -> None:
        self.entries: dict[str, Entry] = entries or {}
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, missing_ok: bool = True) -> MasterCache:
        """Read a cache file (ours or the seed's); a missing file gives an empty cache."""
        p = Path(path)
        try:
            data = orjson.loads(p.read_bytes())
        except FileNotFoundError:
            if missing_ok:
                return cls({}, p)
            raise InputError(f"master cache {p} does not exist") from None
        except orjson.JSONDecodeError as exc:
            raise InputError(f"master cache {p} is not valid JSON: {exc}") from exc
        except OSError as exc:
            raise InputError(f"cannot read master cache {p}: {exc.strerror}") from exc
        if not isinstance(data, dict):
            raise InputError(f"master cache {p} must be a JSON object keyed by recid, not {type(data).__name__}")
        entries: dict[str, Entry] = {}
        for key, entry in data.items():
            recid = str(key).strip()
            check_cache_entry(p, str(key), entry)
            if recid in entries:
                raise InputError(f"master cache {p}: key {key!r} repeats recid {recid} (after trimming)", recid=recid)
            inner = inner_recid(entry.get("record"))
            if inner is not None and inner != recid:
                # A key that disagrees with its record made a second target record for the
                # inner recid: which one is meant cannot be guessed.
                raise InputError(
                    f"master cache {p}: key {key!r} holds the record of recid {inner!r}; "
                    "each key must be the recid inside its entry",
                    recid=recid,
                )
            entries[recid] = _normalise(entry)
        return cls(entries, p)

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write atomically: a crash leaves either the old or the new file, never half of one."""
        p = Path(path) if path is not None else self.path
        if p is None:
            raise InputError("no path to save the master cache to")
        try:
            mode = p.stat().st_mode & 0o777  # keep the mode of the file we replace
        except FileNotFoundError:
            mode = 0o644
        with AtomicWriter(p) as out:
            os.chmod(out.tmp, mode)
            for piece in _json_pieces(self.entries):
                out.write(piece)
        self.path = p
        return p

    def __contains__(self, recid: object) -> bool:
        return str(recid) in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, recid: str) -> Entry | None:
        return self.entries.get(str(recid))

    def record(self, recid: str, *, parse: Parse = record_from_json) -> Record:
        """The ``Record`` for ``recid`` (``InputError`` when missing or unusable)."""
        entry = self.entries.get(str(recid))
        if entry is None:
            raise InputError("not in the master cache", recid=str(recid))
        return record_from_entry(str(recid), entry, parse=parse)

    def recids(self) -> list[str]:
        return sorted(self.entries, key=recid_key)

    def put(self, record: Record) -> str:
        """Add or refresh a record; returns ``added``, ``refreshed`` or ``unchanged``."""
        old = self.entries.get(record.recid)
        same = old is not None and not old.get("error") and old.get("fingerprint") == fingerprint(dict(record.metadata))
        if same and old is not None and (old.get("files") or not record.files):
            return "unchanged"
        self.entries[record.recid] = entry_from_record(record, old=old)
        return "added" if old is None else "refreshed"

    def set_error(self, recid: str, error: BaseException | str) -> None:
        """Remember why ``recid`` could not be resolved; a good older entry keeps its data."""
        text = str(error) if isinstance(error, FerryError | str) else f"{type(error).__name__}: {error}"
        entry = self.entries.setdefault(
            str(recid),
            {"record": None, "files": [], "done": False, "checked": False, "category": "no-metadata"},
        )
        entry["error"] = text
        entry["error_at"] = now_utc()

    def stats(self) -> CacheStats:
        s = CacheStats(categories={c: 0 for c in CATEGORIES})
        for entry in self.entries.values():
            s.records += 1
            files = entry.get("files") or []
            s.with_errors += bool(entry.get("error"))
            s.without_files += not files
            s.files += len(files)
            s.bytes += entry_size(entry) or 0
            s.downloaded_files += sum(1 for f in files if isinstance(f, Mapping) and f.get("downloaded"))
            s.done += bool(entry.get("done"))
            cat = entry.get("category") or category_of(entry.get("record"))
            s.categories[cat] = s.categories.get(cat, 0) + 1
        return s


def _json_pieces(entries: Mapping[str, Entry]) -> Iterator[bytes]:
    """The cache as indented JSON sorted by recid, one entry at a time: the same bytes as
    ``orjson.dumps(sorted entries, option=OPT_INDENT_2)`` without ever holding the whole
    document (10,000 files: ~4 MB at the memory peak of a bulk run's start)."""
    if not entries:
        yield b"{}"
        return
    for i, recid in enumerate(sorted(entries, key=recid_key)):
        body = orjson.dumps(entries[recid], option=orjson.OPT_INDENT_2)
        # JSON strings never hold a raw newline, so this only indents the lines one level.
        yield (b"{\n  " if i == 0 else b",\n  ") + orjson.dumps(recid) + b": " + body.replace(b"\n", b"\n  ")
    yield b"\n}"


class PackedEntries:
    """The entries a bulk run works on, each kept as its compact JSON until its turn.

    A run needs a record's entry once, when the record starts. Kept as Python dicts (the
    record JSON plus one dict per file) the whole cache cost ~0.7 KB of memory per file
    for the whole run, so a run's memory grew with the number of files it was given;
    as orjson bytes an entry takes about a third of that and is parsed on use.
    """

    def __init__(self, cache: MasterCache, recids: Iterable[str]) -> None:
        self._raw: dict[str, bytes] = {}
        for recid in recids:
            entry = cache.get(recid)
            if entry is not None:
                self._raw[recid] = orjson.dumps(entry)

    def __len__(self) -> int:
        return len(self._raw)

    def record(self, recid: str) -> Record:
        """As ``MasterCache.record``: ``InputError`` when missing or unusable."""
        raw = self._raw.get(recid)
        if raw is None:
            raise InputError("not in the master cache", recid=recid)
        return record_from_entry(recid, orjson.loads(raw))


def _normalise(entry: dict[str, Any]) -> Entry:
    """Fill in the keys a seed cache may lack, without changing what it has."""
    entry.setdefault("record", None)
    entry.setdefault("files", [])
    entry.setdefault("done", False)
    entry.setdefault("checked", False)
    if not entry.get("category"):
        entry["category"] = category_of(entry["record"] if isinstance(entry["record"], Mapping) else None)
    if entry.get("fingerprint") is None and isinstance(entry["record"], Mapping):
        entry["fingerprint"] = fingerprint(entry["record"])
    return entry
