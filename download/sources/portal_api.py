"""The one GET of the CERN Open Data portal's JSON API, and its one status map.

Both uses of the API go through ``get_json``: a record (``GET {portal}/api/records/{recid}``,
``PortalSource``) and a search page (``GET {portal}/api/records?q=...``, ``PortalSearch``).
What an answer means is decided once, in ``status_error``:

    200            the JSON object (anything else in the body: InputError)
    404, 410       RecordNotFound, when a record was asked for
    429, 5xx       SourceUnavailable (retryable), with the server's Retry-After
    other          SourceError, with the start of the body
    no answer      SourceUnavailable (connection failed, timed out)

Retries are the caller's (``ferry.core.retry.retry`` around ``get_json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ferry.core.errors import FerryError, InputError, RecordNotFound, SourceError, SourceUnavailable
from ferry.core.retry import server_delay

if TYPE_CHECKING:
    import aiohttp


def status_error(
    status: int, headers: Mapping[str, str], body: bytes, *, portal: str, what: str, recid: str | None
) -> FerryError | None:
    """The error an answer with ``status`` means, or None for a good one (200).

    ``what``: the request as the message names it (its URL, or the search query);
    ``recid``: the record asked for (a 404 then means that record does not exist)."""
    if status == 200:
        return None
    if recid is not None and status in (404, 410):
        return RecordNotFound(f"the portal {portal} has no such record (HTTP {status})", recid=recid)
    if status == 429 or status >= 500:
        exc = SourceUnavailable(f"the portal {portal} answered HTTP {status} for {what}", recid=recid)
        exc.retry_after = server_delay(headers)
        return exc
    text = body[:200].decode("utf-8", "replace").strip()
    return SourceError(
        f"the portal {portal} answered HTTP {status} for {what}{': ' + text if text else ''}", recid=recid
    )


def unreachable_portal(portal: str, detail: str) -> str:
    """What to say when the portal does not answer: its host, and the flags that choose another."""
    host = urlsplit(portal).netloc or portal
    return (
        f"cannot reach the portal at host {host} ({portal}): {detail}. Check that {host} is reachable, "
        "or name another portal with --portal URL ([source.cernopendata] portal in ferry.toml), "
        "or read records from files with --records FILE.json"
    )


async def get_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    portal: str,
    what: str,
    recid: str | None = None,
    params: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One GET of ``url``: the answer's JSON object, or the error ``status_error`` maps it to."""
    import aiohttp

    try:
        async with session.get(url, params=params, headers={"Accept": "application/json"}) as resp:
            raw = await resp.read()
            error = status_error(resp.status, resp.headers, raw, portal=portal, what=what, recid=recid)
    except (aiohttp.ClientError, TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        raise SourceUnavailable(unreachable_portal(portal, detail), recid=recid) from exc
    if error is not None:
        raise error
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"the portal's answer for {what} is not valid JSON: {exc}", recid=recid) from exc
    if not isinstance(body, dict):
        raise InputError(f"the portal's answer for {what} is not a JSON object", recid=recid)
    return body
