"""Shared pieces of the sandbox repository: the app state, JSON shapes and links.

The JSON shapes follow InvenioRDM 12/13 (invenio-rdm-records, invenio-records-resources)
and NRP (oarepo) closely enough for our client and a peer client: `id`, `revision_id`,
`is_published`, `is_draft`, `versions`, `parent`, `links`, and `errors` when a draft
was stored with invalid fields.
"""

from __future__ import annotations

import asyncio
import copy
import mimetypes
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import orjson
from aiohttp import web

from sandbox.repository_options import RepositoryOptions
from sandbox.repository_store import Obj, Store, now_iso
from sandbox.repository_validate import validate_draft


def _request_key(name: str) -> Any:
    """aiohttp >= 3.14 wants typed request keys (string keys warn); older versions take strings."""
    factory = getattr(web, "RequestKey", None)
    return factory(name) if factory is not None else f"sandbox.{name}"


USER_KEY: Any = _request_key("user")  # authenticated user id, or None
BYTES_READ_KEY: Any = _request_key("bytes_read")  # body bytes actually received
DROPPED_KEY: Any = _request_key("dropped")  # the sandbox cut this request's connection

MODELS = ("records", "particles")  # URL prefixes: stock RDM records and the NRP model
NRP_MODEL = "particles"
INVENIO_VERSION = "13.0.0"


class ApiError(Exception):
    """An error answered as InvenioRDM does: {"status", "message", "errors"?}."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: list[Obj] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}

    def response(self) -> web.Response:
        body: Obj = {"status": self.status, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return json_response(body, self.status, self.headers)


def fail(status: int, message: str, errors: list[Obj] | None = None) -> NoReturn:
    raise ApiError(status, message, errors)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


@dataclass
class Repo:
    """Everything the handlers share (one per running server)."""

    data_dir: Path
    options: RepositoryOptions
    tokens: dict[str, int]  # token -> user id
    store: Store = field(init=False)
    rng: random.Random = field(init=False)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    public_url: str | None = None
    # (repo, entity, base, draft?) -> the `expanded` section for `?expand=1` (NRP flavour)
    expander: Callable[[Repo, Obj, str, bool], Obj] | None = None

    def __post_init__(self) -> None:
        self.store = Store(self.data_dir, self.index_doc)
        self.store.prime_index()
        self.rng = random.Random(self.options.seed)
        self.store.index_delay_s = self.options.index_delay_ms / 1000

    def apply_options(self, values: dict[str, Any]) -> None:
        self.options.update(values)
        if "seed" in values:
            self.rng = random.Random(self.options.seed)
        self.store.index_delay_s = self.options.index_delay_ms / 1000

    # --- requests ------------------------------------------------------------------
    def base(self, request: web.Request) -> str:
        return self.public_url or f"{request.scheme}://{request.host}"

    @staticmethod
    def user(request: web.Request) -> int | None:
        user: int | None = request.get(USER_KEY)
        return user

    def require_user(self, request: web.Request) -> int:
        user = self.user(request)
        if user is None:
            fail(403, "Permission denied.")
        return user

    @staticmethod
    async def json_body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            fail(400, "Unable to decode JSON data in request body.")

    # --- lookups -------------------------------------------------------------------
    def entity(self, model: str, eid: str) -> Obj:
        entity = self.store.entities.get(eid)
        if entity is None or entity["model"] != model:
            fail(404, "The persistent identifier does not exist.")
        return entity

    def owned_draft(self, request: web.Request, model: str, eid: str) -> Obj:
        user = self.require_user(request)
        entity = self.entity(model, eid)
        if entity["owner"] != user:
            fail(403, "Permission denied.")
        if entity.get("draft") is None:
            fail(404, "Resource not found.")
        return entity

    def published(self, request: web.Request, model: str, eid: str) -> Obj:
        entity = self.entity(model, eid)
        if entity.get("record") is None:
            fail(404, "The persistent identifier is not registered.")
        return entity

    def parent_of(self, entity: Obj) -> Obj:
        return self.store.parents[entity["parent_id"]]

    # --- rules ---------------------------------------------------------------------
    def workflow_requests(self, entity: Obj) -> bool:
        """NRP drafts expose publish requests (applicable-requests)."""
        return self.options.nrp and entity["model"] == NRP_MODEL

    def direct_publish_allowed(self, entity: Obj) -> bool:
        return not self.workflow_requests(entity) or self.options.publish_workflow == "direct"

    def check_revision(self, request: web.Request, revision: int) -> None:
        """If-Match with the revision ETag -> 412 when it does not match (InvenioRDM)."""
        header = request.headers.get("If-Match")
        if not header:
            return
        wanted = header.strip().removeprefix("W/").strip('"')
        if wanted != str(revision):
            fail(412, f"Revision id provided({wanted}) doesn't match record's one({revision}).")

    # --- drafts --------------------------------------------------------------------
    def apply_draft_body(self, entity: Obj, body: Any, *, keep_files_enabled: bool = False) -> None:
        if not isinstance(body, dict):
            fail(400, "A validation error occurred.", [{"field": "_schema", "messages": ["Invalid input type."]}])
        clean, errors = validate_draft(body, entity["model"])
        draft = entity["draft"]
        enabled = draft.get("files", {}).get("enabled", True)
        files = clean.get("files") if isinstance(clean.get("files"), dict) else {}
        draft.update(
            metadata=clean["metadata"],
            access=clean["access"],
            custom_fields=clean.get("custom_fields") or {},
            pids=clean.get("pids") or draft.get("pids") or {},
            files={"enabled": enabled if keep_files_enabled else bool((files or {}).get("enabled", True))},
            errors=errors,
        )
        draft["revision_id"] = draft.get("revision_id", 0) + 1
        draft["updated"] = now_iso()

    def bump(self, entity: Obj) -> None:
        draft = entity["draft"]
        draft["revision_id"] = draft.get("revision_id", 0) + 1
        draft["updated"] = now_iso()

    # --- JSON shapes ----------------------------------------------------------------
    def index_doc(self, entity: Obj) -> Obj | None:
        """What search stores for an entity: both faces, without links (added per request)."""
        return {
            "eid": entity["id"],
            "model": entity["model"],
            "owner": entity["owner"],
            "parent": entity["parent_id"],
            "index": entity.get("version_index", 1),
            "created": entity["created"],
            "draft": self.draft_json(entity, None) if entity.get("draft") is not None else None,
            "record": self.record_json(entity, None) if entity.get("record") is not None else None,
        }

    def versions_info(self, entity: Obj) -> Obj:
        parent = self.store.parents.get(entity["parent_id"], {"versions": [entity["id"]]})
        ids = parent["versions"]
        published = [i for i in ids if (self.store.entities.get(i) or {}).get("record") is not None]
        return {
            "index": entity.get("version_index", 1),
            "is_latest": bool(published) and published[-1] == entity["id"],
            "is_latest_draft": bool(ids) and ids[-1] == entity["id"],
        }

    def parent_json(self, entity: Obj) -> Obj:
        parent = self.store.parents.get(entity["parent_id"], {})
        communities = copy.deepcopy(parent.get("communities") or {})
        out: Obj = {
            "id": entity["parent_id"],
            "access": {"owned_by": {"user": str(entity["owner"])}, "grants": [], "links": []},
            "communities": communities,
            "pids": {},
        }
        if parent.get("workflow"):
            out["workflow"] = parent["workflow"]
        return out

    def draft_json(self, entity: Obj, base: str | None) -> Obj:
        draft = entity["draft"]
        files = entity.get("draft_files") or {}
        out: Obj = {
            "id": entity["id"],
            "created": draft["created"],
            "updated": draft["updated"],
            "revision_id": draft.get("revision_id", 1),
            "is_published": entity.get("record") is not None,
            "is_draft": True,
            "status": "published" if entity.get("record") is not None else "draft",
            "pids": copy.deepcopy(draft.get("pids") or {}),
            "metadata": copy.deepcopy(draft.get("metadata") or {}),
            "custom_fields": copy.deepcopy(draft.get("custom_fields") or {}),
            "access": copy.deepcopy(draft.get("access") or {}),
            "files": self.files_summary(draft, files),
            "versions": self.versions_info(entity),
            "parent": self.parent_json(entity),
            "expires_at": draft["created"],
        }
        if base is not None:
            out["links"] = self.draft_links(entity, base)
        if draft.get("errors"):
            out["errors"] = copy.deepcopy(draft["errors"])
        return out

    def record_json(self, entity: Obj, base: str | None) -> Obj:
        record = entity["record"]
        files = entity.get("record_files") or {}
        out: Obj = {
            "id": entity["id"],
            "created": record["created"],
            "updated": record["updated"],
            "revision_id": record.get("revision_id", 1),
            "is_published": True,
            "is_draft": False,
            "status": "published",
            "pids": copy.deepcopy(record.get("pids") or {}),
            "metadata": copy.deepcopy(record.get("metadata") or {}),
            "custom_fields": copy.deepcopy(record.get("custom_fields") or {}),
            "access": copy.deepcopy(record.get("access") or {}),
            "files": self.files_summary(record, files),
            "versions": self.versions_info(entity),
            "parent": self.parent_json(entity),
        }
        if base is not None:
            out["links"] = self.record_links(entity, base)
        return out

    @staticmethod
    def files_summary(body: Obj, files: dict[str, Obj]) -> Obj:
        return {
            "enabled": bool(body.get("files", {}).get("enabled", True)),
            "order": [],
            "count": len(files),
            "total_bytes": sum(int(f.get("size") or 0) for f in files.values()),
        }

    def api_root(self, entity: Obj, base: str) -> str:
        return f"{base}/api/{entity['model']}/{entity['id']}"

    def draft_links(self, entity: Obj, base: str) -> Obj:
        root = self.api_root(entity, base)
        eid = entity["id"]
        html = f"{base}/uploads/{eid}" if entity["model"] == "records" else f"{base}/{entity['model']}/{eid}/edit"
        links: Obj = {
            "self": f"{root}/draft",
            "self_html": html,
            "record": root,
            "record_html": f"{base}/records/{eid}",
            "files": f"{root}/draft/files",
            "archive": f"{root}/draft/files-archive",
            "versions": f"{root}/versions",
            "latest": f"{root}/versions/latest",
            "latest_html": f"{base}/records/{eid}/latest",
            "access_links": f"{root}/access/links",
            "reserve_doi": f"{root}/draft/pids/doi",
            "communities": f"{root}/communities",
            "requests": f"{root}/requests",
        }
        if self.direct_publish_allowed(entity):
            links["publish"] = f"{root}/draft/actions/publish"
        if self.workflow_requests(entity):
            links["requests"] = f"{root}/draft/requests"
            links["applicable-requests"] = f"{root}/draft/requests/applicable"
        return links

    def record_links(self, entity: Obj, base: str) -> Obj:
        root = self.api_root(entity, base)
        eid = entity["id"]
        links: Obj = {
            "self": root,
            "self_html": f"{base}/records/{eid}",
            "files": f"{root}/files",
            "archive": f"{root}/files-archive",
            "draft": f"{root}/draft",
            "versions": f"{root}/versions",
            "latest": f"{root}/versions/latest",
            "latest_html": f"{base}/records/{eid}/latest",
            "access_links": f"{root}/access/links",
            "communities": f"{root}/communities",
            "requests": f"{root}/requests",
        }
        if self.workflow_requests(entity):
            links["applicable-requests"] = f"{root}/requests/applicable"
        return links

    def file_json(self, entity: Obj, entry: Obj, base: str, *, draft: bool) -> Obj:
        root = self.api_root(entity, base) + ("/draft/files/" if draft else "/files/") + quote(entry["key"], safe="")
        out: Obj = {
            "key": entry["key"],
            "created": entry["created"],
            "updated": entry["updated"],
            "status": entry["status"],
            "metadata": copy.deepcopy(entry.get("metadata")),
            "access": {"hidden": False},
            "storage_class": "L",
            "transfer": {"type": entry["transfer"]["type"]},
        }
        if entry["status"] == "completed":
            out.update(
                size=entry["size"],
                mimetype=entry["mimetype"],
                file_id=entry["file_id"],
                version_id=entry["file_id"],
                bucket_id=entity["id"],
            )
            if entry.get("checksum"):
                out["checksum"] = entry["checksum"]
        elif entry.get("declared_size") is not None:
            out["size"] = entry["declared_size"]
        links: Obj = {"self": root, "content": f"{root}/content", "commit": f"{root}/commit"}
        transfer = entry["transfer"]
        if transfer["type"] == "M" and entry["status"] == "pending":
            out["transfer"].update(parts=transfer["parts"], part_size=transfer.get("part_size"))
            links["content"] = None
            links["parts"] = [
                {"part": n, "url": f"{root}/content/{n}", "expiration": entry["expires"]}
                for n in range(1, transfer["parts"] + 1)
            ]
        if not draft:
            links.pop("commit")
        out["links"] = links
        return out

    def files_list_json(self, entity: Obj, base: str, *, draft: bool) -> Obj:
        files = entity.get("draft_files" if draft else "record_files") or {}
        body = entity["draft" if draft else "record"]
        root = self.api_root(entity, base) + ("/draft/files" if draft else "/files")
        return {
            "enabled": bool(body.get("files", {}).get("enabled", True)),
            "links": {"self": root, "archive": root.removesuffix("/files") + "/files-archive"},
            "entries": [self.file_json(entity, f, base, draft=draft) for f in files.values()],
            "default_preview": None,
            "order": [],
        }


def guess_mimetype(key: str) -> str:
    guessed, _ = mimetypes.guess_type(key, strict=False)
    return guessed or "application/octet-stream"
