"""The InvenioRDM / NRP (oarepo) target.

Speaks the REST API in ``docs/repositories-api.md``: drafts at ``/api/records`` (or at an
NRP model's ``links.records`` found through ``/.well-known/repository``), files with ``L``
or ``M`` transfers (``upload.targets.invenio_files``), publish directly or through the server's
``publish_draft`` request (``upload.targets.invenio_publish``), new versions. The options
and the NRP discovery, settled once per target, are ``upload.targets.invenio_setup``'s;
what it does as Zenodo's target does (the HTTP session, the draft and file checks before
a request) is ``upload.targets.drafts``'. URLs come from the server's ``links`` wherever
the server gives them.

Requests that create something (draft, file entry, publish request) are never repeated
blindly. File entries and publish requests are checked here after an unclear failure (the
file list, the request list, the draft) before another try. A draft create that may have
happened is not guessed at: it is raised (``maybe_applied``) to the pipeline, which
searches for the draft, patiently because search indexes lag, before it creates again
(``pipeline.job.RecordJob._create``), so no run leaves two drafts for a recid.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ferry.core.config import TargetConfig
from ferry.core.errors import Conflict, TargetNotFound, ValidationError
from ferry.core.retry import RetryPolicy, retry
from upload.targets.base import (
    Abilities,
    Progress,
    PublishOutcome,
    RecordState,
    RemoteFile,
    RemoteRecord,
    Target,
    TransferType,
)
from upload.targets.drafts import DraftTarget, Wording
from upload.targets.http import Where, field_errors
from upload.targets.invenio_files import FileSettings, FileTransfers
from upload.targets.invenio_publish import Publishing
from upload.targets.invenio_setup import OPTION_DEFAULTS, PATH_OPTIONS, discover, hits

log = logging.getLogger(__name__)


class InvenioTarget(DraftTarget[FileTransfers]):
    """An InvenioRDM/NRP repository as a ``upload.targets.base.Target``. One HTTP session per instance."""

    abilities = Abilities(
        hashes=("md5",),
        drafts=True,
        publish=True,
        versions=True,
        multipart=True,
        metadata=True,
        search=True,
        claims=True,
        metadata_only=True,  # files.enabled = false
    )

    wording = Wording(
        system="InvenioRDM",
        target="an InvenioRDM target",
        record="record",
        locked="files and metadata locked",
        limit="the target's",
        server="the server",
    )
    option_defaults = OPTION_DEFAULTS
    path_options = PATH_OPTIONS

    def _set_up(self, config: TargetConfig) -> None:
        settings = self.options
        self._settings = FileSettings(
            multipart_threshold=config.multipart_threshold,
            part_size=config.part_size,
            parts_in_flight=int(settings["parts_in_flight"]),
            checksum_timeout=float(settings["checksum_timeout"]),
        )
        self._files = FileTransfers(self.http, self._settings)
        # Whole-file attempts (init, content, commit, verify); each request retries on its own too.
        self._file_policy = RetryPolicy(
            attempts=int(settings["file_attempts"]), base=self.http.policy.base, maximum=self.http.policy.maximum
        )
        self._strict = bool(settings["strict_metadata"])
        self._create_url = self.http.url("api/records")
        self._search_url = self.http.url("api/user/records")
        self._publishing = Publishing(self.http, self.http.url("api/requests"))
        self._ready = False
        self._ready_lock = asyncio.Lock()

    def plan_file(self, size: int) -> TransferType:
        return self._files.plan(size)

    # --- discovery ------------------------------------------------------------------------

    async def _ensure_ready(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                if self.config.model:
                    await self._discover(self.config.model)
                self._ready = True

    async def _discover(self, model: str) -> None:
        found = await discover(self.http, self.config, model)
        if not found.multipart:
            self._settings = dataclasses.replace(self._settings, multipart=False)
            self._files.settings = self._settings
        if found.requests_url is not None:
            self._publishing.requests_url = found.requests_url
        self._create_url = found.create_url
        if found.search_url is not None:
            self._search_url = found.search_url

    # --- records --------------------------------------------------------------------------

    def _record(self, body: Any, recid: str) -> RemoteRecord:
        body, links = self._answered(body, recid)
        published = bool(body.get("is_published", False))
        state: RecordState = "draft" if body.get("is_draft", not published) else "published"
        errors = {k: tuple(v) for k, v in field_errors(body).items()}
        revision = body.get("revision_id")
        return RemoteRecord(
            id=str(body["id"]),
            recid=recid,
            state=state,
            links=links,
            revision=revision if isinstance(revision, int) else None,
            errors=errors,
        )

    def _checked(self, rec: RemoteRecord, what: str) -> RemoteRecord:
        if rec.errors:
            details = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(rec.errors.items()))
            log.warning("record %s: %s: the server reports invalid metadata (%s)", rec.recid, what, details)
            if self._strict:
                raise ValidationError(
                    f"{what}: the server saved draft {rec.id} but reports invalid metadata",
                    errors=rec.errors,
                    recid=rec.recid,
                )
        return rec

    def _with_parent(self, body: Mapping[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(dict(body))
        if self.config.community or self.config.workflow:
            parent = out.setdefault("parent", {})
            if self.config.community:
                parent.setdefault("communities", {})["default"] = self.config.community
            if self.config.workflow:
                parent["workflow"] = self.config.workflow
        return out

    async def find(self, recid: str, query: str) -> RemoteRecord | None:
        await self._ensure_ready()
        where = Where("search", recid)
        resp = await self.http.request("GET", self._search_url, where, params={"q": query, "size": "25"})
        found = hits(resp.body)
        if not found:
            return None
        drafts = [h for h in found if h.get("is_draft", not h.get("is_published", False))]
        pool = sorted(drafts or found, key=lambda h: str(h.get("created", "")))
        ids = sorted({str(h.get("id")) for h in pool})
        if len(ids) > 1:
            log.warning(
                "record %s: %d %s on the target (%s); using %s",
                recid,
                len(ids),
                "drafts" if drafts else "records",
                ", ".join(ids),
                pool[0].get("id"),
            )
        # Search hits can be stale (a draft deleted or published within the index's refresh
        # interval) or trimmed: each is read itself for fresh state, links and revision. A hit
        # that is gone gives way to the next one, drafts first, then the published records,
        # so a stale hit is never returned and never hides a record that exists.
        rest = sorted((h for h in found if h not in drafts), key=lambda h: str(h.get("created", "")))
        for candidate in pool + [h for h in rest if h not in pool]:
            hit = self._record(candidate, recid)
            if "self" not in hit.links:
                return hit
            # A draft published since it was indexed has no draft any more: its record does.
            for link in (hit.links["self"], hit.links.get("record")):
                current = await self._read(link, recid, where.what) if link else None
                if current is not None:
                    return current
            log.info("record %s: search hit %s is gone (deleted since it was indexed)", recid, hit.id)
        return None

    async def claimants(self, recid: str, query: str) -> list[RemoteRecord]:
        """``ClaimingTarget``: the search's records for ``recid``, oldest ``created`` first."""
        await self._ensure_ready()
        where = Where("search (claim)", recid)
        resp = await self.http.request("GET", self._search_url, where, params={"q": query, "size": "100"})
        found = sorted(hits(resp.body), key=lambda h: (str(h.get("created", "")), str(h.get("id", ""))))
        out: dict[str, RemoteRecord] = {}
        for hit in found:
            rec = self._record(hit, recid)
            out.setdefault(rec.id, rec)  # a record and its draft are one claim
        return list(out.values())

    async def discard(self, rec: RemoteRecord) -> None:
        """``ClaimingTarget``: delete a draft never published (``DELETE .../draft``)."""
        url = self._create_url.rstrip("/") + "/" + quote(rec.id, safe="") + "/draft"
        await self._discard_at(url, rec, "discard draft", (200, 202, 204))

    async def get(self, recid: str, record_id: str) -> RemoteRecord | None:
        await self._ensure_ready()
        # Only an id is known here (from the ledger), so the URL is built: <collection>/<id>[/draft].
        base = self._create_url.rstrip("/") + "/" + quote(record_id, safe="")
        for link in (base + "/draft", base):
            found = await self._read(link, recid, "read record")
            if found is not None:
                return found
        return None

    async def create(self, recid: str, body: Mapping[str, Any]) -> RemoteRecord:
        await self._ensure_ready()
        where = Where("create draft", recid)
        # "safe": only failures that certainly never reached the server are repeated here. A
        # lost answer (timeout, 502/504) may have created the draft: it is raised with
        # maybe_applied set, and the pipeline looks for the draft before asking again.
        resp = await self.http.request(
            "POST", self._create_url, where, json=self._with_parent(body), expect=(200, 201), retry_mode="safe"
        )
        return self._checked(self._record(resp.body, recid), where.what)

    async def update_metadata(self, rec: RemoteRecord, body: Mapping[str, Any]) -> RemoteRecord:
        self._require_draft(rec, "update metadata")
        resp = await self.http.request(
            "PUT", rec.links["self"], Where("update metadata", rec.recid), json=self._with_parent(body)
        )
        return self._checked(self._record(resp.body, rec.recid), "update metadata")

    # --- files ----------------------------------------------------------------------------

    async def _put(
        self, rec: RemoteRecord, key: str, path: Path, size: int, md5: str | None, progress: Progress | None
    ) -> RemoteFile:
        # Whole-file attempts: a failed init, content, commit or verify starts the file over.
        return await retry(
            lambda: self._files.put(rec, key, path, size, md5, progress),
            policy=self._file_policy,
            what=f"record {rec.recid} upload {key}",
        )

    # --- publish and versions -------------------------------------------------------------

    async def publish(self, rec: RemoteRecord) -> PublishOutcome:
        self._require_draft(rec, "publish")
        return await self._publishing.publish(rec)

    async def new_version(self, rec: RemoteRecord) -> RemoteRecord:
        if rec.state != "published" or "versions" not in rec.links:
            raise Conflict(f"new version: record {rec.id} is not a published record", recid=rec.recid)
        where = Where("new version", rec.recid)
        # InvenioRDM answers a second POST with the same next draft (it never makes two), so
        # repeating this POST after an unclear failure is safe.
        resp = await self.http.request("POST", rec.links["versions"], where, expect=(200, 201))
        draft = self._record(resp.body, rec.recid)
        if not await self._files.list(draft):
            link = draft.links.get("files-import") or draft.links["self"].rstrip("/") + "/actions/files-import"
            try:
                await self.http.request(
                    "POST", link, Where("import files", rec.recid), expect=(200, 201), retry_mode="safe"
                )
            except TargetNotFound:
                log.info("record %s: the server cannot import files into new versions; all will be uploaded", rec.recid)
        return draft


if TYPE_CHECKING:  # mypy proves InvenioTarget satisfies the Target protocol
    _conforms: type[Target] = InvenioTarget
