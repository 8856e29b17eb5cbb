"""The processing order of a run's recids, with the reason for each position (for the stats)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from download.sources.cache_entries import CATEGORIES, WHY, category_of, entry_size, recid_key
from download.sources.cache_file import MasterCache
from ferry.core.errors import InputError

ORDERS = ("priority", "size-asc", "size-desc", "recid", "file")


@dataclass(frozen=True)
class OrderDecision:
    """Where one recid goes in the run, and why (the stats record ``reason``)."""

    recid: str
    position: int
    category: str
    size: int | None
    reason: str


def order_recids(
    recids: Sequence[str],
    cache: MasterCache | Mapping[str, Mapping[str, Any]],
    order: str = "priority",
) -> list[OrderDecision]:
    """Processing order of ``recids`` with a reason for each position.

    - ``priority`` (default, as the seed): collision, simulated, unclassified, no metadata
      (a recid missing from the cache or without its record JSON), ties by recid;
    - ``size-asc`` / ``size-desc``: total bytes of the record's files (unknown sizes last);
    - ``recid``: numeric recid order; ``file``: the order given (the recid list's order).
    """
    if order not in ORDERS:
        raise InputError(f"unknown order {order!r} (one of {', '.join(ORDERS)})", field="order")
    entries = cache.entries if isinstance(cache, MasterCache) else cache
    facts: list[_Fact] = []
    for index, recid in enumerate(recids):
        entry = entries.get(recid)
        meta = entry.get("record") if entry else None
        category = category_of(meta if isinstance(meta, Mapping) else None)
        facts.append((index, recid, category, entry_size(entry)))
    if order in _SORT_KEYS:
        facts.sort(key=_SORT_KEYS[order])
    return [
        OrderDecision(
            recid=recid, position=position, category=category, size=size, reason=_reason(order, index, category, size)
        )
        for position, (index, recid, category, size) in enumerate(facts)
    ]


_Fact = tuple[int, str, str, int | None]  # (index in the input, recid, category, size)
_RANK = {c: i for i, c in enumerate(CATEGORIES)}
_UNKNOWN = 1 << 62
_SORT_KEYS: dict[str, Callable[[_Fact], Any]] = {
    "priority": lambda f: (_RANK[f[2]], recid_key(f[1])),
    "size-asc": lambda f: (f[3] is None, f[3] if f[3] is not None else _UNKNOWN, recid_key(f[1])),
    "size-desc": lambda f: (f[3] is None, -(f[3] or 0), recid_key(f[1])),
    "recid": lambda f: recid_key(f[1]),
    # "file": the input order, kept
}


def _reason(order: str, index: int, category: str, size: int | None) -> str:
    if order == "priority":
        return f"priority {_RANK[category] + 1}/{len(CATEGORIES)}: {WHY[category]}; ties by recid"
    if order in ("size-asc", "size-desc"):
        shown = f"{size} bytes" if size is not None else "size unknown (last)"
        return f"{order}: {shown}"
    if order == "recid":
        return "recid order"
    return f"file order: entry {index + 1} of the list"
