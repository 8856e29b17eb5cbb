"""The Zenodo target: the legacy deposit API as Zenodo serves it (``docs/repositories-api.md``).

    [targets.zen]
    type = "zenodo"
    url = "https://zenodo.org"        # the API is under {url}/api
    token_file = "~/.config/ferry/zenodo.token"   # or token_env
    profile = "zenodo"                # the default for this type
    publish = false

A deposition is a draft (``submitted: false``) until published; its files go through the
bucket API (``upload.targets.zenodo_files``) and lock at publication. What it does as the
InvenioRDM target does (the HTTP session, the draft and file checks before a request) is
``upload.targets.drafts``'. A published
deposition gets a new version with ``actions/newversion``, whose answer is the ORIGINAL
deposition: the new draft is at ``links.latest_draft``. Asking again while that draft has
files answers 400 "Please remove all files first." although the draft is there: that
answer, and a lost one, lead to the open draft, never to an error or a second draft.

Finding the deposition of a source recid uses the deposition search (``q=`` the profile's
query on the metadata). Zenodo's index lags its writes by seconds: a miss right after a
create proves nothing. This target does not guess: a create whose answer was lost is
raised (``maybe_applied``), and the pipeline searches patiently before it creates again
(``pipeline.job.RecordJob._create``); its ledger keeps the deposition id once known, so
later runs read it directly (``get``) instead of searching. Two runs on one Zenodo (other
ledgers) that both miss the other's fresh deposition settle it by ``pipeline.claims``: the
oldest deposition wins (``claimants``), the loser deletes its own (``discard``).

Limits (100 files, 50 GB per deposition) come from the config (the type's defaults,
``upload.targets.ZENODO_DEFAULTS``): the pipeline refuses a plan over them before any
write; rate defaults are 100/min, 5000/h.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ferry.core.config import TargetConfig
from ferry.core.errors import Conflict, FerryError, TargetError, ValidationError
from upload.targets.base import (
    Abilities,
    PublishOutcome,
    RecordState,
    RemoteRecord,
    Target,
    TransferType,
)
from upload.targets.drafts import DraftTarget, Wording
from upload.targets.http import Where, maybe_applied, sleep_backoff
from upload.targets.zenodo_files import BucketFiles

log = logging.getLogger(__name__)

NEW_VERSION_HAS_FILES = "remove all files first"
READ = "read deposition"  # what a GET of one deposition is called in messages
# Extra keys a [targets.X] section of type zenodo takes, with their defaults.
OPTION_DEFAULTS: dict[str, int | float] = {"connections": 8, "read_timeout": 300.0}


class ZenodoTarget(DraftTarget[BucketFiles]):
    """Zenodo depositions as a ``upload.targets.base.Target``. One HTTP session per instance."""

    abilities = Abilities(
        hashes=("md5",),
        drafts=True,
        publish=True,
        versions=True,
        metadata=True,
        search=True,
        sub_paths=False,  # bucket keys are flat: a '/' is refused
        claims=True,  # two runs that both missed the other's fresh deposition keep the older
    )

    wording = Wording(
        system="Zenodo",
        target="a Zenodo target",
        record="deposition",
        locked="files locked",
        limit="Zenodo's",
        server="Zenodo",
    )
    option_defaults = OPTION_DEFAULTS

    def _set_up(self, config: TargetConfig) -> None:
        self._files = BucketFiles(self.http, read_timeout=float(self.options["read_timeout"]))
        self._depositions = self.http.url("api/deposit/depositions")
        # The metadata each deposition had when last read or written: an update with the
        # same document is not sent again (a re-run of a finished upload writes nothing).
        self._known: dict[str, dict[str, Any]] = {}

    def plan_file(self, size: int) -> TransferType:
        return "L"  # one bucket PUT per file, whatever its size

    # --- depositions ----------------------------------------------------------------------

    def _record(self, body: Any, recid: str) -> RemoteRecord:
        body, links = self._answered(body, recid)
        # submitted: published at least once; its files are locked from then on, even while
        # its metadata is reopened with actions/edit (state "inprogress").
        state: RecordState = "published" if body.get("submitted") else "draft"
        html = links.get("html", "")
        if "record_html" not in links and html.endswith(f"/deposit/{body['id']}"):
            # A draft's page (links.html, /deposit/<id>) is its owner's edit form; what it
            # will be published as is /records/<id> (a deposition's id is its record's):
            # the page the parts of a split record link to (pipeline/job_split.page_of).
            links["record_html"] = html[: -len(f"/deposit/{body['id']}")] + f"/records/{body['id']}"
        metadata = body.get("metadata")
        if isinstance(metadata, Mapping):
            self._known[str(body["id"])] = _own(metadata)
        return RemoteRecord(id=str(body["id"]), recid=recid, state=state, links=links)

    async def find(self, recid: str, query: str) -> RemoteRecord | None:
        where = Where("search depositions", recid)
        resp = await self.http.request("GET", self._depositions, where, params={"q": query, "size": "100"})
        found = [h for h in (resp.body if isinstance(resp.body, list) else []) if isinstance(h, Mapping)]
        if not found:
            return None
        drafts = [h for h in found if not h.get("submitted")]
        if drafts:
            pool = sorted(drafts, key=lambda h: str(h.get("created", "")))
            if len(pool) > 1:
                ids = ", ".join(str(h.get("id")) for h in pool)
                log.warning("record %s: %d drafts on Zenodo (%s); using %s", recid, len(pool), ids, pool[0]["id"])
        else:
            pool = []
        # Then the published versions, the newest first.
        pool += sorted((h for h in found if h.get("submitted")), key=lambda h: _as_int(h.get("id")), reverse=True)
        # Search hits may be stale: each deposition is read itself for its current state and
        # links; one deleted since it was indexed (a claim loser's) gives way to the next, so
        # it never hides a deposition that exists.
        for candidate in pool:
            hit = self._record(candidate, recid)
            current = await self._read(hit.links.get("self", f"{self._depositions}/{quote(hit.id)}"), recid, READ)
            if current is not None:
                return current
        return None

    async def claimants(self, recid: str, query: str) -> list[RemoteRecord]:
        """``ClaimingTarget``: the depositions the search shows for ``recid``, the oldest
        first (deposition ids grow with each create: the same order in every run); the
        versions of one concept are one claim."""
        where = Where("search depositions (claim)", recid)
        resp = await self.http.request("GET", self._depositions, where, params={"q": query, "size": "100"})
        found = [h for h in (resp.body if isinstance(resp.body, list) else []) if isinstance(h, Mapping)]
        found.sort(key=lambda h: (_as_int(h.get("conceptrecid")), _as_int(h.get("id"))))
        out: dict[str, RemoteRecord] = {}
        known = dict(self._known)  # a hit's metadata may be stale: keep what direct reads said
        for hit in found:
            out.setdefault(str(hit.get("conceptrecid") or hit.get("id")), self._record(hit, recid))
        self._known = known
        return list(out.values())

    async def discard(self, rec: RemoteRecord) -> None:
        """``ClaimingTarget``: delete a deposition never published; a missing one is no error."""
        url = rec.links.get("self", f"{self._depositions}/{quote(rec.id)}")
        await self._discard_at(url, rec, "discard deposition", (201, 202, 204))

    async def get(self, recid: str, record_id: str) -> RemoteRecord | None:
        if not record_id.isdigit():
            return None  # not a Zenodo deposition id (a ledger of another target type)
        return await self._read(f"{self._depositions}/{record_id}", recid, READ)

    async def create(self, recid: str, body: Mapping[str, Any]) -> RemoteRecord:
        where = Where("create deposition", recid)
        # "safe": a lost answer may have created it; the pipeline looks before asking again.
        resp = await self.http.request(
            "POST", self._depositions, where, json=dict(body), expect=(200, 201), retry_mode="safe"
        )
        return self._record(resp.body, recid)

    async def read_metadata(self, rec: RemoteRecord) -> dict[str, Any]:
        """The deposition's current metadata document (``{"metadata": {...}}``)."""
        body = (await self.http.request("GET", rec.links["self"], Where("read metadata", rec.recid))).body
        metadata = body.get("metadata") if isinstance(body, Mapping) else None
        return {"metadata": _own(metadata) if isinstance(metadata, Mapping) else {}}

    async def update_metadata(self, rec: RemoteRecord, body: Mapping[str, Any]) -> RemoteRecord:
        self._require_draft(rec, "update metadata")
        wanted = body.get("metadata")
        if isinstance(wanted, Mapping) and self._known.get(rec.id) == _own(wanted):
            log.debug("record %s: metadata of deposition %s unchanged; not sent", rec.recid, rec.id)
            return rec
        resp = await self.http.request("PUT", rec.links["self"], Where("update metadata", rec.recid), json=dict(body))
        return self._record(resp.body, rec.recid)

    # --- publish and versions -------------------------------------------------------------

    async def publish(self, rec: RemoteRecord) -> PublishOutcome:
        self._require_draft(rec, "publish")
        where = Where("publish", rec.recid)
        link = rec.links.get("publish") or rec.links["self"].rstrip("/") + "/actions/publish"
        attempts = self.http.policy.attempts
        for attempt in range(1, attempts + 1):
            try:
                await self.http.request("POST", link, where, expect=(200, 201, 202), retry_mode="safe")
            except FerryError as exc:
                if not (exc.retryable and maybe_applied(exc)) or attempt == attempts:
                    raise
                # A lost answer: the deposition says whether the publish went through.
                now = await self._read(rec.links["self"], rec.recid, READ)
                if now is not None and now.state == "published":
                    return PublishOutcome("published", now.id)
                await sleep_backoff(attempt)
                continue
            return PublishOutcome("published", rec.id)
        raise AssertionError("unreachable")

    async def new_version(self, rec: RemoteRecord) -> RemoteRecord:
        if rec.state != "published":
            raise Conflict(f"new version: deposition {rec.id} is not published", recid=rec.recid)
        where = Where("new version", rec.recid)
        link = rec.links.get("newversion") or rec.links["self"].rstrip("/") + "/actions/newversion"
        try:
            resp = await self.http.request("POST", link, where, expect=(200, 201), retry_mode="safe")
            answer: Any = resp.body
        except ValidationError as exc:
            # Asked again while the new draft has files: it is open already; use it.
            if NEW_VERSION_HAS_FILES not in exc.message.lower():
                raise
            log.info("record %s: a new version of %s is open already; using it", rec.recid, rec.id)
            answer = None
        except FerryError as exc:
            if not (exc.retryable and maybe_applied(exc)):
                raise
            answer = None  # lost: the original's latest_draft tells whether it happened
        draft = await self._latest_draft(rec, answer)
        if draft is None:
            raise TargetError(f"new version: Zenodo made no draft of deposition {rec.id}", recid=rec.recid)
        return draft

    async def _latest_draft(self, rec: RemoteRecord, answer: Any) -> RemoteRecord | None:
        """The open new-version draft of ``rec``'s concept, from an answer or by reading ``rec``."""
        if isinstance(answer, Mapping) and not answer.get("submitted") and answer.get("id"):
            return self._record(answer, rec.recid)  # zenodo-rdm may answer with the draft itself
        if not isinstance(answer, Mapping):
            original = (await self.http.request("GET", rec.links["self"], Where(READ, rec.recid))).body
            answer = original if isinstance(original, Mapping) else {}
        link = (answer.get("links") or {}).get("latest_draft")
        if not link:
            return None
        draft = await self._read(self.http.url(link), rec.recid, READ)
        if draft is None or draft.state != "draft":
            return None
        return draft


def _own(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A deposition's metadata without what Zenodo adds to every answer (``prereserve_doi``)."""
    return {k: v for k, v in metadata.items() if k != "prereserve_doi"}


if TYPE_CHECKING:  # mypy proves ZenodoTarget satisfies the Target protocol
    _conforms: type[Target] = ZenodoTarget


def _as_int(value: object) -> int:
    """A deposition or concept id as a number, for ordering (a missing one sorts last)."""
    try:
        return int(str(value))
    except ValueError:
        return 1 << 62
