"""The InvenioRDM / NRP (oarepo) target.

Speaks the REST API in ``docs/repositories-api.md``: drafts at ``/api/records`` (or at an
NRP model's ``links.records`` found through ``/.well-known/repository``), files with ``L``
or ``M`` transfers (``upload.targets.invenio_files``), publish directly or through the server's
``publish_draft`` request, new versions. URLs come from the server's ``links`` wherever
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
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ferry.core.checksums import Checksum
from ferry.core.config import ConfigError, Limits, Secret, TargetConfig
from ferry.core.errors import Conflict, FerryError, QuotaError, TargetError, TargetNotFound, ValidationError
from ferry.core.retry import RetryPolicy, request_policy, retry
from upload.targets.base import (
    Abilities,
    NotSupported,
    Progress,
    PublishOutcome,
    RecordState,
    RemoteFile,
    RemoteRecord,
    RequestLimiter,
    Target,
    TargetLimits,
    TransferType,
)
from upload.targets.http import HttpClient, Where, field_errors, maybe_applied, sleep_backoff
from upload.targets.invenio_files import FileSettings, FileTransfers

log = logging.getLogger(__name__)

PUBLISH_REQUEST = "publish_draft"
OPEN_REQUEST_STATES = ("created", "submitted", "accepted")


def hits(body: Any) -> list[Mapping[str, Any]]:
    """Items of an InvenioRDM list answer: ``{"hits": {"hits": [...]}}``, ``{"hits": [...]}`` or a list."""
    items: Any = body
    if isinstance(items, Mapping):
        items = items.get("hits", [])
        if isinstance(items, Mapping):
            items = items.get("hits", [])
    return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []


policy_from_limits = request_policy


# The keys of a [targets.X] section beyond TargetConfig's own fields, with their defaults.
# Anything else is refused: a misspelt option silently ignored is a setting the user
# believes in and does not have.
OPTION_DEFAULTS: dict[str, int | float | bool] = {
    "connections": 16,
    "read_timeout": 600.0,
    "parts_in_flight": 4,
    "checksum_timeout": 120.0,
    "file_attempts": 3,
    "strict_metadata": True,
}


# Path options (no default): `ca_file`, a PEM bundle of CAs to trust instead of the system's
# (a private or sandbox CA); TLS verification stays on.
PATH_OPTIONS = ("ca_file",)


def _ca_file(config: TargetConfig) -> str | None:
    value = config.options.get("ca_file")
    if value is None:
        return None
    path = Path(str(value)).expanduser() if isinstance(value, str) and value else None
    if path is None or not path.is_file():
        raise ConfigError(f"targets.{config.name}.ca_file must name a readable PEM file, not {value!r}")
    return str(path)


def _options(config: TargetConfig) -> dict[str, int | float | bool]:
    """The target's options with defaults filled in and types checked (ConfigError naming
    the key otherwise)."""
    where = f"targets.{config.name}"
    unknown = sorted(set(config.options) - set(OPTION_DEFAULTS) - set(PATH_OPTIONS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} "
            f"(an InvenioRDM target also takes: {', '.join(sorted([*OPTION_DEFAULTS, *PATH_OPTIONS]))})"
        )
    out = dict(OPTION_DEFAULTS)
    for key, value in config.options.items():
        if key in PATH_OPTIONS:
            continue
        default = OPTION_DEFAULTS[key]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = number and isinstance(value, int) and value > 0, "a whole number > 0"
        else:
            ok, kind = number and value > 0, "a number > 0"
        if not ok:
            raise ConfigError(f"{where}.{key} must be {kind}, not {value!r}")
        out[key] = value
    return out


class InvenioTarget:
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

    def __init__(
        self,
        config: TargetConfig,
        *,
        token: Secret | None = None,
        limiter: RequestLimiter | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        """``token``: the target's token as the run read it (once, ``pipeline.runtime.open_run``);
        None reads it from ``config`` here (tests, tools building a target on its own)."""
        if not config.url.startswith(("http://", "https://")):
            raise ConfigError(f"targets.{config.name}.url must be an http(s) URL, not {config.url!r}")
        options = _options(config)
        self.name = config.name
        self.config = config
        self.limits = TargetLimits(config.max_files_per_record, config.max_file_size, config.max_record_size)
        self.http = HttpClient(
            config.url,
            token if token is not None else config.token(),
            limiter=limiter,
            policy=policy,
            verify_tls=config.verify_tls,
            ca_file=_ca_file(config),
            connections=int(options["connections"]),
            read_timeout=float(options["read_timeout"]),
        )
        self._settings = FileSettings(
            multipart_threshold=config.multipart_threshold,
            part_size=config.part_size,
            parts_in_flight=int(options["parts_in_flight"]),
            checksum_timeout=float(options["checksum_timeout"]),
        )
        self._files = FileTransfers(self.http, self._settings)
        # Whole-file attempts (init, content, commit, verify); each request retries on its own too.
        self._file_policy = RetryPolicy(
            attempts=int(options["file_attempts"]), base=self.http.policy.base, maximum=self.http.policy.maximum
        )
        self._strict = bool(options["strict_metadata"])
        self._create_url = self.http.url("api/records")
        self._search_url = self.http.url("api/user/records")
        self._requests_url = self.http.url("api/requests")
        self._ready = False
        self._ready_lock = asyncio.Lock()

    @classmethod
    def from_config(
        cls,
        config: TargetConfig,
        limits: Limits | None = None,
        *,
        limiter: RequestLimiter | None = None,
        token: Secret | None = None,
    ) -> InvenioTarget:
        return cls(config, token=token, limiter=limiter, policy=policy_from_limits(limits or Limits()))

    def __repr__(self) -> str:
        return f"InvenioTarget({self.name!r}, {self.config.url!r})"

    async def __aenter__(self) -> InvenioTarget:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    @property
    def requests_sent(self) -> int:
        return self.http.requests_sent

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
        where = Where("NRP discovery")
        try:
            info = (await self.http.request("GET", ".well-known/repository", where)).body or {}
        except TargetNotFound:
            raise ConfigError(
                f"targets.{self.name}: model = {model!r} is set but {self.config.url} has no "
                "/.well-known/repository (not an NRP server? remove 'model' to use /api/records)"
            ) from None
        transfers = info.get("transfers")
        if isinstance(transfers, list) and "M" not in transfers:
            # An NRP server that does not list "M" gets every file as a single PUT.
            self._settings = dataclasses.replace(self._settings, multipart=False)
            self._files.settings = self._settings
        if (info.get("links") or {}).get("requests"):
            self._requests_url = self.http.url(info["links"]["requests"])
        models_link = (info.get("links") or {}).get("models")
        if not models_link:
            raise ConfigError(f"targets.{self.name}: {self.config.url} lists no models in /.well-known/repository")
        body = (await self.http.request("GET", models_link, where)).body
        found = _pick_model(body, model)
        if found is None:
            names = ", ".join(sorted(_model_names(body))) or "none"
            raise ConfigError(f"targets.{self.name}: the server has no model {model!r} (models: {names})")
        links = found.get("links") or {}
        if not links.get("records"):
            raise ConfigError(f"targets.{self.name}: model {model!r} has no records link")
        self._create_url = self.http.url(links["records"])
        # NRP: the model's "user records" listing, where present, searches drafts of this model only.
        search = links.get("user_records") or links.get("user-records")
        if search:
            self._search_url = self.http.url(search)
        log.info("target %s: model %s creates at %s", self.name, model, self._create_url)

    # --- records --------------------------------------------------------------------------

    def _record(self, body: Any, recid: str) -> RemoteRecord:
        if not isinstance(body, Mapping) or not body.get("id"):
            raise TargetError("the server answered without a record id", recid=recid)
        published = bool(body.get("is_published", False))
        state: RecordState = "draft" if body.get("is_draft", not published) else "published"
        links = {k: self.http.url(v) for k, v in (body.get("links") or {}).items() if isinstance(v, str)}
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
        hit = self._record(pool[0], recid)
        # Search hits can be stale or trimmed: read the record itself for fresh links/revision.
        if "self" in hit.links:
            try:
                body = (await self.http.request("GET", hit.links["self"], where)).body
                return self._record(body, recid)
            except TargetNotFound:
                return None  # deleted or published since the index saw it; the next search knows
        return hit

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
        try:
            await self.http.request("DELETE", url, Where("discard draft", rec.recid), expect=(200, 202, 204))
        except TargetNotFound:
            return

    async def get(self, recid: str, record_id: str) -> RemoteRecord | None:
        await self._ensure_ready()
        # Only an id is known here (from the ledger), so the URL is built: <collection>/<id>[/draft].
        base = self._create_url.rstrip("/") + "/" + quote(record_id, safe="")
        where = Where("read record", recid)
        for link in (base + "/draft", base):
            try:
                body = (await self.http.request("GET", link, where)).body
            except TargetNotFound:
                continue
            return self._record(body, recid)
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

    def _require_draft(self, rec: RemoteRecord, what: str, key: str | None = None) -> None:
        if rec.state != "draft" or "self" not in rec.links:
            raise Conflict(
                f"{what}: record {rec.id} is published (files and metadata locked; make a new version)",
                recid=rec.recid,
                file=key,
            )

    # --- files ----------------------------------------------------------------------------

    async def list_files(self, rec: RemoteRecord) -> dict[str, RemoteFile]:
        return await self._files.list(rec)

    async def put_file(
        self,
        rec: RemoteRecord,
        key: str,
        path: Path,
        size: int,
        expected: Checksum | None,
        progress: Progress | None = None,
    ) -> RemoteFile:
        self._require_draft(rec, "upload", key)
        if expected is not None and expected.algorithm != "md5":
            raise NotSupported(f"InvenioRDM verifies files by md5, not {expected.algorithm}", recid=rec.recid, file=key)
        md5 = expected.value if expected is not None else None
        if size > self.limits.max_file_size:
            raise QuotaError(
                f"{size} bytes is over the target's limit of {self.limits.max_file_size} per file",
                recid=rec.recid,
                file=key,
            )
        return await retry(
            lambda: self._files.put(rec, key, Path(path), size, md5, progress),
            policy=self._file_policy,
            what=f"record {rec.recid} upload {key}",
        )

    async def delete_file(self, rec: RemoteRecord, key: str) -> None:
        self._require_draft(rec, "delete file", key)
        await self._files.delete(rec, key)

    # --- publish and versions -------------------------------------------------------------

    async def publish(self, rec: RemoteRecord) -> PublishOutcome:
        self._require_draft(rec, "publish")
        applicable = rec.links.get("applicable-requests") or rec.links.get("applicable_requests")
        if applicable:
            where = Where("publish request", rec.recid)
            types = hits((await self.http.request("GET", applicable, where)).body)
            offered = next((t for t in types if t.get("type_id") == PUBLISH_REQUEST), None)
            if offered is not None:
                return await self._publish_by_request(rec, offered)
            existing = await self._existing_request(rec)
            if existing is not None:  # a previous run created it
                return await self._advance_request(rec, existing)
        if "publish" in rec.links:
            return await self._publish_direct(rec)
        raise Conflict("publish: the server offers neither a publish action nor a publish request", recid=rec.recid)

    async def _publish_direct(self, rec: RemoteRecord) -> PublishOutcome:
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

    async def _publish_by_request(self, rec: RemoteRecord, offered: Mapping[str, Any]) -> PublishOutcome:
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
            everything = hits((await self.http.request("GET", self._requests_url, where)).body)
            found = [r for r in everything if rec.id in (r.get("topic") or {}).values()]
        for request in found:
            if request.get("type") == PUBLISH_REQUEST and request.get("status") in OPEN_REQUEST_STATES:
                return request
        return None

    async def _advance_request(self, rec: RemoteRecord, request: Mapping[str, Any]) -> PublishOutcome:
        """Submit a created request; report accepted (published) or waiting for a curator."""
        where = Where("submit publish request", rec.recid)
        request_id = str(request.get("id")) if request.get("id") else None
        status = request.get("status")
        if status == "created":
            submit = ((request.get("links") or {}).get("actions") or {}).get("submit")
            if not submit:
                raise Conflict(f"{where.what}: request {request_id} cannot be submitted by this user", recid=rec.recid)
            # Submitting twice answers an error, so an unclear failure is checked by reading the request.
            try:
                resp = await self.http.request(
                    "POST", submit, where, json={}, expect=(200, 201, 202), retry_mode="safe"
                )
                request = resp.body if isinstance(resp.body, Mapping) else {}
            except FerryError as exc:
                self_link = (request.get("links") or {}).get("self")
                if not (exc.retryable and maybe_applied(exc)) or not self_link:
                    raise
                request = (await self.http.request("GET", self_link, where)).body or {}
                if request.get("status") == "created":
                    raise
            status = request.get("status")
        if status == "accepted":
            return PublishOutcome("published", rec.id, request_id)
        if status == "submitted":
            log.info("record %s: publish request %s waits for a curator", rec.recid, request_id)
            return PublishOutcome("pending-review", rec.id, request_id)
        raise TargetError(f"publish request {request_id} is {status}", recid=rec.recid)

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


def _pick_model(body: Any, name: str) -> Mapping[str, Any] | None:
    items = list(body.values()) if isinstance(body, Mapping) and "hits" not in body else hits(body)
    for item in items:
        if isinstance(item, Mapping) and name in (item.get("name"), item.get("type"), item.get("id")):
            return item
    return None


def _model_names(body: Any) -> set[str]:
    items = list(body.values()) if isinstance(body, Mapping) and "hits" not in body else hits(body)
    return {f"{i.get('type')} ({i.get('name')})" for i in items if isinstance(i, Mapping)}


if TYPE_CHECKING:  # mypy proves InvenioTarget satisfies the Target protocol
    _conforms: type[Target] = InvenioTarget
