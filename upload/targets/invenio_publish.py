"""Publishing an InvenioRDM / NRP draft: directly, or through the server's ``publish_draft`` request.

Split from ``upload.targets.invenio`` because publishing is a protocol of its own: an
InvenioRDM server offers ``links.publish``; an NRP (oarepo) server may instead offer a
``publish_draft`` request to create, submit and (for a curator) accept. Each step may
have happened although its answer was lost, and none may simply be repeated (a second
publish, request or submit answers an error), so after an unclear failure the state is
read back first: the draft (gone: published), the record's or the user's open requests,
the request itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ferry.core.errors import Conflict, FerryError, TargetError, TargetNotFound
from upload.targets.base import PublishOutcome, RemoteRecord
from upload.targets.http import HttpClient, Where, maybe_applied, sleep_backoff
from upload.targets.invenio_setup import hits

log = logging.getLogger(__name__)

PUBLISH_REQUEST = "publish_draft"
OPEN_REQUEST_STATES = ("created", "submitted", "accepted")


class Publishing:
    """The publish step of one target; ``requests_url`` lists the user's requests (NRP may move it)."""

    def __init__(self, http: HttpClient, requests_url: str) -> None:
        self.http = http
        self.requests_url = requests_url

    async def publish(self, rec: RemoteRecord) -> PublishOutcome:
        """Publish the draft ``rec`` (the caller has checked it is one)."""
        applicable = rec.links.get("applicable-requests") or rec.links.get("applicable_requests")
        if applicable:
            where = Where("publish request", rec.recid)
            types = hits((await self.http.request("GET", applicable, where)).body)
            offered = next((t for t in types if t.get("type_id") == PUBLISH_REQUEST), None)
            if offered is not None:
                return await self._by_request(rec, offered)
            existing = await self._existing_request(rec)
            if existing is not None:  # a previous run created it
                return await self._advance_request(rec, existing)
        if "publish" in rec.links:
            return await self._direct(rec)
        raise Conflict("publish: the server offers neither a publish action nor a publish request", recid=rec.recid)

    async def _direct(self, rec: RemoteRecord) -> PublishOutcome:
        where = Where("publish", rec.recid)
        attempts = self.http.policy.attempts
        for attempt in range(1, attempts + 1):
            try:
                resp = await self.http.request(
                    "POST", rec.links["publish"], where, expect=(200, 201, 202), retry_mode="safe"
                )
            except FerryError as exc:
                if not (exc.retryable and maybe_applied(exc)) or attempt == attempts:
                    raise
                # Publishing removes the draft: if it is gone, the publish went through.
                if not await self._draft_exists(rec):
                    return PublishOutcome("published", rec.id)
                await sleep_backoff(attempt)
                continue
            body = resp.body if isinstance(resp.body, Mapping) else {}
            return PublishOutcome("published", str(body.get("id") or rec.id))
        raise AssertionError("unreachable")

    async def _draft_exists(self, rec: RemoteRecord) -> bool:
        try:
            await self.http.request("GET", rec.links["self"], Where("read draft", rec.recid))
        except TargetNotFound:
            return False
        return True

    async def _by_request(self, rec: RemoteRecord, offered: Mapping[str, Any]) -> PublishOutcome:
        where = Where("create publish request", rec.recid)
        create = ((offered.get("links") or {}).get("actions") or {}).get("create")
        if not create:
            raise Conflict(f"{where.what}: this user may not create a publish_draft request", recid=rec.recid)
        attempts = self.http.policy.attempts
        for attempt in range(1, attempts + 1):
            try:
                resp = await self.http.request(
                    "POST", create, where, json={"payload": {}}, expect=(200, 201), retry_mode="safe"
                )
            except FerryError as exc:
                if not (exc.retryable and maybe_applied(exc)) or attempt == attempts:
                    raise
                existing = await self._existing_request(rec)
                if existing is not None:
                    return await self._advance_request(rec, existing)
                await sleep_backoff(attempt)
                continue
            return await self._advance_request(rec, resp.body if isinstance(resp.body, Mapping) else {})
        raise AssertionError("unreachable")

    async def _existing_request(self, rec: RemoteRecord) -> Mapping[str, Any] | None:
        """An open publish request on this draft (from an earlier, interrupted run)."""
        where = Where("list requests", rec.recid)
        found: list[Mapping[str, Any]] = []
        link = rec.links.get("requests")
        if link:
            try:
                found = hits((await self.http.request("GET", link, where)).body)
            except TargetNotFound:
                link = None
        if not link:
            # No per-record listing: the user's requests, filtered by topic (NRP /api/requests).
            everything = hits((await self.http.request("GET", self.requests_url, where)).body)
            found = [r for r in everything if rec.id in (r.get("topic") or {}).values()]
        for request in found:
            if request.get("type") == PUBLISH_REQUEST and request.get("status") in OPEN_REQUEST_STATES:
                return request
        return None

    async def _advance_request(self, rec: RemoteRecord, request: Mapping[str, Any]) -> PublishOutcome:
        """Submit a created request; report accepted (published) or waiting for a curator."""
        request_id = str(request.get("id")) if request.get("id") else None
        status = request.get("status")
        if status == "created":
            status = (await self._submit(rec, request, request_id)).get("status")
        if status == "accepted":
            return PublishOutcome("published", rec.id, request_id)
        if status == "submitted":
            log.info("record %s: publish request %s waits for a curator", rec.recid, request_id)
            return PublishOutcome("pending-review", rec.id, request_id)
        raise TargetError(f"publish request {request_id} is {status}", recid=rec.recid)

    async def _submit(self, rec: RemoteRecord, request: Mapping[str, Any], request_id: str | None) -> Mapping[str, Any]:
        """Submit a created request; the request as the server holds it afterwards."""
        where = Where("submit publish request", rec.recid)
        submit = ((request.get("links") or {}).get("actions") or {}).get("submit")
        if not submit:
            raise Conflict(f"{where.what}: request {request_id} cannot be submitted by this user", recid=rec.recid)
        # Submitting twice answers an error, so an unclear failure is checked by reading the request.
        try:
            resp = await self.http.request("POST", submit, where, json={}, expect=(200, 201, 202), retry_mode="safe")
            return resp.body if isinstance(resp.body, Mapping) else {}
        except FerryError as exc:
            self_link = (request.get("links") or {}).get("self")
            if not (exc.retryable and maybe_applied(exc)) or not self_link:
                raise
            now: Mapping[str, Any] = (await self.http.request("GET", self_link, where)).body or {}
            if now.get("status") == "created":
                raise
            return now
