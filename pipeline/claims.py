"""Claims: two runs that create a draft for the same recid at once keep only one.

The ledger lock is per destination; the target is shared. Two runs (other --dest, other
machines) whose searches lag both miss the other's fresh draft and both create one. After
its create, a run settles the claim on targets that declare ``abilities.claims``
(``upload.targets.base.ClaimingTarget``):

1. it waits until the search shows its own fresh draft. An index refresh makes every
   earlier write visible at once, so from then on every *older* draft of the recid is
   visible too (newer ones may not be, and need not be: they lose to this one);
2. the oldest create wins (ties by id, the same order in every run); a loser discards its
   own empty draft and stops that record with ``ClaimLost``, naming the winner. A re-run
   after the other run finished finds its record (published: skipped as already there).

Targets whose find() is a direct lookup of a deterministic key (an S3 prefix, a
directory) cannot make two records for a recid and declare no claims.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ferry.core.errors import Conflict, TargetError
from upload.targets.base import ClaimingTarget, RemoteRecord, Target

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long to wait for the search to show a fresh draft (InvenioRDM refreshes about once a
# second; a loaded cluster takes longer). The first look is immediate.
VISIBLE_DELAYS = (0.0, 0.25, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 8.0)

Call = Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]


class ClaimLost(Conflict):
    """Another run created this recid's record first; this run's draft was discarded."""


async def settle_claim(
    target: Target,
    recid: str,
    query: str,
    ours: RemoteRecord,
    call: Callable[[Callable[[], Awaitable[object]]], Awaitable[object]],
    *,
    delays: tuple[float, ...] = VISIBLE_DELAYS,
) -> None:
    """Return when ``ours`` (just created) is the recid's record; raise ``ClaimLost`` after
    discarding ``ours`` when an older one exists. ``call`` wraps each target call (the
    pipeline's circuit breaker)."""
    if not target.abilities.claims or not isinstance(target, ClaimingTarget):
        return
    claimer: ClaimingTarget = target
    seen: list[RemoteRecord] = []
    for delay in delays:
        if delay:
            await asyncio.sleep(delay)
        found = await call(lambda: claimer.claimants(recid, query))
        assert isinstance(found, list)
        seen = found
        if any(r.id == ours.id for r in seen):
            break
    else:
        # The index lags more than ~23 s: no older draft can be ruled out, but giving up
        # would fail every record on a slow index. Say so and go on.
        log.warning(
            "record %s: the target's search has not shown the new draft %s after %.0f s; "
            "a concurrent run on this target could not be ruled out",
            recid,
            ours.id,
            sum(delays),
        )
        return
    winner = seen[0]
    if winner.id == ours.id:
        return
    try:
        await call(lambda: claimer.discard(ours))
    except TargetError as exc:
        log.warning("record %s: could not discard draft %s after losing the claim: %s", recid, ours.id, exc)
    err = ClaimLost(
        f"another run created this record first ({winner.state} {winner.id}); this run's draft "
        f"{ours.id} was discarded, so the record is not duplicated. Run again once the other run "
        "has finished: the record is then found there",
        recid=recid,
    )
    err.retryable = False
    raise err
