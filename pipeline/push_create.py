"""`ferry push`'s create on an InvenioRDM-like target: never a second draft for one push.

A push that is killed after its create reached the server, but before the ledger learnt
the new draft's id, leaves a draft nobody knows the id of. The re-run must find it before it
creates another. InvenioRDM offers no lookup but its search, and the search lags behind
writes, so a missed look is no proof. Two rules make the twin impossible:

1. The marker. Every create of one push (directory x target) carries the same identifier,
   ``ferry-push:<token>`` (scheme ``other``), the token kept in the push ledger before the
   POST is sent (``Ledger.begin_create(token=...)``). The re-run looks for it by an exact
   identifier query, not by the title (another directory may share it; and
   ``title:"..."`` does not name a field of an InvenioRDM record, so it matched nothing).
2. The oldest marked draft wins. A re-run whose look missed creates a draft with the same
   marker, then waits until the search shows its own draft: an index refresh makes every
   older write visible at once, so from then on the interrupted run's draft is visible too.
   The oldest is the push's record; a newer one of ours is discarded before any file is
   sent. It is the rule of ``pipeline.claims`` (two ``ferry bulk`` runs), except that the
   older draft is this same push's and so is adopted, not reported as a lost claim.

Targets without ``abilities.claims`` (Zenodo) keep the title search of ``pipeline.push``.

A create left pending in a ledger an older dataferry wrote (schema 1 or 2: the row's
``create_legacy``) may have made a draft that carries no marker: the marker came on
2026-12-04, and the drafts created before it carry none, so a look for the token alone
missed such a draft and the re-run made a twin. The look for a legacy intent also asks for
a draft with the push's title and no marker at all (``metadata.title``, the field an
InvenioRDM record has); a draft another push marked is never taken for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ferry.core.errors import TargetError
from pipeline.claims import VISIBLE_DELAYS
from upload.targets.base import ClaimingTarget, RemoteRecord, Target

log = logging.getLogger(__name__)

SEARCH_DELAYS = (0.5, 1.0, 2.0, 4.0)  # a create whose answer was lost: the index lags
MARKER_PREFIX = "ferry-push:"
MARKED_PROFILES = frozenset({"inveniordm", "nrp-particles"})  # documents with metadata.identifiers


def marks(profile: str, target: Target) -> bool:
    """Whether this push's creates carry the marker and are settled by the oldest-wins rule."""
    return profile in MARKED_PROFILES and target.abilities.claims and isinstance(target, ClaimingTarget)


def marked(body: Mapping[str, Any], token: str) -> dict[str, Any]:
    """``body`` with the push's marker among its identifiers (the others kept)."""
    metadata = dict(body.get("metadata") or {})
    idents = [i for i in metadata.get("identifiers") or [] if not _is_marker(i)]
    metadata["identifiers"] = [*idents, {"identifier": MARKER_PREFIX + token, "scheme": "other"}]
    return {**body, "metadata": metadata}


def marker_query(token: str) -> str:
    return f'metadata.identifiers.identifier:"{MARKER_PREFIX}{token}"'


def unmarked_title_query(title: str) -> str:
    """Drafts with this title that no push marked: what a push made before markers existed."""
    quoted = title.replace("\\", "\\\\").replace('"', '\\"')
    prefix = MARKER_PREFIX.replace(":", "\\:")
    return f'metadata.title:"{quoted}" AND -metadata.identifiers.identifier:{prefix}*'


def _is_marker(ident: object) -> bool:
    return isinstance(ident, Mapping) and str(ident.get("identifier", "")).startswith(MARKER_PREFIX)


async def find_lost_create(
    target: Target, name: str, token: str | None, title: str, *, legacy: bool = False
) -> RemoteRecord | None:
    """The draft of an interrupted create, searched a few times (the index lags): by the
    marker ``token`` when the push marks its creates, else by the title (Zenodo). A
    ``legacy`` intent (an older ledger's) is also looked for as an unmarked draft of ``title``."""
    queries = [marker_query(token)] if token else [f'title:"{title}"']
    if token and legacy:
        queries.append(unmarked_title_query(title))
    for delay in (0.0, *SEARCH_DELAYS):
        await asyncio.sleep(delay)
        for query in queries:
            found = await target.find(name, query)
            if found is not None and found.state == "draft":
                log.info("push %s: the interrupted create had happened: using draft %s", name, found.id)
                return found
    return None


async def keep_oldest(
    target: Target,
    name: str,
    token: str,
    ours: RemoteRecord,
    *,
    delays: tuple[float, ...] = VISIBLE_DELAYS,
) -> RemoteRecord:
    """The push's record after ``ours`` was created: ``ours``, or the older draft with the same
    marker (an interrupted run's create the search had not shown yet), ``ours`` then discarded."""
    if not isinstance(target, ClaimingTarget):
        return ours
    claimer: ClaimingTarget = target
    query = marker_query(token)
    seen: list[RemoteRecord] = []
    for delay in delays:
        if delay:
            await asyncio.sleep(delay)
        seen = await claimer.claimants(name, query)
        if any(r.id == ours.id for r in seen):
            break
    else:
        log.warning(
            "push %s: the target's search has not shown the new draft %s after %.0f s; an earlier "
            "interrupted create of this push could not be ruled out",
            name,
            ours.id,
            sum(delays),
        )
        return ours
    oldest = seen[0]
    if oldest.id == ours.id:
        return ours
    try:
        await claimer.discard(ours)
    except TargetError as exc:
        log.warning("push %s: could not discard the newer draft %s: %s", name, ours.id, exc)
    log.info(
        "push %s: draft %s was made by an interrupted run of this push: using it, draft %s discarded",
        name,
        oldest.id,
        ours.id,
    )
    return await target.get(name, oldest.id) or oldest
