"""What the Zenodo stand-in's handlers share: the app context, auth, lookups, errors.

Errors are answered as Zenodo does: ``{"status", "message", "errors"?: [{"field",
"messages"}]}`` (``sandbox.repository_core.ApiError`` writes that shape). Tokens come as
``Authorization: Bearer T`` or ``?access_token=T`` (both work on Zenodo; zenodo-client
sends the query form).
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NoReturn

import orjson
from aiohttp import web

from sandbox.repository import RateLimiter
from sandbox.repository_core import ApiError, json_response
from sandbox.zenodo_metadata import Obj
from sandbox.zenodo_state import Deposition, ZenodoState

__all__ = ["CTX", "ApiError", "Ctx", "fail", "json_response"]

WRITING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _request_key(name: str) -> Any:
    factory = getattr(web, "RequestKey", None)  # aiohttp >= 3.14 wants typed keys
    return factory(name) if factory is not None else f"zenodo.{name}"


USER: Any = _request_key("zenodo_user")


@dataclass
class Ctx:
    """One running stand-in: its state, accepted tokens (token -> user id), traffic."""

    state: ZenodoState
    tokens: dict[str, int]
    log: BinaryIO
    public_url: str | None = None
    limiter: RateLimiter = field(default_factory=RateLimiter)
    rows: list[Obj] = field(default_factory=list)

    def record(self, row: Obj) -> None:
        self.rows.append(row)
        self.log.write(orjson.dumps(row) + b"\n")
        self.log.flush()

    def base(self, request: web.Request) -> str:
        return self.public_url or f"{request.scheme}://{request.host}"


CTX = web.AppKey("zenodo", Ctx)


def fail(status: int, message: str, errors: list[Obj] | None = None) -> NoReturn:
    raise ApiError(status, message, errors)


def token_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.query.get("access_token") or None


def user_of(request: web.Request) -> int | None:
    user: int | None = request.get(USER)
    return user


def require_user(request: web.Request) -> int:
    user = user_of(request)
    if user is None:
        # Zenodo answers a deposit call without a token with 403, not 401.
        fail(
            403,
            "You don't have the permission to access the requested resource. "
            "It is either read-protected or not readable by the server.",
        )
    return user


def int_id(raw: str) -> int:
    if not raw.isdigit():
        fail(404, "The persistent identifier does not exist.")
    return int(raw)


def owned(request: web.Request, raw_id: str) -> Deposition:
    user = require_user(request)
    dep = request.app[CTX].state.depositions.get(int_id(raw_id))
    if dep is None or dep.deleted:
        fail(404, "The persistent identifier does not exist.")
    if dep.owner != user:
        fail(403, "You don't have the permission to access the requested resource.")
    return dep


async def json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        fail(400, "The browser (or proxy) sent a request that this server could not understand.")


def mimetype_of(key: str) -> str:
    guessed, _ = mimetypes.guess_type(key, strict=False)
    return guessed or "application/octet-stream"
