"""Portal search: every hit of a query, paging through the portal's 10,000-hit cap by
splitting the query by field values."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp

from download.sources.portal_api import get_json
from ferry.core.errors import SourceError
from ferry.core.retry import RetryPolicy, retry

log = logging.getLogger(__name__)

SEARCH_CAP = 10_000
DEFAULT_SPLITS = ("date_created", "type.secondary", "collections")


def default_probes() -> dict[str, list[str]]:
    """Values tried for a split field even when no hit showed them (the capped pages may hide
    them all): every year from 1950 to next year for ``date_created``."""
    return {"date_created": [str(y) for y in range(1950, datetime.now(UTC).year + 2)]}


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-_.+" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def field_values(metadata: Mapping[str, Any], path: str) -> list[str]:
    """Values of a dotted field in record JSON (lists flattened): ``type.secondary`` -> [...]."""
    node: Any = metadata
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part)
        else:
            return []
    if node is None:
        return []
    items = node if isinstance(node, list) else [node]
    return [str(x) for x in items if isinstance(x, str | int | float) and str(x) != ""]


class PortalSearch:
    """Pages through ``GET {portal}/api/records?q=...&page=&size=``.

    The portal serves at most ``cap`` hits of one query. When a query has more, it is split
    by the values of ``splits[0]`` (e.g. ``date_created``), then those sub-queries that still
    exceed the cap by ``splits[1]``, and so on. Split values come from ``probes`` (every
    plausible year for ``date_created``), from the response's ``aggregations`` when a bucket
    list is named like the field, and from every hit read (new values found in sub-queries
    are queried too). Hits are yielded once per recid. If the splits cannot reach every hit
    (records without the field, values never seen), a warning says how many are missing.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        portal: str,
        *,
        page_size: int = 200,
        cap: int = SEARCH_CAP,
        splits: Sequence[str] = DEFAULT_SPLITS,
        policy: RetryPolicy | None = None,
        probes: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.session = session
        self.probes = default_probes() if probes is None else probes
        self.portal = portal.rstrip("/")
        self.url = self.portal + "/api/records"
        self.page_size = max(1, min(page_size, cap))
        self.cap = cap
        self.splits = tuple(splits)
        self.policy = policy or RetryPolicy(attempts=4)
        self.requests = 0
        self.warnings: list[str] = []
        self._seen: set[str] = set()

    async def _get(self, query: str, page: int, size: int) -> Mapping[str, Any]:
        params = {"q": query, "page": str(page), "size": str(size)}

        async def once() -> Mapping[str, Any]:
            self.requests += 1
            data = await get_json(self.session, self.url, portal=self.portal, what=f"search q={query!r}", params=params)
            if not isinstance(data.get("hits"), Mapping):
                raise SourceError(f"portal search for q={query!r} returned no 'hits' object")
            return data

        return await retry(once, policy=self.policy, what=f"portal search q={query!r} page {page}")

    @staticmethod
    def _total(data: Mapping[str, Any]) -> int:
        total = data["hits"].get("total", 0)
        if isinstance(total, Mapping):  # Elasticsearch 7 style {"value": n, "relation": "eq"}
            total = total.get("value", 0)
        return int(total)

    @staticmethod
    def _hits(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [h for h in data["hits"].get("hits") or [] if isinstance(h, Mapping)]

    @staticmethod
    def _recid(hit: Mapping[str, Any]) -> str:
        return str(_meta(hit).get("recid") or hit.get("id") or "")

    @staticmethod
    def _aggregated(data: Mapping[str, Any], split: str) -> list[str]:
        """Bucket keys of an aggregation named like the split field (Invenio's format)."""
        aggs = data.get("aggregations")
        if not isinstance(aggs, Mapping):
            return []
        names = (split, split.rsplit(".", 1)[-1]) + (("year",) if split == "date_created" else ())
        for name in names:
            agg = aggs.get(name)
            if isinstance(agg, Mapping) and isinstance(agg.get("buckets"), list):
                return [str(b["key"]) for b in agg["buckets"] if isinstance(b, Mapping) and b.get("key") is not None]
        return []

    async def _pages(self, query: str, first: Mapping[str, Any]) -> AsyncIterator[Mapping[str, Any]]:
        """Every hit of ``query`` the cap lets us read (first page already fetched)."""
        reachable = min(self._total(first), self.cap)
        page, data = 1, first
        while True:
            hits = self._hits(data)
            for hit in hits:
                yield hit
            if not hits or page * self.page_size >= reachable:
                return
            if len(hits) < self.page_size:
                # The portal caps the page size below ours: page numbers no longer line up.
                self.warnings.append(
                    f"search q={query!r}: page {page} held {len(hits)} hits, not {self.page_size}; "
                    "the portal caps the page size, use a smaller --page-size"
                )
                return
            page += 1
            data = await self._get(query, page, self.page_size)

    async def hits(self, query: str) -> AsyncIterator[Mapping[str, Any]]:
        found: set[str] = set()
        first = await self._get(query, 1, self.page_size)
        total = self._total(first)
        async for hit in self._query(query, 0, found, first):
            yield hit
        if len(found) < total:
            self.warnings.append(
                f"search q={query!r}: {total - len(found)} of {total} hits could not be reached "
                f"under the {self.cap}-hit cap (splits: {', '.join(self.splits) or 'none'})"
            )

    async def _query(
        self, query: str, depth: int, found: set[str], first: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Mapping[str, Any]]:
        if first is None:
            first = await self._get(query, 1, self.page_size)
        total = self._total(first)
        split = self.splits[depth] if total >= self.cap and depth < len(self.splits) else None
        values: dict[str, None] = {}
        if split is not None:
            values.update(dict.fromkeys(self._aggregated(first, split)))
            values.update(dict.fromkeys(self.probes.get(split, ())))
        async for hit in self._pages(query, first):
            if split is not None:
                values.update(dict.fromkeys(field_values(_meta(hit), split)))
            recid = self._recid(hit)
            found.add(recid)
            if recid and recid not in self._seen:
                self._seen.add(recid)
                yield hit
        if split is None:
            return
        log.info("search q=%r has %d hits (cap %d): splitting by %s", query, total, self.cap, split)
        async for hit in self._split(query, split, depth, found, values):
            yield hit

    async def _split(
        self, query: str, split: str, depth: int, found: set[str], values: dict[str, None]
    ) -> AsyncIterator[Mapping[str, Any]]:
        """The hits of ``query AND split:value`` for every value, including values first seen
        in the hits of these sub-queries."""
        done: set[str] = set()
        while True:
            pending = [v for v in values if v not in done]
            if not pending:
                break
            for value in pending:
                done.add(value)
                sub = f"{query} AND {split}:{_quote(value)}" if query.strip() else f"{split}:{_quote(value)}"
                async for hit in self._query(sub, depth + 1, found):
                    values.update(dict.fromkeys(field_values(_meta(hit), split)))
                    yield hit


def _meta(hit: Mapping[str, Any]) -> Mapping[str, Any]:
    """A hit's record metadata (a search hit wraps it in ``metadata``; a bare record is its own)."""
    meta = hit.get("metadata")
    return meta if isinstance(meta, Mapping) else hit
