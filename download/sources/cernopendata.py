"""CERN Open Data Portal source: recids -> ``Record``s, from the record API or a JSON file.

Two ways in, one parser:

* ``PortalSource``: ``GET {portal}/api/records/{recid}`` -> ``metadata.files[]`` plus the
  portal's expanded indexes ``metadata._file_indices[].files[]`` (with ``availability``).
* ``RecordsFileSource``: a local JSON array of records in the portal's fixture format
  (``--records FILE``), or a master cache (a JSON object keyed by recid). There, files of
  ``type: index.json|index.txt`` are file indexes, not data: they are fetched (through
  the same fetchers as data, checksum verified) and expanded.

Checksums are parsed once (``ferry.core.checksums.Checksum``: unpadded adler32, ``sha1``, the
misspelt ``alder32`` with a warning); keys come from ``ferry.core.model.assign_keys``, which
refuses any URI that would escape ``DEST/<recid>`` - the whole record is refused then, so
nothing of it is written. Every error names the record and, where known, the file.

"On demand" (tape) files keep ``availability="on demand"`` on their ``FileEntry``: the
engine still tries them (EOS may have them staged), says so in the plan, and names the
tape in the error if the server cannot deliver them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from download.sources.cernopendata_records import (
    CACHE_ENTRY_KEYS,
    INDEX_TYPES,
    MAX_INDEX_BYTES,
    ON_DEMAND,
    ReadIndex,
    build_record,
    cache_file_entries,
    check_cache_entry,
    expand_indexes,
    is_index,
    parse_index_json,
    parse_index_txt,
    record_from_api,
    record_from_fixture,
    verify_bytes,
)
from download.sources.portal_api import get_json
from ferry.core.errors import InputError, RecordNotFound
from ferry.core.model import Record
from ferry.core.retry import RetryPolicy, request_policy, retry

if TYPE_CHECKING:
    # Imported where a session is made (~0.1 s): `--records` with root:// never needs it.
    import aiohttp

    from download.sources import SourceDeps

log = logging.getLogger(__name__)

# The parser moved to cernopendata_records; its names are still imported from here.
__all__ = [
    "CACHE_ENTRY_KEYS",
    "INDEX_TYPES",
    "MAX_INDEX_BYTES",
    "ON_DEMAND",
    "PortalSource",
    "ReadIndex",
    "RecordsFileSource",
    "build_record",
    "cache_file_entries",
    "check_cache_entry",
    "expand_indexes",
    "is_index",
    "make_resolver",
    "open_source",
    "parse_index_json",
    "parse_index_txt",
    "record_from_api",
    "record_from_fixture",
    "verify_bytes",
]

# --- sources ------------------------------------------------------------------------------


class PortalSource:
    """Resolves recids through the portal's record API (``GET {portal}/api/records/{recid}``)."""

    def __init__(
        self,
        portal: str,
        *,
        session: aiohttp.ClientSession | None = None,
        read_index: ReadIndex | None = None,
        policy: RetryPolicy | None = None,
        verify_tls: bool = True,
    ) -> None:
        self.portal = portal.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._verify_tls = verify_tls
        self.read_index = read_index
        self.policy = policy or RetryPolicy()
        self.attempts: dict[str, int] = {}  # recid -> tries of its last resolution (for stats)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._verify_tls),
                timeout=aiohttp.ClientTimeout(total=300, connect=20),
            )
        return self._session

    async def fetch_json(self, recid: str) -> dict[str, Any]:
        """The raw API answer for ``recid``, with retries on transient failures."""
        recid = str(recid).strip()
        url = f"{self.portal}/api/records/{recid}"
        self.attempts[recid] = 0

        async def get() -> dict[str, Any]:
            self.attempts[recid] += 1
            return await self._get(url, recid)

        return await retry(get, policy=self.policy, what=f"GET {url}")

    async def _get(self, url: str, recid: str) -> dict[str, Any]:
        return await get_json(self.session, url, portal=self.portal, what=url, recid=recid)

    async def resolve(self, recid: str) -> Record:
        recid = str(recid).strip()
        body = await self.fetch_json(recid)
        return await record_from_api(body, recid, self.read_index)

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None


class RecordsFileSource:
    """Resolves recids from local JSON files: arrays of fixture-format records, or a master
    cache (an object keyed by recid)."""

    def __init__(self, paths: Iterable[str | Path], *, read_index: ReadIndex | None = None, eager: bool = True) -> None:
        """``eager=False`` parses the files on first use only: a bulk run that finds every
        record in its master cache never needs them, and would keep a second copy in memory."""
        self.read_index = read_index
        self._records: dict[str, Mapping[str, Any]] = {}
        self._cache_entries: dict[str, Mapping[str, Any]] = {}
        self.paths = [Path(p) for p in paths]
        self._loaded = False
        if eager:
            self._load_all()

    def _load_all(self) -> None:
        if not self._loaded:
            for path in self.paths:
                self._load(path)
            self._loaded = True

    @property
    def records(self) -> dict[str, Mapping[str, Any]]:
        self._load_all()
        return self._records

    @property
    def cache_entries(self) -> dict[str, Mapping[str, Any]]:
        self._load_all()
        return self._cache_entries

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise InputError(f"records file {path} does not exist") from None
        except OSError as exc:
            raise InputError(f"cannot read records file {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise InputError(f"records file {path} is not valid JSON: {exc}") from exc
        if isinstance(data, dict):
            # A master cache (download/cache.py format): recid -> {"record": ..., "files": ...}.
            for recid, entry in data.items():
                check_cache_entry(path, str(recid), entry)
                self._cache_entries[str(recid).strip()] = entry
            return
        if not isinstance(data, list):
            raise InputError(f"records file {path} must hold a JSON array of records")
        for i, item in enumerate(data):
            if not isinstance(item, Mapping) or not str(item.get("recid") or "").strip():
                raise InputError(f"records file {path}: item {i} is not a record with a recid", field=f"[{i}]")
            self._records[str(item["recid"]).strip()] = item

    @property
    def recids(self) -> list[str]:
        return list(dict.fromkeys([*self.records, *self.cache_entries]))

    async def resolve(self, recid: str) -> Record:
        recid = str(recid).strip()
        raw = self.records.get(recid)
        if raw is not None:
            return await record_from_fixture(raw, self.read_index)
        entry = self.cache_entries.get(recid)
        if entry is not None:
            return await self._from_cache(recid, entry)
        names = ", ".join(str(p) for p in self.paths)
        raise RecordNotFound(f"not in the records file(s) {names}", recid=recid)

    async def _from_cache(self, recid: str, entry: Mapping[str, Any]) -> Record:
        meta = entry.get("record")
        if not isinstance(meta, Mapping) or not meta:
            raise InputError(str(entry.get("error") or "the cache has no record metadata for it"), recid=recid)
        files = entry.get("files")
        if files:
            return build_record(recid, meta, cache_file_entries(recid, files))
        return await record_from_fixture({**meta, "recid": meta.get("recid") or recid}, self.read_index)

    async def close(self) -> None:
        return None


def make_resolver(portal: str, session: aiohttp.ClientSession) -> Callable[[str], Awaitable[Record]]:
    """A bare ``resolve(recid)`` over the portal API on a caller's session (used by ``ferry cache``)."""
    source = PortalSource(portal, session=session)
    return source.resolve


def open_source(deps: SourceDeps) -> PortalSource | RecordsFileSource:
    """The CERN source of a run: the ``--records`` files when given, else the portal API."""
    if deps.records:
        # Lazy: a bulk run reads these files into its master cache and resolves from there.
        return RecordsFileSource(deps.records, read_index=deps.transport.read_index, eager=False)
    portal = (deps.portal or deps.config.source.portal).rstrip("/")
    return PortalSource(
        portal,
        read_index=deps.transport.read_index,
        policy=request_policy(deps.limits),
        verify_tls=deps.config.source.verify_tls,
    )
