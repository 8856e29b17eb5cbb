"""Zenodo source: ``zenodo:RECORD_ID`` and ``zenodo:concept:CONCEPT_ID`` -> ``Record``.

``GET {url}/api/records/{id}`` gives a published record with its files (``key``, ``size``,
``checksum: "md5:<hex>"``, ``links.self`` to the content). A concept id (all versions of
one record) goes through ``/api/records/{concept}/versions/latest``, which InvenioRDM
(Zenodo's engine) redirects to the latest published version, with no search index in
the way (search lags behind a fresh publication).

The files are then fetched by the download engine over HTTPS like any other (md5
verified as the bytes stream in, ``Range`` resume). What cannot be downloaded is an
error naming the record: a deleted record (410), a concept with no published version,
a record whose files are restricted or under embargo (Zenodo lists no files to those
who may not read them), a record without files.

Config (optional; the public Zenodo is the default)::

    [source.zenodo]
    url = "https://zenodo.org"
    verify_tls = true
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ferry.core.checksums import Checksum
from ferry.core.errors import (
    ChecksumFormatError,
    ConfigError,
    FerryError,
    InputError,
    NoFilesError,
    RecordNotFound,
    SourceError,
    SourceUnavailable,
    UnsafePathError,
)
from ferry.core.model import FileEntry, Record, safe_relpath
from ferry.core.retry import RetryPolicy, request_policy, retry, server_delay

if TYPE_CHECKING:
    import aiohttp

    from download.sources import SourceDeps

DEFAULT_URL = "https://zenodo.org"
PREFIX = "zenodo:"
CONCEPT = "concept:"
SECTION = "source.zenodo"


@dataclass(frozen=True)
class ZenodoSourceConfig:
    """The ``[source.zenodo]`` section."""

    url: str = DEFAULT_URL
    verify_tls: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"{SECTION}.url must be an http(s) URL, not {self.url!r}", field=f"{SECTION}.url")
        if not isinstance(self.verify_tls, bool):
            raise ConfigError(f"{SECTION}.verify_tls must be true or false", field=f"{SECTION}.verify_tls")

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> ZenodoSourceConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"{SECTION}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**dict(section))


def parse_id(spec: str) -> tuple[bool, str]:
    """``(is_concept, digits)`` for ``123``, ``concept:123``, ``zenodo:123``, ``zenodo:concept:123``."""
    text = str(spec).strip()
    text = text.removeprefix(PREFIX)
    concept = text.startswith(CONCEPT)
    ident = text.removeprefix(CONCEPT).strip()
    if not ident.isdigit():
        raise InputError(
            f"not a Zenodo record id: {spec!r} (give zenodo:RECORD_ID or zenodo:concept:CONCEPT_ID, digits)",
            recid=str(spec),
        )
    return concept, ident


def _restriction(metadata: Mapping[str, Any]) -> str | None:
    access = str(metadata.get("access_right") or "open")
    if access == "open":
        return None
    if access == "embargoed" and metadata.get("embargo_date"):
        return f"under embargo until {metadata['embargo_date']}"
    return access


def record_from_zenodo(body: Mapping[str, Any], *, asked: str) -> Record:
    """A ``Record`` from a records-API answer; errors name the record (and file)."""
    rid = str(body.get("id") or body.get("recid") or "").strip()
    if not rid.isdigit():
        raise InputError(f"Zenodo's answer for {asked} has no record id", recid=asked)
    meta = body.get("metadata")
    metadata: Mapping[str, Any] = meta if isinstance(meta, Mapping) else {}
    raw_files = body.get("files") or []
    if not isinstance(raw_files, list):
        raise InputError("the record's 'files' is not a list", recid=rid, field="files")
    if not raw_files:
        why = _restriction(metadata)
        if why is not None:
            raise SourceError(
                f"the files of this Zenodo record are {why}: Zenodo lists them only to those allowed to read them",
                recid=rid,
            )
        raise NoFilesError("the Zenodo record has no files", recid=rid)
    entries = [_file_entry(f, rid, i) for i, f in enumerate(raw_files)]
    keys = [e.key for e in entries]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise UnsafePathError(f"the same file key appears twice: {', '.join(dupes)}", recid=rid)
    notes: tuple[str, ...] = ()
    if asked.strip().removeprefix(PREFIX) != rid:
        notes = (f"{asked} resolved to Zenodo record {rid}",)
    return Record(recid=rid, metadata=dict(body), files=tuple(entries), source="zenodo", notes=notes)


def _file_entry(raw: Any, rid: str, index: int) -> FileEntry:
    if not isinstance(raw, Mapping):
        raise InputError(f"files[{index}] is not an object", recid=rid, field=f"files[{index}]")
    key = raw.get("key") or raw.get("filename")
    if not isinstance(key, str):
        raise InputError(f"files[{index}] has no key", recid=rid, field=f"files[{index}].key")
    try:
        key = safe_relpath(key, where=f"Zenodo record {rid}")
    except UnsafePathError as exc:
        raise UnsafePathError(f"refused: {exc.message}", recid=rid, file=str(key)) from exc
    given = raw.get("links")
    links: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    url = links.get("self") or links.get("content") or links.get("download")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InputError("the file has no http(s) content link", recid=rid, file=key, field="links.self")
    size = raw.get("size", raw.get("filesize"))
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InputError(f"size {size!r} is not a byte count", recid=rid, file=key, field="size")
    checksums: tuple[Checksum, ...] = ()
    if raw.get("checksum"):
        try:
            # Records give "md5:<hex>"; deposit listings give bare hex, also md5.
            checksums = (Checksum.parse(str(raw["checksum"]), default_algorithm="md5"),)
        except ChecksumFormatError as exc:
            raise ChecksumFormatError(exc.message, recid=rid, file=key, field="checksum") from exc
    return FileEntry(key=key, uri=url, size=size, checksums=checksums)


class ZenodoSource:
    """Resolves Zenodo record and concept ids through the public records API."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        session: aiohttp.ClientSession | None = None,
        policy: RetryPolicy | None = None,
        verify_tls: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._verify_tls = verify_tls
        self.policy = policy or RetryPolicy()
        self.attempts: dict[str, int] = {}  # asked id -> tries of its last resolution (stats)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._verify_tls),
                timeout=aiohttp.ClientTimeout(total=300, connect=20),
            )
        return self._session

    async def resolve(self, recid: str) -> Record:
        concept, ident = parse_id(recid)
        asked = str(recid).strip()
        path = f"/api/records/{ident}/versions/latest" if concept else f"/api/records/{ident}"
        self.attempts[asked] = 0

        async def get() -> dict[str, Any]:
            self.attempts[asked] += 1
            return await self._get(self.url + path, asked, concept)

        body = await retry(get, policy=self.policy, what=f"GET {self.url}{path}")
        return record_from_zenodo(body, asked=asked)

    async def _get(self, url: str, asked: str, concept: bool) -> dict[str, Any]:
        import aiohttp

        what = f"Zenodo concept {asked.removeprefix(PREFIX).removeprefix(CONCEPT)}" if concept else "Zenodo"
        try:
            async with self.session.get(url, headers={"Accept": "application/json"}) as resp:
                raw = await resp.read()
                if resp.status == 410:
                    raise RecordNotFound(f"the record was deleted from Zenodo (HTTP 410 at {url})", recid=asked)
                if resp.status == 404:
                    detail = _message(raw)
                    if concept:
                        raise RecordNotFound(
                            f"{what} has no published version, or no such concept (HTTP 404: {detail})", recid=asked
                        )
                    raise RecordNotFound(
                        f"Zenodo has no published record with this id (HTTP 404: {detail})", recid=asked
                    )
                if resp.status == 429 or resp.status >= 500:
                    exc = SourceUnavailable(f"Zenodo answered HTTP {resp.status} for {url}", recid=asked)
                    exc.retry_after = server_delay(resp.headers)
                    raise exc
                if resp.status != 200:
                    raise SourceError(f"Zenodo answered HTTP {resp.status} for {url}: {_message(raw)}", recid=asked)
        except FerryError:
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceUnavailable(
                f"cannot reach Zenodo at {self.url}: {exc or type(exc).__name__}", recid=asked
            ) from exc
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise InputError(f"Zenodo's answer for {url} is not JSON: {exc}", recid=asked) from exc
        if not isinstance(body, dict):
            raise InputError(f"Zenodo's answer for {url} is not a JSON object", recid=asked)
        return body

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None


def _message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw[:200].decode(errors="replace")
    return str(body.get("message", "")) if isinstance(body, dict) else str(body)[:200]


def open_source(deps: SourceDeps) -> ZenodoSource:
    """The Zenodo source of a run, from ``[source.zenodo]`` (default: the public Zenodo)."""
    cfg = ZenodoSourceConfig.from_mapping(deps.config.source_section("zenodo"))
    return ZenodoSource(cfg.url, policy=request_policy(deps.limits), verify_tls=cfg.verify_tls)
