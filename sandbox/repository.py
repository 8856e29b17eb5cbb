"""A local InvenioRDM / NRP (oarepo) repository for the demo and the tests.

Run it as a process (prints its URL on the first stdout line):

    python -m sandbox.repository --data DIR --port 0 --token TOKEN [--error-rate 0.1 ...]

or in-process: `running = await start_repository(data_dir, tokens="t")`, then
`await running.stop()`. The contract it follows is docs/repositories-api.md; the
knobs are `RepositoryOptions` (CLI `--knob-name`, keyword `knob_name`, or live through
the loopback-only admin endpoint `POST /_sandbox/config` with JSON `{"knob_name": ...}`).
`GET /_sandbox/state` summarises drafts/records per recid and their files for tests.

HTTPS: `--https` (or `tls_dir=` in-process) makes a throw-away CA and a certificate for
127.0.0.1/localhost in `DATA/tls/` (sandbox/repository_tls.py) and serves `https://`;
clients trust `DATA/tls/ca.pem` via `SSL_CERT_FILE` (aiohttp, urllib, nrp-cmd),
`REQUESTS_CA_BUNDLE` (requests) or ferry's `targets.X.ca_file`. Plain HTTP stays the
default (tests: the `https_repository` fixture opts in). NRP mode caps one L PUT at
50 MiB by default (`max_single_put`); M parts are not capped.

Every API response carries `X-RateLimit-Limit/-Remaining/-Reset`; each request is
appended to `<data>/requests.jsonl` (ts, method, path, status, request_bytes,
duration, in_flight, bytes_in_flight) so tests can measure request rates and bytes
in flight.

Why one module of about 450 lines: the stand-in's process entry, app wiring, request log
and fault knobs; its endpoints are already in repository_records, repository_files,
repository_nrp and repository_search_api.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import math
import re
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from aiohttp import web

from sandbox import repository_files, repository_nrp, repository_records, repository_search_api
from sandbox.repository_core import BYTES_READ_KEY, DROPPED_KEY, MODELS, USER_KEY, ApiError, Repo, json_response
from sandbox.repository_options import RepositoryOptions
from sandbox.repository_records import REPO
from sandbox.repository_store import Obj
from sandbox.repository_tls import CA_FILE, ensure_tls, server_context

REQUEST_LOG = "requests.jsonl"
TLS_DIR = "tls"  # under the data dir, with --https
MODEL_PATTERN = "|".join(MODELS)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- rate limiting ------------------------------------------------------------------------
class RateLimiter:
    """Two sliding windows per client (minute and hour), like Flask-Limiter's moving window."""

    def __init__(self) -> None:
        self._hits: dict[str, tuple[deque[float], deque[float]]] = {}

    def hit(self, key: str, per_minute: int, per_hour: int) -> tuple[bool, dict[str, str]]:
        now = time.time()
        minute, hour = self._hits.setdefault(key, (deque(), deque()))
        while minute and minute[0] <= now - 60:
            minute.popleft()
        while hour and hour[0] <= now - 3600:
            hour.popleft()
        allowed = len(minute) < per_minute and len(hour) < per_hour
        if allowed:
            minute.append(now)
            hour.append(now)
        windows = [(per_minute, minute, 60), (per_hour, hour, 3600)]
        # Report the window closest to its limit (ties: the shorter one), as Flask-Limiter does.
        limit, hits, span = min(windows, key=lambda w: (w[0] - len(w[1]), w[2]))
        reset = (hits[0] + span) if hits else now + span
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - len(hits))),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }
        if not allowed:
            blocked = [(h[0] + s) for lim, h, s in windows if len(h) >= lim and h]
            headers["Retry-After"] = str(max(1, math.ceil(min(blocked, default=now + 1) - now)))
        return allowed, headers


# --- request log ----------------------------------------------------------------------------
@dataclass
class Traffic:
    log: BinaryIO
    in_flight: int = 0
    bytes_in_flight: int = 0
    limiter: RateLimiter = field(default_factory=RateLimiter)

    def write(self, row: Obj) -> None:
        self.log.write(orjson.dumps(row) + b"\n")
        self.log.flush()


TRAFFIC = web.AppKey("traffic", Traffic)


def _is_loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


@web.middleware
async def sandbox_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/_sandbox"):
        if not _is_loopback(request):
            return json_response({"status": 403, "message": "Admin endpoint is loopback-only."}, 403)
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
    traffic = request.app[TRAFFIC]
    declared = request.content_length or 0
    traffic.in_flight += 1
    traffic.bytes_in_flight += declared
    row: Obj = {
        "ts": time.time(),
        "method": request.method,
        "path": request.path,
        "in_flight": traffic.in_flight,
        "bytes_in_flight": traffic.bytes_in_flight,
    }
    started = time.monotonic()
    status = 500
    try:
        response = await _api(request, handler)
        status = response.status
        return response
    finally:
        traffic.in_flight -= 1
        traffic.bytes_in_flight -= declared
        row["status"] = status
        row["request_bytes"] = request.get(BYTES_READ_KEY, declared)
        row["duration"] = round(time.monotonic() - started, 6)
        if request.get(DROPPED_KEY):
            row["dropped"] = True
        traffic.write(row)


async def _api(request: web.Request, handler: Handler) -> web.StreamResponse:
    repo = request.app[REPO]
    opts = repo.options
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    user = repo.tokens.get(token) if token else None
    request[USER_KEY] = user
    allowed, rate = _rate_check(request, opts, user)
    try:
        if not allowed:
            raise ApiError(429, "Too many requests. Please slow down.")
        if token is not None and user is None:
            raise ApiError(401, "The server could not verify that you are authorized to access the URL requested.")
        response = await _with_faults(request, handler, repo)
    except ApiError as exc:
        if opts.echo_auth:  # a careless server quoting the request in its error
            exc.message += f" (request: {request.method} {request.path}, Authorization: {header})"
        response = exc.response()
    except web.HTTPException as exc:
        response = _http_error(exc, opts, header)
    response.headers.update(rate)
    if opts.echo_auth:
        response.headers["X-Echo-Authorization"] = header
    return response


def _rate_check(request: web.Request, opts: RepositoryOptions, user: int | None) -> tuple[bool, dict[str, str]]:
    """(allowed, rate-limit headers): a forced 429 first, else the per-user/per-IP limiter."""
    if opts.force_429 > 0:
        opts.force_429 -= 1
        return False, _forced_429_headers(opts)
    key = f"user:{user}" if user is not None else f"ip:{request.remote}"
    return request.app[TRAFFIC].limiter.hit(key, opts.rate_per_minute, opts.rate_per_hour)


async def _with_faults(request: web.Request, handler: Handler, repo: Repo) -> web.StreamResponse:
    """Run the handler with the configured latency and injected errors (before it, or after the work is done)."""
    opts = repo.options
    if opts.latency_ms > 0:
        await asyncio.sleep(opts.latency_ms / 1000)
    target = f"{request.method} {request.path}"
    faulty = not opts.error_match or re.search(opts.error_match, target) is not None
    if faulty and opts.error_rate > 0 and repo.rng.random() < opts.error_rate:
        if repo.rng.random() < 0.5:
            raise ApiError(503, "Service temporarily unavailable.", headers={"Retry-After": str(opts.retry_after)})
        raise ApiError(500, "Internal server error.")
    response = await handler(request)
    if faulty and opts.error_after_rate > 0 and repo.rng.random() < opts.error_after_rate:
        # The work is done, but the client never learns it (a proxy timed out).
        raise ApiError(504 if repo.rng.random() < 0.5 else 502, "Gateway timeout.")
    return response


def _http_error(exc: web.HTTPException, opts: RepositoryOptions, header: str) -> web.Response:
    message = "The requested URL was not found on the server." if exc.status == 404 else exc.reason
    if opts.echo_auth:
        message = f"{message} (Authorization: {header})"
    return json_response({"status": exc.status, "message": message}, exc.status)


def _forced_429_headers(opts: RepositoryOptions) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(opts.rate_per_minute),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(math.ceil(time.time() + opts.retry_after)),
        "Retry-After": str(opts.retry_after),
    }


# --- admin endpoints ------------------------------------------------------------------------
def _recid(entity: Obj) -> str | None:
    """The source recid an uploaded record carries (NRP `recid`, or a CERN identifier)."""
    for face in (entity.get("draft"), entity.get("record")):
        metadata = (face or {}).get("metadata") or {}
        if metadata.get("recid") is not None:
            return str(metadata["recid"])
        for ident in [*(metadata.get("identifiers") or []), *(metadata.get("related_identifiers") or [])]:
            value = str((ident or {}).get("identifier", ""))
            match = re.search(r"(?:cernopendata:|opendata\.cern\.ch/record/)(\d+)", value)
            if match:
                return match.group(1)
    return None


def _files_summary(files: dict[str, Obj]) -> dict[str, Obj]:
    return {
        key: {"status": f["status"], "size": f.get("size"), "checksum": f.get("checksum"), "transfer": f["transfer"]}
        for key, f in files.items()
    }


def state_summary(repo: Repo) -> Obj:
    entities = list(repo.store.entities.values())
    by_recid: dict[str, Obj] = {}
    listing: list[Obj] = []
    for entity in entities:
        recid = _recid(entity)
        item = {
            "id": entity["id"],
            "model": entity["model"],
            "parent": entity["parent_id"],
            "owner": entity["owner"],
            "recid": recid,
            "version_index": entity.get("version_index", 1),
            "has_draft": entity.get("draft") is not None,
            "published": entity.get("record") is not None,
            "draft_files": _files_summary(entity.get("draft_files") or {}),
            "record_files": _files_summary(entity.get("record_files") or {}),
        }
        listing.append(item)
        if recid is not None:
            slot = by_recid.setdefault(recid, {"drafts": 0, "records": 0, "ids": []})
            slot["drafts"] += item["has_draft"]
            slot["records"] += item["published"]
            slot["ids"].append(entity["id"])
    return {
        "drafts": sum(1 for e in entities if e.get("draft") is not None),
        "records": sum(1 for e in entities if e.get("record") is not None),
        "parents": len(repo.store.parents),
        "files": sum(len(e.get("draft_files") or {}) + len(e.get("record_files") or {}) for e in entities),
        "by_recid": by_recid,
        "entities": listing,
        "requests": [
            {"id": r["id"], "type": r["type"], "status": r["status"], "topic": r["topic_id"]}
            for r in repo.store.requests.values()
        ],
        "options": repo.options.as_dict(),
    }


async def admin_state(request: web.Request) -> web.Response:
    repo = request.app[REPO]
    summary = state_summary(repo)
    summary["in_flight"] = request.app[TRAFFIC].in_flight
    return json_response(summary)


async def admin_config(request: web.Request) -> web.Response:
    repo = request.app[REPO]
    if request.method == "POST":
        body = await repo.json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "Send a JSON object of knobs.")
        try:
            repo.apply_options(body)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
    return json_response(repo.options.as_dict())


# --- app and process ----------------------------------------------------------------------
def build_app(repo: Repo, request_log: Path) -> web.Application:
    app = web.Application(middlewares=[sandbox_middleware], client_max_size=16 << 20)
    app[REPO] = repo
    repo.expander = repository_nrp.expanded
    log = open(request_log, "ab")  # noqa: SIM115 - closed on app cleanup
    app[TRAFFIC] = Traffic(log=log)
    app.add_routes(repository_nrp.routes(MODEL_PATTERN))
    app.add_routes(repository_files.routes(MODEL_PATTERN))
    app.add_routes(repository_search_api.routes(MODEL_PATTERN))
    app.add_routes(repository_records.routes(MODEL_PATTERN))
    app.add_routes(
        [
            web.get("/_sandbox/state", admin_state),
            web.get("/_sandbox/config", admin_config),
            web.post("/_sandbox/config", admin_config),
        ]
    )

    async def on_startup(_: web.Application) -> None:
        repository_files.resume_checksums(repo)

    async def on_cleanup(_: web.Application) -> None:
        for task in list(repo.background):
            task.cancel()
        if repo.background:
            await asyncio.gather(*repo.background, return_exceptions=True)
        log.close()
        repo.store.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def _token_map(tokens: str | Sequence[str] | None) -> tuple[list[str], dict[str, int]]:
    if tokens is None:
        tokens = [secrets.token_urlsafe(24)]
    elif isinstance(tokens, str):
        tokens = [tokens]
    tokens = list(tokens)
    if not tokens:
        raise ValueError("at least one token is needed")
    return tokens, {token: index + 1 for index, token in enumerate(tokens)}


@dataclass
class RunningRepository:
    """An in-process sandbox repository (see `start_repository`)."""

    url: str
    token: str
    tokens: list[str]
    data_dir: Path
    request_log: Path
    repo: Repo = field(repr=False)
    runner: web.AppRunner = field(repr=False)
    ca_file: Path | None = None  # set when serving HTTPS: the CA clients must trust

    async def stop(self) -> None:
        await self.runner.cleanup()

    def configure(self, **knobs: Any) -> None:
        self.repo.apply_options(knobs)

    def state(self) -> Obj:
        return state_summary(self.repo)


async def start_repository(
    data_dir: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tokens: str | Sequence[str] | None = None,
    public_url: str | None = None,
    tls_dir: Path | None = None,
    **options: Any,
) -> RunningRepository:
    """Start the sandbox in this event loop; `options` are RepositoryOptions knobs.

    With `tls_dir` it serves HTTPS with a CA of its own written there (`ca_file`).
    """
    data = Path(data_dir)
    await asyncio.to_thread(data.mkdir, parents=True, exist_ok=True)
    opts = RepositoryOptions()
    opts.update(options)
    token_list, token_map = _token_map(tokens)
    repo = Repo(data_dir=data, options=opts, tokens=token_map, public_url=public_url)
    request_log = data / REQUEST_LOG
    runner = web.AppRunner(build_app(repo, request_log), access_log=None, handle_signals=False)
    await runner.setup()
    tls = await asyncio.to_thread(ensure_tls, tls_dir) if tls_dir is not None else None
    site = web.TCPSite(runner, host, port, ssl_context=server_context(tls) if tls is not None else None)
    await site.start()
    server = site._server
    assert server is not None and isinstance(server, asyncio.base_events.Server)
    bound = server.sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return RunningRepository(
        url=f"{'https' if tls is not None else 'http'}://{shown}:{bound}",
        token=token_list[0],
        tokens=token_list,
        data_dir=data,
        request_log=request_log,
        repo=repo,
        runner=runner,
        ca_file=tls.ca_file if tls is not None else None,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox.repository", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="state directory (created if missing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", action="append", help="accepted bearer token (repeatable; one per user)")
    parser.add_argument("--public-url", help="base URL for links (default: the request's host)")
    parser.add_argument(
        "--https",
        action="store_true",
        help=f"serve HTTPS with a sandbox CA written to DATA/{TLS_DIR}/{CA_FILE} (trust it via SSL_CERT_FILE)",
    )
    for f in dataclasses.fields(RepositoryOptions):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f"knob_{f.name}", metavar="VALUE")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    knobs = {k[5:]: v for k, v in vars(args).items() if k.startswith("knob_") and v is not None}
    running = await start_repository(
        args.data,
        host=args.host,
        port=args.port,
        tokens=args.token,
        public_url=args.public_url,
        tls_dir=args.data / TLS_DIR if args.https else None,
        **knobs,
    )
    print(running.url, flush=True)
    if not args.token:
        print(f"token {running.token}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await running.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except ValueError as exc:  # bad knob values
        print(f"sandbox.repository: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
