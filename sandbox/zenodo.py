"""A local Zenodo stand-in: the legacy deposit API and the records API, as Zenodo serves them.

Follows the Zenodo section of docs/repositories-api.md (shared docs) and zenodo-rdm's
legacy serializers: depositions with ``links.bucket`` / ``links.latest_draft``, bucket
``PUT`` answering 201 and replacing a same-name file, bare-hex md5 in deposition file
listings and ``md5:`` in bucket and record answers, ``actions/newversion`` and its 400
"Please remove all files first.", 403 without a token and 401 with a wrong one, 100
files and 50 GB per deposition, ``X-RateLimit-*`` on every answer and 429 with
``Retry-After`` (100/min, 5000/h by default).

    running = await start_zenodo(data_dir, tokens=["t"], rate_per_minute=1000)
    ... running.url, running.writes(), running.state ...
    await running.stop()

or ``with zenodo_in_thread(data_dir) as zen:`` for sync callers, or as a process:
``python -m sandbox.zenodo --data DIR --port 0 --token T`` (prints its URL first).
Every API request is logged (``DATA/requests.jsonl`` and ``running.rows``) with its
method, path, status and body bytes, so a test can count the writing requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import math
import secrets
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from sandbox import zenodo_deposit, zenodo_records
from sandbox.zenodo_http import CTX, USER, WRITING, ApiError, Ctx, json_response, token_of
from sandbox.zenodo_metadata import Obj
from sandbox.zenodo_state import ZenodoOptions, ZenodoState

REQUEST_LOG = "requests.jsonl"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/_sandbox"):
        if not _loopback(request):
            return json_response({"status": 403, "message": "Admin endpoint is loopback-only."}, 403)
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
    ctx = request.app[CTX]
    started = time.monotonic()
    row: Obj = {"ts": time.time(), "method": request.method, "path": request.path}
    status = 500
    try:
        response = await _api(request, handler, ctx)
        status = response.status
        return response
    finally:
        row.update(status=status, request_bytes=request.content_length or 0)
        row["duration"] = round(time.monotonic() - started, 6)
        row["writing"] = request.method in WRITING
        ctx.record(row)


async def _api(request: web.Request, handler: Handler, ctx: Ctx) -> web.StreamResponse:
    opts = ctx.state.options
    token = token_of(request)
    user = ctx.tokens.get(token) if token else None
    request[USER] = user
    key = f"user:{user}" if user is not None else f"ip:{request.remote}"
    if opts.force_429 > 0:
        opts.force_429 -= 1
        allowed, rate = False, _forced_429(opts)
    else:
        allowed, rate = ctx.limiter.hit(key, opts.rate_per_minute, opts.rate_per_hour)
    try:
        if not allowed:
            raise ApiError(429, "Too many requests. Please slow down.", headers={"Retry-After": rate["Retry-After"]})
        if token is not None and user is None:
            raise ApiError(401, "The server could not verify that you are authorized to access the URL requested.")
        if opts.latency_ms > 0:
            await asyncio.sleep(opts.latency_ms / 1000)
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except web.HTTPRedirection as exc:
        response = web.Response(status=exc.status, headers={"Location": str(exc.headers.get("Location", ""))})
    except web.HTTPException as exc:
        message = "The requested URL was not found on the server." if exc.status == 404 else exc.reason
        response = json_response({"status": exc.status, "message": message}, exc.status)
    response.headers.update(rate)
    return response


def _forced_429(opts: ZenodoOptions) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(opts.rate_per_minute),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(math.ceil(time.time() + opts.retry_after)),
        "Retry-After": str(opts.retry_after),
    }


def build_app(ctx: Ctx) -> web.Application:
    app = web.Application(middlewares=[middleware], client_max_size=16 << 20)
    app[CTX] = ctx
    app.add_routes(zenodo_deposit.routes())
    app.add_routes(zenodo_records.routes())

    async def on_cleanup(_: web.Application) -> None:
        ctx.log.close()

    app.on_cleanup.append(on_cleanup)
    return app


@dataclass
class RunningZenodo:
    """An in-process Zenodo stand-in (see ``start_zenodo``)."""

    url: str
    token: str
    tokens: list[str]
    data_dir: Path
    ctx: Ctx = field(repr=False)
    runner: web.AppRunner = field(repr=False)

    @property
    def state(self) -> ZenodoState:
        return self.ctx.state

    @property
    def rows(self) -> list[Obj]:
        return self.ctx.rows

    def writes(self) -> list[Obj]:
        """The writing (POST/PUT/PATCH/DELETE) API requests received so far."""
        return [r for r in self.ctx.rows if r["writing"]]

    def configure(self, **knobs: Any) -> None:
        self.ctx.state.options.update(knobs)

    def summary(self) -> Obj:
        return zenodo_records.summary(self.ctx.state)

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_zenodo(
    data_dir: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tokens: str | Sequence[str] | None = None,
    public_url: str | None = None,
    **options: Any,
) -> RunningZenodo:
    """Start the stand-in in this event loop; ``options`` are ``ZenodoOptions`` knobs.
    Token number i (from 0) belongs to user i + 1."""
    data = Path(data_dir)
    await asyncio.to_thread(data.mkdir, parents=True, exist_ok=True)
    opts = ZenodoOptions()
    opts.update(options)
    token_list = [tokens] if isinstance(tokens, str) else list(tokens or [secrets.token_urlsafe(24)])
    log = await asyncio.to_thread(open, data / REQUEST_LOG, "ab")
    ctx = Ctx(
        state=ZenodoState(data, opts),
        tokens={t: i + 1 for i, t in enumerate(token_list)},
        log=log,
        public_url=public_url,
    )
    runner = web.AppRunner(build_app(ctx), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    bound = server.sockets[0].getsockname()[1]
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    return RunningZenodo(url=url, token=token_list[0], tokens=token_list, data_dir=data, ctx=ctx, runner=runner)


class ZenodoThread:
    """A stand-in on its own event loop in a daemon thread, for sync callers (pytest)."""

    def __init__(self, data_dir: Path, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._data_dir = data_dir
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="zenodo-sandbox", daemon=True)
        self.running: RunningZenodo | None = None

    def start(self, timeout: float = 30.0) -> RunningZenodo:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_zenodo(self._data_dir, **self._kwargs), self._loop)
        try:
            self.running = future.result(timeout)
        except BaseException:
            self._halt()
            raise
        return self.running

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop (state is not thread-safe), return its result."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def stop(self) -> None:
        try:
            if self.running is not None and self._thread.is_alive():
                asyncio.run_coroutine_threadsafe(self.running.stop(), self._loop).result(30)
        finally:
            self.running = None
            self._halt()

    def _halt(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()


@contextlib.contextmanager
def zenodo_in_thread(data_dir: Path, **kwargs: Any) -> Iterator[RunningZenodo]:
    runner = ZenodoThread(data_dir, **kwargs)
    running = runner.start()
    try:
        yield running
    finally:
        runner.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox.zenodo", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="directory for blobs and the request log")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", action="append", help="accepted token (repeatable; one user each)")
    parser.add_argument("--public-url", help="base URL for links (default: the request's host)")
    for f in dataclasses.fields(ZenodoOptions):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f"knob_{f.name}", metavar="VALUE")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    knobs = {k[5:]: v for k, v in vars(args).items() if k.startswith("knob_") and v is not None}
    running = await start_zenodo(
        args.data, host=args.host, port=args.port, tokens=args.token, public_url=args.public_url, **knobs
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
    except ValueError as exc:
        print(f"sandbox.zenodo: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
