"""The master cache: recid -> source record, resolved file list and status flags.

Format (the seed's, extended): one JSON object keyed by recid (a string), each entry::

    {"record": {...source record JSON...},
     "files": [{"remote": URI, "path": key in DEST/<recid>/, "size": n,
                "checksum": "adler32:...", "downloaded": false,
                "checksums": [...], "availability": "online"}],   # ours, optional
     "done": false, "checked": false,
     "category": "collision|simulated|unclassified|no-metadata",   # ours from here on
     "source": "cernopendata", "resolved_at": ISO-8601 UTC, "fingerprint": sha1 of record,
     "error": null | "why the last resolution failed", "error_at": ISO-8601 UTC}

Seed caches (without our keys) are read as they are; a missing optional key gets its
default. The file is written atomically (temporary file, fsync, rename), so a crash during
a build leaves the previous cache intact.

Building is incremental: ``CacheBuilder`` adds new recids, refreshes records whose content
changed (by fingerprint), keeps ``downloaded``/``done``/``checked`` flags of unchanged
files, and records per-recid errors in the entry instead of stopping. Records come from a
resolver (``async resolve(recid) -> Record``), from portal search (paging through the
portal's 10,000-hit cap by splitting the query), or from JSON arrays of records.

``order_recids`` gives the processing order with a reason per decision (for the stats).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from download.sources.cernopendata import build_record, cache_file_entries, check_cache_entry
from ferry.core.errors import FerryError, InputError, SourceError, SourceUnavailable
from ferry.core.model import Record
from ferry.core.retry import RetryPolicy, retry, server_delay

log = logging.getLogger(__name__)

Entry = dict[str, Any]
Resolve = Callable[[str], Awaitable[Record]]
Parse = Callable[[Mapping[str, Any]], Record]

CATEGORIES = ("collision", "simulated", "unclassified", "no-metadata")
_WHY = {
    "collision": "collision (type.secondary has Collision)",
    "simulated": "simulated (type.secondary has Simulated)",
    "unclassified": "unclassified (type.secondary has neither Collision nor Simulated)",
    "no-metadata": "no metadata (not resolved, or resolution failed)",
}
ORDERS = ("priority", "size-asc", "size-desc", "recid", "file")
SEARCH_CAP = 10_000
DEFAULT_SPLITS = ("date_created", "type.secondary", "collections")


def default_probes() -> dict[str, list[str]]:
    """Values tried for a split field even when no hit showed them (the capped pages may hide
    them all): every year from 1950 to next year for ``date_created``."""
    return {"date_created": [str(y) for y in range(1950, datetime.now(UTC).year + 2)]}


def _now() -> str:
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
    and parsed by ``download.sources.cernopendata.build_record``. Index files that were not
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
    for f in metadata.get("files") or []:
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
        "resolved_at": _now(),
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


# --- the cache file -----------------------------------------------------------------------


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
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = p.stat().st_mode & 0o777  # keep the mode of the file we replace
        except FileNotFoundError:
            mode = 0o644
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as out:
                for piece in _json_pieces(self.entries):
                    out.write(piece)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
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
        entry["error_at"] = _now()

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


def recid_key(recid: str) -> tuple[int, int, str]:
    """Numeric recids in numeric order, then any others by text."""
    return (0, int(recid), "") if recid.isdigit() else (1, 0, recid)


# --- building -----------------------------------------------------------------------------


@dataclass
class BuildReport:
    added: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already cached, not asked to refresh
    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    queries: int = 0  # portal search requests made

    def note(self, recid: str, outcome: str) -> None:
        getattr(self, outcome).append(recid)

    def summary(self) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "refreshed": len(self.refreshed),
            "unchanged": len(self.unchanged),
            "skipped": len(self.skipped),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "queries": self.queries,
        }


class CacheBuilder:
    """Fills a ``MasterCache`` from a resolver, portal search or record files, incrementally.

    The cache is saved every ``checkpoint_s`` seconds during long builds (in a thread), so an
    interrupted build keeps its progress; call ``save()`` at the end.
    """

    def __init__(
        self,
        cache: MasterCache,
        *,
        parse: Parse = record_from_json,
        jobs: int = 8,
        checkpoint_s: float = 30.0,
    ) -> None:
        self.cache = cache
        self.parse = parse
        self.jobs = max(1, jobs)
        self.checkpoint_s = checkpoint_s
        self.report = BuildReport()
        self._last_save = time.monotonic()

    def add_record(self, record: Record) -> str:
        outcome = self.cache.put(record)
        self.report.note(record.recid, outcome)
        return outcome

    def add_json(self, data: Mapping[str, Any], *, where: str = "") -> str | None:
        """Parse one record JSON and add it; a bad record is noted, not raised."""
        recid = str((data.get("metadata") or data).get("recid") or data.get("id") or "?")
        try:
            record = self.parse(data)
        except FerryError as exc:
            self._error(recid, exc, where)
            return None
        return self.add_record(record)

    def _error(self, recid: str, exc: BaseException, where: str = "") -> None:
        text = str(exc) if isinstance(exc, FerryError) else f"{type(exc).__name__}: {exc}"
        self.report.errors[recid] = f"{where}: {text}" if where else text
        if recid != "?":
            self.cache.set_error(recid, exc)

    def add_records_file(self, path: str | os.PathLike[str]) -> int:
        """Add every record of a JSON array file (the portal's fixture format) or a master cache."""
        p = Path(path)
        try:
            data = orjson.loads(p.read_bytes())
        except FileNotFoundError:
            raise InputError(f"records file {p} does not exist") from None
        except orjson.JSONDecodeError as exc:
            raise InputError(f"records file {p} is not valid JSON: {exc}") from exc
        if isinstance(data, dict):  # a master cache (ours or the seed's)
            other = MasterCache.load(p)
            for recid, entry in other.entries.items():
                try:
                    self.add_record(record_from_entry(recid, entry, parse=self.parse))
                except FerryError as exc:
                    self._error(recid, exc, str(p))
            return len(other.entries)
        if not isinstance(data, list):
            raise InputError(f"records file {p} must hold a JSON array of records")
        seen: dict[str, int] = {}
        for i, item in enumerate(data):
            if not isinstance(item, Mapping):
                self.report.errors[f"{p}[{i}]"] = "not a JSON object"
                continue
            inner = inner_recid(item)
            if inner is not None and inner in seen:
                # The later entry would silently win: which one is meant cannot be guessed.
                raise InputError(f"records file {p}: entries {seen[inner]} and {i} are both recid {inner}", recid=inner)
            if inner is not None:
                seen[inner] = i
            self.add_json(item, where=str(p))
        return len(data)

    async def add_recids(self, recids: Iterable[str], resolve: Resolve, *, refresh: bool = False) -> None:
        """Resolve recids not yet cached (all with ``refresh``; failed ones are always retried)."""
        todo: list[str] = []
        for recid in recids:
            entry = self.cache.get(recid)
            if entry is not None and not refresh and entry.get("record") and not entry.get("error"):
                self.report.skipped.append(recid)
            else:
                todo.append(recid)
        queue = iter(todo)

        async def worker() -> None:
            for recid in queue:  # the shared iterator hands each recid to one worker
                try:
                    record = await resolve(recid)
                except FerryError as exc:
                    self._error(recid, exc)
                else:
                    self.add_record(record)
                await self._maybe_checkpoint()

        await asyncio.gather(*(worker() for _ in range(min(self.jobs, len(todo)) or 1)))

    async def add_search(
        self,
        session: aiohttp.ClientSession,
        portal: str,
        query: str,
        *,
        page_size: int = 200,
        cap: int = SEARCH_CAP,
        splits: Sequence[str] = DEFAULT_SPLITS,
        policy: RetryPolicy | None = None,
    ) -> None:
        """Add every hit of a portal search, splitting the query past the hit cap."""
        search = PortalSearch(session, portal, page_size=page_size, cap=cap, splits=splits, policy=policy)
        async for hit in search.hits(query):
            self.add_json(hit, where=f"search {query!r}")
            await self._maybe_checkpoint()
        self.report.queries += search.requests
        self.report.warnings.extend(search.warnings)

    async def _maybe_checkpoint(self) -> None:
        if self.cache.path is not None and time.monotonic() - self._last_save >= self.checkpoint_s:
            self._last_save = time.monotonic()
            await asyncio.to_thread(self.cache.save)

    def save(self) -> Path:
        return self.cache.save()


# --- portal search ------------------------------------------------------------------------


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-_.+" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def field_values(metadata: Mapping[str, Any], path: str) -> list[str]:
    """Values of a dotted field in record JSON (lists flattened): ``type.secondary`` -> [...]."""
    node: Any = metadata
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part)
        else:
            return []
    if node is None:
        return []
    items = node if isinstance(node, list) else [node]
    return [str(x) for x in items if isinstance(x, str | int | float) and str(x) != ""]


class PortalSearch:
    """Pages through ``GET {portal}/api/records?q=...&page=&size=``.

    The portal serves at most ``cap`` hits of one query. When a query has more, it is split
    by the values of ``splits[0]`` (e.g. ``date_created``), then those sub-queries that still
    exceed the cap by ``splits[1]``, and so on. Split values come from ``probes`` (every
    plausible year for ``date_created``), from the response's ``aggregations`` when a bucket
    list is named like the field, and from every hit read (new values found in sub-queries
    are queried too). Hits are yielded once per recid. If the splits cannot reach every hit
    (records without the field, values never seen), a warning says how many are missing.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        portal: str,
        *,
        page_size: int = 200,
        cap: int = SEARCH_CAP,
        splits: Sequence[str] = DEFAULT_SPLITS,
        policy: RetryPolicy | None = None,
        probes: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.session = session
        self.probes = default_probes() if probes is None else probes
        self.url = portal.rstrip("/") + "/api/records"
        self.page_size = max(1, min(page_size, cap))
        self.cap = cap
        self.splits = tuple(splits)
        self.policy = policy or RetryPolicy(attempts=4)
        self.requests = 0
        self.warnings: list[str] = []
        self._seen: set[str] = set()

    async def _get(self, query: str, page: int, size: int) -> Mapping[str, Any]:
        params = {"q": query, "page": str(page), "size": str(size)}

        async def once() -> Mapping[str, Any]:
            self.requests += 1
            try:
                async with self.session.get(self.url, params=params, headers={"Accept": "application/json"}) as resp:
                    if resp.status == 429 or resp.status >= 500:
                        exc = SourceUnavailable(f"portal search answered HTTP {resp.status} for q={query!r}")
                        exc.retry_after = server_delay(resp.headers)
                        raise exc
                    if resp.status >= 400:
                        text = (await resp.text())[:200]
                        raise SourceError(f"portal search refused q={query!r}: HTTP {resp.status} {text}")
                    body = await resp.read()
            except aiohttp.ClientError as exc:
                raise SourceUnavailable(f"portal {self.url} unreachable: {exc}") from exc
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise SourceError(f"portal search for q={query!r} did not return JSON") from exc
            if not isinstance(data, Mapping) or not isinstance(data.get("hits"), Mapping):
                raise SourceError(f"portal search for q={query!r} returned no 'hits' object")
            return data

        return await retry(once, policy=self.policy, what=f"portal search q={query!r} page {page}")

    @staticmethod
    def _total(data: Mapping[str, Any]) -> int:
        total = data["hits"].get("total", 0)
        if isinstance(total, Mapping):  # Elasticsearch 7 style {"value": n, "relation": "eq"}
            total = total.get("value", 0)
        return int(total)

    @staticmethod
    def _hits(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [h for h in data["hits"].get("hits") or [] if isinstance(h, Mapping)]

    @staticmethod
    def _recid(hit: Mapping[str, Any]) -> str:
        meta = hit.get("metadata") if isinstance(hit.get("metadata"), Mapping) else hit
        assert isinstance(meta, Mapping)
        return str(meta.get("recid") or hit.get("id") or "")

    @staticmethod
    def _aggregated(data: Mapping[str, Any], split: str) -> list[str]:
        """Bucket keys of an aggregation named like the split field (Invenio's format)."""
        aggs = data.get("aggregations")
        if not isinstance(aggs, Mapping):
            return []
        names = (split, split.rsplit(".", 1)[-1]) + (("year",) if split == "date_created" else ())
        for name in names:
            agg = aggs.get(name)
            if isinstance(agg, Mapping) and isinstance(agg.get("buckets"), list):
                return [str(b["key"]) for b in agg["buckets"] if isinstance(b, Mapping) and b.get("key") is not None]
        return []

    async def _pages(self, query: str, first: Mapping[str, Any]) -> AsyncIterator[Mapping[str, Any]]:
        """Every hit of ``query`` the cap lets us read (first page already fetched)."""
        reachable = min(self._total(first), self.cap)
        page, data = 1, first
        while True:
            hits = self._hits(data)
            for hit in hits:
                yield hit
            if not hits or page * self.page_size >= reachable:
                return
            if len(hits) < self.page_size:
                # The portal caps the page size below ours: page numbers no longer line up.
                self.warnings.append(
                    f"search q={query!r}: page {page} held {len(hits)} hits, not {self.page_size}; "
                    "the portal caps the page size, use a smaller --page-size"
                )
                return
            page += 1
            data = await self._get(query, page, self.page_size)

    async def hits(self, query: str) -> AsyncIterator[Mapping[str, Any]]:
        found: set[str] = set()
        first = await self._get(query, 1, self.page_size)
        total = self._total(first)
        async for hit in self._query(query, 0, found, first):
            yield hit
        if len(found) < total:
            self.warnings.append(
                f"search q={query!r}: {total - len(found)} of {total} hits could not be reached "
                f"under the {self.cap}-hit cap (splits: {', '.join(self.splits) or 'none'})"
            )

    async def _query(
        self, query: str, depth: int, found: set[str], first: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Mapping[str, Any]]:
        if first is None:
            first = await self._get(query, 1, self.page_size)
        total = self._total(first)
        split = self.splits[depth] if total >= self.cap and depth < len(self.splits) else None
        values: dict[str, None] = {}
        if split is not None:
            values.update(dict.fromkeys(self._aggregated(first, split)))
            values.update(dict.fromkeys(self.probes.get(split, ())))
        async for hit in self._pages(query, first):
            if split is not None:
                meta = hit.get("metadata") if isinstance(hit.get("metadata"), Mapping) else hit
                assert isinstance(meta, Mapping)
                values.update(dict.fromkeys(field_values(meta, split)))
            recid = self._recid(hit)
            found.add(recid)
            if recid and recid not in self._seen:
                self._seen.add(recid)
                yield hit
        if split is None:
            return
        log.info("search q=%r has %d hits (cap %d): splitting by %s", query, total, self.cap, split)
        done: set[str] = set()
        while True:
            pending = [v for v in values if v not in done]
            if not pending:
                break
            for value in pending:
                done.add(value)
                sub = f"{query} AND {split}:{_quote(value)}" if query.strip() else f"{split}:{_quote(value)}"
                async for hit in self._query(sub, depth + 1, found):
                    meta = hit.get("metadata") if isinstance(hit.get("metadata"), Mapping) else hit
                    assert isinstance(meta, Mapping)
                    values.update(dict.fromkeys(field_values(meta, split)))
                    yield hit


# --- ordering -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderDecision:
    """Where one recid goes in the run, and why (the stats record ``reason``)."""

    recid: str
    position: int
    category: str
    size: int | None
    reason: str


def order_recids(
    recids: Sequence[str],
    cache: MasterCache | Mapping[str, Mapping[str, Any]],
    order: str = "priority",
) -> list[OrderDecision]:
    """Processing order of ``recids`` with a reason for each position.

    - ``priority`` (default, as the seed): collision, simulated, unclassified, no metadata
      (a recid missing from the cache or without its record JSON), ties by recid;
    - ``size-asc`` / ``size-desc``: total bytes of the record's files (unknown sizes last);
    - ``recid``: numeric recid order; ``file``: the order given (the recid list's order).
    """
    if order not in ORDERS:
        raise InputError(f"unknown order {order!r} (one of {', '.join(ORDERS)})", field="order")
    entries = cache.entries if isinstance(cache, MasterCache) else cache
    facts = []
    for index, recid in enumerate(recids):
        entry = entries.get(recid)
        meta = entry.get("record") if entry else None
        category = category_of(meta if isinstance(meta, Mapping) else None)
        facts.append((index, recid, category, entry_size(entry)))
    rank = {c: i for i, c in enumerate(CATEGORIES)}
    unknown = 1 << 62

    if order == "priority":
        facts.sort(key=lambda f: (rank[f[2]], recid_key(f[1])))
    elif order == "size-asc":
        facts.sort(key=lambda f: (f[3] is None, f[3] if f[3] is not None else unknown, recid_key(f[1])))
    elif order == "size-desc":
        facts.sort(key=lambda f: (f[3] is None, -(f[3] or 0), recid_key(f[1])))
    elif order == "recid":
        facts.sort(key=lambda f: recid_key(f[1]))
    out = []
    for position, (index, recid, category, size) in enumerate(facts):
        if order == "priority":
            reason = f"priority {rank[category] + 1}/{len(CATEGORIES)}: {_WHY[category]}; ties by recid"
        elif order in ("size-asc", "size-desc"):
            shown = f"{size} bytes" if size is not None else "size unknown (last)"
            reason = f"{order}: {shown}"
        elif order == "recid":
            reason = "recid order"
        else:
            reason = f"file order: entry {index + 1} of the list"
        out.append(OrderDecision(recid=recid, position=position, category=category, size=size, reason=reason))
    return out
