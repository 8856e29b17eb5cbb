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
import posixpath
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferry.core.checksums import Checksum, MultiHasher
from ferry.core.errors import (
    ChecksumFormatError,
    FerryError,
    InputError,
    NoFilesError,
    RecordNotFound,
    SourceError,
    SourceUnavailable,
    UnsafePathError,
    VerificationError,
)
from ferry.core.model import FileEntry, Record, assign_keys, uri_path
from ferry.core.retry import RetryPolicy, request_policy, retry, server_delay

if TYPE_CHECKING:
    # Imported where a session is made (~0.1 s): `--records` with root:// never needs it.
    import aiohttp

    from download.sources import SourceDeps

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
        import aiohttp

        try:
            async with self.session.get(url, headers={"Accept": "application/json"}) as resp:
                if resp.status == 404 or resp.status == 410:
                    raise RecordNotFound(
                        f"the portal {self.portal} has no such record (HTTP {resp.status})", recid=recid
                    )
                if resp.status == 429 or resp.status >= 500:
                    exc = SourceUnavailable(
                        f"the portal {self.portal} answered HTTP {resp.status} for {url}", recid=recid
                    )
                    exc.retry_after = server_delay(resp.headers)
                    raise exc
                if resp.status != 200:
                    raise SourceError(f"the portal answered HTTP {resp.status} for {url}", recid=recid)
                raw = await resp.read()
        except FerryError:
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise SourceUnavailable(f"cannot reach the portal {self.portal}: {detail}", recid=recid) from exc
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise InputError(f"the portal's answer for {url} is not valid JSON: {exc}", recid=recid) from exc
        if not isinstance(body, dict):
            raise InputError(f"the portal's answer for {url} is not a JSON object", recid=recid)
        return body

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
