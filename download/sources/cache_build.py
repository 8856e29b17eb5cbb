"""Building a master cache incrementally from a resolver, portal search or record files."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from download.sources.cache_entries import Parse, inner_recid, record_from_entry, record_from_json
from download.sources.cache_file import MasterCache
from download.sources.cernopendata_index import ReadIndex, is_index
from download.sources.cernopendata_records import record_from_api, record_from_fixture
from download.sources.portal_search import DEFAULT_SPLITS, SEARCH_CAP, PortalSearch
from ferry.core.errors import FerryError, InputError
from ferry.core.model import Record
from ferry.core.retry import RetryPolicy

Resolve = Callable[[str], Awaitable[Record]]


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


def needs_index_expansion(record_json: Mapping[str, Any]) -> bool:
    """Whether a record JSON lists index files that nothing has expanded yet."""
    nested = record_json.get("metadata")
    metadata: Mapping[str, Any] = nested if isinstance(nested, Mapping) else record_json
    files = metadata.get("files")
    if not isinstance(files, list) or metadata.get("_file_indices"):
        return False
    return any(isinstance(f, Mapping) and is_index(f) for f in files)


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
        read_index: ReadIndex | None = None,
    ) -> None:
        self.cache = cache
        self.parse = parse
        # With a reader, records listing index files are expanded as download/upload/bulk
        # --records do (``expand_deferred``); without one they are errors naming the indexes.
        self.read_index = read_index
        self.deferred: dict[str, tuple[str, Mapping[str, Any]]] = {}  # recid -> (where, record JSON)
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
            return self._add_cache_file(p)
        if not isinstance(data, list):
            raise InputError(f"records file {p} must hold a JSON array of records")
        self._add_array(p, data)
        return len(data)

    def _add_cache_file(self, p: Path) -> int:
        other = MasterCache.load(p)
        for recid, entry in other.entries.items():
            try:
                self.add_record(record_from_entry(recid, entry, parse=self.parse))
            except FerryError as exc:
                self._error(recid, exc, str(p))
        return len(other.entries)

    def _add_array(self, p: Path, data: list[Any]) -> None:
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
            if inner is not None and self.read_index is not None and needs_index_expansion(item):
                self.deferred[inner] = (str(p), item)  # fetched later, concurrently
                continue
            self.add_json(item, where=str(p))

    async def expand_deferred(self) -> None:
        """Resolve the records whose file indexes must be fetched (``read_index``), ``jobs`` at a
        time; a record that fails is noted as an error, the others go on."""
        read_index = self.read_index
        queue = iter(list(self.deferred.items()))
        self.deferred = {}

        async def worker() -> None:
            for recid, (where, item) in queue:
                try:
                    if isinstance(item.get("metadata"), Mapping):
                        record = await record_from_api(item, recid, read_index)
                    else:
                        record = await record_from_fixture(item, read_index)
                except FerryError as exc:
                    self._error(recid, exc, where)
                else:
                    self.add_record(record)
                    self.report.warnings.extend(f"record {recid}: {note}" for note in record.notes)
                await self._maybe_checkpoint()

        await asyncio.gather(*(worker() for _ in range(self.jobs)))

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
