"""A CERN Open Data portal stand-in (aiohttp) for the sandbox and tests.

Serves the record API the way ``opendata.cern.ch`` does (see docs/cernopendata.md):

- ``GET /api/records/{recid}``: ``{id, created, updated, links, metadata}``; in
  ``metadata.files[]`` each file gains ``key`` (basename), ``bucket`` and ``version_id``;
  index files (``type: index.json|index.txt``) leave ``files`` and the JSON index is
  expanded into ``metadata._file_indices[]``. Unknown recid: 404 ``{"status", "message"}``.
- ``GET /api/records?q=&page=&size=``: search with ``field:value`` terms (AND), bare words
  match the title; ``page * size`` beyond 10,000 is refused with 400 as on the portal.
- ``GET /record/{recid}``: a small HTML page (the official client checks it exists).
- ``GET /record/{recid}/file_index/{key}``: an index as JSON, or one URI per line for a
  ``.txt`` key or ``?format=txt``; ``?qos=online`` drops files only on tape.
- ``GET /eos/opendata/...``: the data files over HTTP with ``Range`` support, the stand-in
  for ``https://opendata.cern.ch/eos/opendata/...``.

URIs: by default ``files[].uri`` are the records as the sandbox generated them, i.e. the
local XRootD server's ``root://127.0.0.1:PORT//eos/opendata/...`` (what ferry and
``get-file-locations`` see). ``start_portal(..., public_uris=True)`` answers with the
portal's own ``root://eospublic.cern.ch//eos/opendata/...`` instead; nothing contacts that
host: cernopendata-client reaches the stand-in with ``--server http://127.0.0.1:PORT
--protocol http`` (it swaps ``root://eospublic.cern.ch/`` for ``--server``; ``//eos/...``
is served too), ferry with ``--https-base http://127.0.0.1:PORT --protocol https``.
cernopendata-client's XRootD downloader always rebuilds ``root://eospublic.cern.ch/`` URLs,
so its ``--protocol xrootd`` download would need that name to resolve to a local xrootd on
port 1094: not provided yet (tests/test_official_clients_cernopendata.py, strict xfail).

Knobs for tests: ``fail_next(n, status)`` answers the next n matching requests with an
error (``Retry-After`` optional), ``delay`` slows every answer, ``requests`` logs paths.

Why one module of about 400 lines: a test stand-in, one aiohttp app whose handlers share
the generated records; its length is its endpoints, each a few lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import re
import shlex
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import web

from ferry.core.model import uri_path

log = logging.getLogger(__name__)

MAX_RESULT_WINDOW = 10_000
PUBLIC_XROOTD = "root://eospublic.cern.ch/"  # + "/eos/opendata/...": the portal's own URIs
INDEX_TYPES = ("index.json", "index.txt")
CREATED = "2024-01-01T00:00:00.000000+00:00"
_NS = uuid.UUID("6f1c1a52-33c0-4c8e-9a2e-5b8a3d9f0c11")  # namespace for stable bucket ids


@dataclass
class FailRule:
    remaining: int
    status: int = 503
    prefix: str = "/"
    retry_after: float | None = None


@dataclass
class PortalState:
    records: dict[str, dict[str, Any]]
    data_root: Path
    fail_rules: list[FailRule] = field(default_factory=list)
    # True: answers carry the portal's own root://eospublic.cern.ch//eos/... URIs instead
    # of the local XRootD server's (see "Official clients" in the module doc).
    public_uris: bool = False
    delay: float = 0.0
    requests: list[str] = field(default_factory=list)


STATE_KEY = web.AppKey("state", PortalState)


class Portal:
    """A running portal stand-in; ``url`` is its base (``http://127.0.0.1:PORT``)."""

    def __init__(self, state: PortalState, runner: web.AppRunner, url: str) -> None:
        self.state = state
        self._runner = runner
        self.url = url

    @property
    def records(self) -> dict[str, dict[str, Any]]:
        """The records served (fixture format, by recid); tests may add or replace entries."""
        return self.state.records

    @property
    def requests(self) -> list[str]:
        """Path and query of every request received, in order."""
        return self.state.requests

    @property
    def delay(self) -> float:
        return self.state.delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        self.state.delay = seconds

    def fail_next(self, n: int, status: int = 503, *, prefix: str = "/", retry_after: float | None = None) -> None:
        """Answer the next ``n`` requests whose path starts with ``prefix`` with ``status``."""
        self.state.fail_rules.append(FailRule(n, status, prefix, retry_after))

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> Portal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_portal(
    records: Iterable[Mapping[str, Any]],
    *,
    data_root: Path | str,
    host: str = "127.0.0.1",
    port: int = 0,
    public_uris: bool = False,
) -> Portal:
    """Start the portal on ``host:port`` (0: a free port) in the running event loop."""
    by_id: dict[str, dict[str, Any]] = {}
    for rec in records:
        by_id[str(rec["recid"])] = dict(rec)
    state = PortalState(by_id, await asyncio.to_thread(Path(data_root).resolve), public_uris=public_uris)
    app = make_app(state)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    # runner.addresses holds the bound (host, port) pairs; port 0 became a real one.
    actual_port = int(runner.addresses[0][1]) if runner.addresses else port
    return Portal(state, runner, f"http://{host}:{actual_port}")


def make_app(state: PortalState) -> web.Application:
    app = web.Application(middlewares=[_knobs(state)])
    app[STATE_KEY] = state
    app.router.add_get("/api/records/{recid}", _get_record)
    app.router.add_get("/api/records", _search)
    app.router.add_get("/api/records/", _search)
    app.router.add_get("/record/{recid}", _record_page)
    app.router.add_get("/record/{recid}/file_index/{key}", _file_index)
    app.router.add_get("/eos/opendata/{path:.*}", _data_file)
    # cernopendata-client --protocol http swaps "root://eospublic.cern.ch/" for its --server,
    # which leaves the URI's double slash: http://HOST//eos/opendata/...
    app.router.add_get("//eos/opendata/{path:.*}", _data_file)
    return app


def _knobs(state: PortalState) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        state.requests.append(request.path_qs)
        if state.delay:
            await asyncio.sleep(state.delay)
        for rule in state.fail_rules:
            if rule.remaining > 0 and request.path.startswith(rule.prefix):
                rule.remaining -= 1
                headers = {"Retry-After": f"{rule.retry_after:g}"} if rule.retry_after is not None else None
                return _error(rule.status, "injected failure (sandbox fail_next)", headers=headers)
        return await handler(request)

    return middleware


def _error(status: int, message: str, *, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"status": status, "message": message}, status=status, headers=headers)


def _state(request: web.Request) -> PortalState:
    return request.app[STATE_KEY]


# --- record API -------------------------------------------------------------------------


def public_uri(uri: Any) -> Any:
    """``root://ANY//eos/opendata/X`` -> ``root://eospublic.cern.ch//eos/opendata/X`` (the portal's own)."""
    if not isinstance(uri, str) or not uri.startswith("root://"):
        return uri
    return PUBLIC_XROOTD + uri_path(uri)


def api_record(
    record: Mapping[str, Any], *, base_url: str, data_root: Path, public_uris: bool = False
) -> dict[str, Any]:
    """The record as the portal's API returns it (see module doc)."""
    if public_uris:
        record = {**record, "files": [{**f, "uri": public_uri(f.get("uri"))} for f in record.get("files") or []]}
    recid = str(record["recid"])
    meta = {k: v for k, v in record.items() if k != "files"}
    bucket = str(uuid.uuid5(_NS, f"bucket:{recid}"))
    files, indices = [], []
    for entry in record.get("files") or []:
        kind = entry.get("type")
        key = posixpath.basename(uri_path(str(entry.get("uri", ""))))
        if kind == "index.json":
            indices.append(_expand_index(entry, key, data_root, public_uris=public_uris))
        elif kind == "index.txt":
            continue  # the portal shows the JSON twin only
        else:
            files.append({**entry, "key": key, "bucket": bucket, "version_id": str(uuid.uuid5(_NS, f"{recid}:{key}"))})
    if "files" in record:
        meta["files"] = files
    if indices:
        meta["_file_indices"] = indices
    rid: int | str = int(recid) if recid.isdigit() else recid
    return {
        "id": rid,
        "created": CREATED,
        "updated": CREATED,
        "links": {"self": f"{base_url}/api/records/{recid}", "bucket": f"{base_url}/api/files/{bucket}"},
        "metadata": meta,
    }


def _expand_index(entry: Mapping[str, Any], key: str, data_root: Path, *, public_uris: bool = False) -> dict[str, Any]:
    items = read_index(entry, data_root)
    files = [
        {
            "uri": public_uri(item.get("uri")) if public_uris else item.get("uri"),
            "size": item.get("size"),
            "checksum": item.get("checksum"),
            "filename": item.get("filename"),
            "key": item.get("filename") or posixpath.basename(uri_path(str(item.get("uri", "")))),
            "availability": item.get("availability", "online"),
        }
        for item in items
    ]
    return {"key": key, "number_files": len(files), "size": sum(int(f["size"] or 0) for f in files), "files": files}


def read_index(entry: Mapping[str, Any], data_root: Path) -> list[dict[str, Any]]:
    """The entries of an index file, read from the served tree ([] when absent or broken)."""
    local = _local_file(data_root, uri_path(str(entry.get("uri", ""))))
    if local is None or not local.is_file():
        log.warning("index file %s is not in the sandbox tree", entry.get("uri"))
        return []
    try:
        items = json.loads(local.read_text())
    except (OSError, ValueError) as exc:
        log.warning("index file %s is unreadable: %s", local, exc)
        return []
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def _get_record(request: web.Request) -> web.Response:
    state = _state(request)
    recid = request.match_info["recid"]
    record = state.records.get(recid)
    if record is None:
        return _error(404, f"PID does not exist: recid {recid}")
    body = await asyncio.to_thread(
        api_record, record, base_url=_base_url(request), data_root=state.data_root, public_uris=state.public_uris
    )
    return web.json_response(body)


async def _record_page(request: web.Request) -> web.Response:
    recid = request.match_info["recid"]
    record = _state(request).records.get(recid)
    if record is None:
        return web.Response(status=404, text="<html><body>Not found</body></html>", content_type="text/html")
    title = str(record.get("title", recid)).replace("<", "&lt;")
    return web.Response(text=f"<html><body><h1>{title}</h1></body></html>", content_type="text/html")


async def _file_index(request: web.Request) -> web.Response:
    state = _state(request)
    recid, key = request.match_info["recid"], request.match_info["key"]
    record = state.records.get(recid)
    if record is None:
        return _error(404, f"PID does not exist: recid {recid}")
    stem = key.removesuffix(".json").removesuffix(".txt")
    for entry in record.get("files") or []:
        name = posixpath.basename(uri_path(str(entry.get("uri", ""))))
        if entry.get("type") == "index.json" and name.removesuffix(".json") == stem:
            items = _expand_index(entry, name, state.data_root)["files"]
            if request.query.get("qos") == "online":
                items = [i for i in items if i["availability"] == "online"]
            if key.endswith(".txt") or request.query.get("format") == "txt":
                return web.Response(text="".join(f"{i['uri']}\n" for i in items))
            return web.json_response(items)
    return _error(404, f"record {recid} has no file index {key!r}")


# --- search -------------------------------------------------------------------------------

_TERM = re.compile(r"^(?P<field>[A-Za-z_][\w.]*):(?P<value>.*)$")


class QueryError(ValueError):
    pass


def parse_query(q: str) -> list[tuple[str | None, str]]:
    """``experiment:DELPHI AND date_created:1992 higgs`` -> [(field|None, value), ...]."""
    try:
        tokens = shlex.split(q)
    except ValueError as exc:
        raise QueryError(f"cannot parse query {q!r}: {exc}") from None
    terms: list[tuple[str | None, str]] = []
    for token in tokens:
        if token.upper() == "AND":
            continue
        if token.upper() in ("OR", "NOT"):
            raise QueryError(f"the sandbox search supports AND only, not {token!r}")
        m = _TERM.match(token)
        if m:
            terms.append((m["field"], m["value"].strip('"')))
        else:
            terms.append((None, token))
    return terms


def _values(record: Mapping[str, Any], dotted: str) -> list[str]:
    current: list[Any] = [record]
    for part in dotted.split("."):
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, Mapping) and part in item:
                value = item[part]
                nxt.extend(value if isinstance(value, list) else [value])
        current = nxt
    return [str(v) for v in current if not isinstance(v, Mapping | list)]


def matches(record: Mapping[str, Any], terms: list[tuple[str | None, str]]) -> bool:
    for fld, value in terms:
        want = value.lower()
        if fld is None:
            if want not in re.findall(r"\w+", str(record.get("title", "")).lower()):
                return False
        elif fld == "title":
            title = str(record.get("title", "")).lower()
            if want not in title:
                return False
        elif want not in (v.lower() for v in _values(record, fld)):
            return False
    return True


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"query parameter {name}={raw!r} is not an integer") from None
    if value < 1:
        raise QueryError(f"query parameter {name} must be >= 1")
    return value


async def _search(request: web.Request) -> web.Response:
    state = _state(request)
    try:
        page, size = _int_param(request, "page", 1), _int_param(request, "size", 10)
        terms = parse_query(request.query.get("q", ""))
        for facet in request.query.getall("f", []):
            fld, _, value = facet.partition(":")
            terms.append((fld, value))
    except QueryError as exc:
        return _error(400, str(exc))
    if page * size > MAX_RESULT_WINDOW:
        return _error(
            400, f"Maximum number of {MAX_RESULT_WINDOW} results have been reached (page={page}, size={size})"
        )
    hits = [r for r in state.records.values() if matches(r, terms)]
    hits.sort(key=lambda r: (len(str(r["recid"])), str(r["recid"])))
    window = hits[(page - 1) * size : page * size]
    base = _base_url(request)
    body = [api_record(r, base_url=base, data_root=state.data_root, public_uris=state.public_uris) for r in window]

    def link(p: int) -> str:
        return str(request.url.update_query(page=str(p), size=str(size)))

    links = {"self": link(page)}
    if page * size < len(hits) and (page + 1) * size <= MAX_RESULT_WINDOW:
        links["next"] = link(page + 1)
    if page > 1:
        links["prev"] = link(page - 1)
    return web.json_response({"hits": {"hits": body, "total": len(hits)}, "links": links})


# --- data files over HTTP -------------------------------------------------------------------


def _local_file(data_root: Path, path: str) -> Path | None:
    """``/eos/opendata/x`` -> the file under ``data_root``, or None if it would leave it."""
    pure = PurePosixPath(path)
    if not pure.is_absolute() or ".." in pure.parts or "\x00" in path:
        return None
    local = (data_root / pure.relative_to("/")).resolve()
    if data_root not in local.parents:
        return None
    return local


async def _data_file(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    local = _local_file(state.data_root, "/eos/opendata/" + request.match_info["path"])
    if local is None:
        return _error(403, "path outside /eos/opendata")
    if not local.is_file():
        return _error(404, f"no such file: {request.path}")
    # FileResponse streams from disk (sendfile) and implements Range / 206 / 416.
    return web.FileResponse(local, chunk_size=1024 * 1024)
