"""The HTTP answers of InvenioRDM and Zenodo as ``ferry.core.errors`` classes: one status map.

``map_status`` is the only place an HTTP status becomes an error class (the server's own
words kept in the message, field errors kept as ``ValidationError.errors``); ``mark``
records on the error whether the failed request may have taken effect on the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ferry.core.errors import (
    AuthError,
    Conflict,
    FerryError,
    QuotaError,
    RateLimited,
    TargetError,
    TargetNotFound,
    TargetUnavailable,
    ValidationError,
    maybe_applied,
)
from ferry.core.retry import server_delay

# Words InvenioRDM/Zenodo use in 400 messages about limits rather than metadata.
_QUOTA_WORDS = ("too many files", "maximum number", "exceed", "too large", "quota", "file size limit")


@dataclass(frozen=True)
class Where:
    """What a request is about, for error messages (never the token)."""

    what: str  # e.g. "create draft", "upload content"
    recid: str | None = None
    file: str | None = None


def field_errors(body: Any) -> dict[str, list[str]]:
    """InvenioRDM ``errors: [{field, messages}]`` as ``{field: [messages]}``."""
    out: dict[str, list[str]] = {}
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if not isinstance(errors, list):
        return out
    for item in errors:
        if not isinstance(item, Mapping):
            continue
        name = str(item.get("field") or "_")
        messages = item.get("messages") or item.get("message") or []
        if isinstance(messages, str):
            messages = [messages]
        elif isinstance(messages, Mapping):  # nested marshmallow errors
            messages = [f"{k}: {v}" for k, v in messages.items()]
        out.setdefault(name, []).extend(str(m) for m in messages)
    return out


def server_message(body: Any, fallback: str) -> str:
    if isinstance(body, Mapping):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
        errors = body.get("errors")
        if isinstance(errors, str) and errors:
            return errors
    return fallback


def map_status(status: int, headers: Mapping[str, str], body: Any, where: Where, reason: str = "") -> TargetError:
    """The ``ferry.core.errors`` class for an HTTP error answer, keeping the server's words."""
    message = f"{where.what}: HTTP {status}: {server_message(body, reason or 'error')}"
    kw: dict[str, Any] = {"status": status, "recid": where.recid, "file": where.file}
    lowered = message.lower()
    if status in (401, 403):
        return AuthError(message, **kw)
    if status == 429 or (status == 503 and server_delay(headers) is not None):
        err = RateLimited(message, retry_after=server_delay(headers), status=status)
        err.recid, err.file = where.recid, where.file
        return err
    if status == 413 or (status == 400 and any(w in lowered for w in _QUOTA_WORDS)):
        return QuotaError(message, **kw)
    if status == 400 and "already exists" in lowered:
        return Conflict(message, **kw)
    if status in (400, 422):
        return ValidationError(message, errors=field_errors(body), status=status, recid=where.recid)
    if status == 404 or status == 410:
        return TargetNotFound(message, **kw)
    if status in (409, 412, 423):
        return Conflict(message, **kw)
    if status >= 500:
        return TargetUnavailable(message, **kw)
    return TargetError(message, **kw)


def mark(exc: FerryError, applied: bool) -> FerryError:
    exc.maybe_applied = applied
    return exc


__all__ = ["Where", "field_errors", "map_status", "mark", "maybe_applied", "server_message"]
