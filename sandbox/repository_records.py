"""Record, draft and version endpoints of the sandbox repository (search: repository_search_api)."""

from __future__ import annotations

import copy

from aiohttp import web

from sandbox.repository_core import NRP_MODEL, ApiError, Repo, fail, json_response
from sandbox.repository_paging import page_of, paging
from sandbox.repository_store import Obj, now_iso
from sandbox.repository_validate import validate_draft

REPO = web.AppKey("repo", Repo)


def _repo(request: web.Request) -> Repo:
    return request.app[REPO]


def _model(request: web.Request) -> str:
    model = request.match_info["coll"]
    if model == NRP_MODEL and not _repo(request).options.nrp:
        fail(404, "The requested URL was not found on the server.")
    return model


def _etag(revision: int) -> dict[str, str]:
    return {"ETag": f'"{revision}"'}


def _expand(repo: Repo, request: web.Request, entity: Obj, body: Obj, *, draft: bool) -> None:
    """`?expand=1` (oarepo): the record's open requests and applicable request types."""
    if repo.expander is not None and request.query.get("expand", "").lower() in ("1", "true"):
        body["expanded"] = repo.expander(repo, entity, repo.base(request), draft)


def draft_response(repo: Repo, request: web.Request, entity: Obj, status: int = 200) -> web.Response:
    body = repo.draft_json(entity, repo.base(request))
    _expand(repo, request, entity, body, draft=True)
    return json_response(body, status, _etag(body["revision_id"]))


def record_response(repo: Repo, request: web.Request, entity: Obj, status: int = 200) -> web.Response:
    body = repo.record_json(entity, repo.base(request))
    _expand(repo, request, entity, body, draft=False)
    return json_response(body, status, _etag(body["revision_id"]))


# --- drafts --------------------------------------------------------------------------
async def create_draft(request: web.Request) -> web.Response:
    repo = _repo(request)
    model = _model(request)
    user = repo.require_user(request)
    body = await repo.json_body(request)
    if body is None:
        body = {}
    now = now_iso()
    eid = repo.store.new_id()
    parent_id = repo.store.new_id()
    parent: Obj = {"id": parent_id, "owner": user, "versions": [eid], "communities": {}, "workflow": None}
    if isinstance(body, dict) and isinstance(body.get("parent"), dict):
        _apply_parent(repo, parent, body["parent"])
    entity: Obj = {
        "id": eid,
        "model": model,
        "parent_id": parent_id,
        "owner": user,
        "created": now,
        "updated": now,
        "version_index": 1,
        "draft": {"created": now, "updated": now, "revision_id": 0},
        "draft_files": {},
        "record": None,
        "record_files": {},
    }
    repo.apply_draft_body(entity, body)
    repo.store.save_parent(parent)
    repo.store.save_entity(entity)
    return draft_response(repo, request, entity, 201)


def _apply_parent(repo: Repo, parent: Obj, data: Obj) -> None:
    communities = data.get("communities")
    if isinstance(communities, dict) and communities.get("default"):
        slug = str(communities["default"])
        known = repo.options.communities
        if known and slug not in known:
            fail(
                400,
                "A validation error occurred.",
                [{"field": "parent.communities.default", "messages": [f"Community {slug} does not exist."]}],
            )
        parent["communities"] = {"default": slug, "ids": [slug]}
    if data.get("workflow"):
        parent["workflow"] = str(data["workflow"])


async def read_draft(request: web.Request) -> web.Response:
    repo = _repo(request)
    entity = repo.owned_draft(request, _model(request), request.match_info["id"])
    return draft_response(repo, request, entity)


async def update_draft(request: web.Request) -> web.Response:
    repo = _repo(request)
    entity = repo.owned_draft(request, _model(request), request.match_info["id"])
    repo.check_revision(request, entity["draft"].get("revision_id", 1))
    body = await repo.json_body(request)
    if isinstance(body, dict) and isinstance(body.get("parent"), dict):
        parent = repo.parent_of(entity)
        _apply_parent(repo, parent, body["parent"])
        repo.store.save_parent(parent)
    repo.apply_draft_body(entity, body if body is not None else {})
    repo.store.save_entity(entity)
    return draft_response(repo, request, entity)


async def discard_draft(request: web.Request) -> web.Response:
    repo = _repo(request)
    entity = repo.owned_draft(request, _model(request), request.match_info["id"])
    repo.check_revision(request, entity["draft"].get("revision_id", 1))
    draft_blobs = [f.get("blob") for f in entity["draft_files"].values()]
    if entity.get("record") is None:
        parent = repo.parent_of(entity)
        parent["versions"] = [v for v in parent["versions"] if v != entity["id"]]
        repo.store.delete_entity(entity["id"])
        if parent["versions"]:
            repo.store.save_parent(parent)
            for sibling in parent["versions"]:
                repo.store.reindex(sibling)
        else:
            repo.store.delete_parent(parent["id"])
    else:
        entity["draft"] = None
        entity["draft_files"] = {}
        repo.store.save_entity(entity)
    for blob in draft_blobs:
        repo.store.release_blob(blob)
    return web.Response(status=204)


async def edit_record(request: web.Request) -> web.Response:
    """POST .../draft: a draft of the record (the existing one if any), 201.

    On a never-published draft (a new version's) InvenioRDM's edit returns that draft;
    inveniordm-py's new-version flow relies on it.
    """
    repo = _repo(request)
    user = repo.require_user(request)
    model = _model(request)
    entity = repo.entity(model, request.match_info["id"])
    if entity.get("record") is None and entity.get("draft") is not None:
        if entity["owner"] != user:
            fail(403, "Permission denied.")
        return draft_response(repo, request, entity, 201)
    entity = repo.published(request, model, request.match_info["id"])
    if entity["owner"] != user:
        fail(403, "Permission denied.")
    if entity.get("draft") is None:
        record = entity["record"]
        now = now_iso()
        entity["draft"] = {
            "created": now,
            "updated": now,
            "revision_id": 1,
            "metadata": copy.deepcopy(record.get("metadata") or {}),
            "access": copy.deepcopy(record.get("access") or {}),
            "custom_fields": copy.deepcopy(record.get("custom_fields") or {}),
            "pids": copy.deepcopy(record.get("pids") or {}),
            "files": copy.deepcopy(record.get("files") or {"enabled": True}),
            "errors": [],
            # files of a published record cannot change: that needs a new version
            "files_locked": True,
        }
        entity["draft_files"] = copy.deepcopy(entity.get("record_files") or {})
        repo.store.save_entity(entity)
    return draft_response(repo, request, entity, 201)


# --- publish ---------------------------------------------------------------------------
def publish_errors(repo: Repo, entity: Obj) -> list[Obj]:
    """Why this draft cannot be published (empty list: it can)."""
    draft = entity["draft"]
    stored = [e for e in draft.get("errors") or [] if e["messages"] != ["Unknown field."]]
    _, fresh = validate_draft(
        {k: draft.get(k) for k in ("metadata", "access", "files", "custom_fields", "pids") if k in draft},
        entity["model"],
    )
    seen = {e["field"] for e in stored}
    errors = stored + [e for e in fresh if e["field"] not in seen and e["messages"] != ["Unknown field."]]
    files = entity.get("draft_files") or {}
    if draft.get("files", {}).get("enabled", True):
        if not files:
            errors.append(
                {
                    "field": "files.enabled",
                    "messages": [
                        "Missing uploaded files. To disable files for this record please mark it as metadata-only."
                    ],
                }
            )
        elif any(f["status"] != "completed" for f in files.values()):
            errors.append({"field": "files", "messages": ["One or more files have not completed their transfer."]})
    elif files:
        errors.append({"field": "files.enabled", "messages": ["Files must be removed before disabling files."]})
    return errors


def do_publish(repo: Repo, entity: Obj) -> None:
    errors = publish_errors(repo, entity)
    if errors:
        raise ApiError(400, "A validation error occurred.", errors)
    draft = entity["draft"]
    now = now_iso()
    previous = entity.get("record")
    old_blobs = {f.get("blob") for f in (entity.get("record_files") or {}).values()}
    entity["record"] = {
        "created": previous["created"] if previous else now,
        "updated": now,
        "revision_id": (previous.get("revision_id", 0) if previous else 0) + 1,
        "metadata": copy.deepcopy(draft.get("metadata") or {}),
        "access": copy.deepcopy(draft.get("access") or {}),
        "custom_fields": copy.deepcopy(draft.get("custom_fields") or {}),
        "pids": copy.deepcopy(draft.get("pids") or {}),
        "files": {"enabled": bool(draft.get("files", {}).get("enabled", True))},
    }
    entity["record_files"] = entity.get("draft_files") or {}
    entity["draft"] = None
    entity["draft_files"] = {}
    repo.store.save_entity(entity)
    for sibling in repo.parent_of(entity)["versions"]:
        if sibling != entity["id"]:
            repo.store.reindex(sibling)
    for blob in old_blobs:
        repo.store.release_blob(blob)


async def publish(request: web.Request) -> web.Response:
    repo = _repo(request)
    entity = repo.owned_draft(request, _model(request), request.match_info["id"])
    repo.check_revision(request, entity["draft"].get("revision_id", 1))
    if not repo.direct_publish_allowed(entity):
        fail(403, "Permission denied.")
    do_publish(repo, entity)
    return record_response(repo, request, entity, 202)


# --- published records and versions -----------------------------------------------------
async def read_record(request: web.Request) -> web.Response:
    repo = _repo(request)
    entity = repo.published(request, _model(request), request.match_info["id"])
    _check_readable(repo, request, entity)
    return record_response(repo, request, entity)


def _check_readable(repo: Repo, request: web.Request, entity: Obj) -> None:
    access = (entity.get("record") or {}).get("access") or {}
    if access.get("record") == "restricted" and repo.user(request) != entity["owner"]:
        fail(403, "Permission denied.")


async def new_version(request: web.Request) -> web.Response:
    repo = _repo(request)
    user = repo.require_user(request)
    entity = repo.published(request, _model(request), request.match_info["id"])
    if entity["owner"] != user:
        fail(403, "Permission denied.")
    return draft_response(repo, request, start_new_version(repo, entity, user), 201)


def open_version_draft(repo: Repo, entity: Obj) -> Obj | None:
    """The unpublished next version of this record's parent, if one is open."""
    latest = repo.store.entities[repo.parent_of(entity)["versions"][-1]]
    if latest.get("record") is None and latest.get("draft") is not None:
        return latest
    return None


def start_new_version(repo: Repo, entity: Obj, user: int) -> Obj:
    """A new version's draft of a published record (the open one if it exists already)."""
    parent = repo.parent_of(entity)
    existing = open_version_draft(repo, entity)
    if existing is not None:
        return existing
    source = _latest_published(repo, parent)
    record = source["record"]
    metadata = copy.deepcopy(record.get("metadata") or {})
    metadata.pop("publication_date", None)
    metadata.pop("version", None)
    now = now_iso()
    eid = repo.store.new_id()
    new: Obj = {
        "id": eid,
        "model": entity["model"],
        "parent_id": parent["id"],
        "owner": user,
        "created": now,
        "updated": now,
        "version_index": max(repo.store.entities[v].get("version_index", 1) for v in parent["versions"]) + 1,
        "draft": {
            "created": now,
            "updated": now,
            "revision_id": 0,
        },
        "draft_files": {},
        "record": None,
        "record_files": {},
    }
    body = {
        "metadata": metadata,
        "access": copy.deepcopy(record.get("access")),
        "custom_fields": copy.deepcopy(record.get("custom_fields") or {}),
        "files": {"enabled": bool(record.get("files", {}).get("enabled", True))},
    }
    repo.apply_draft_body(new, body)
    parent["versions"].append(eid)
    repo.store.save_parent(parent)
    repo.store.save_entity(new)
    for sibling in parent["versions"][:-1]:
        repo.store.reindex(sibling)
    return new


def _latest_published(repo: Repo, parent: Obj) -> Obj:
    for vid in reversed(parent["versions"]):
        candidate = repo.store.entities.get(vid)
        if candidate and candidate.get("record") is not None:
            return candidate
    fail(404, "The persistent identifier is not registered.")


async def import_files(request: web.Request) -> web.Response:
    repo = _repo(request)
    entity = repo.owned_draft(request, _model(request), request.match_info["id"])
    parent = repo.parent_of(entity)
    previous = [
        repo.store.entities[v]
        for v in parent["versions"]
        if v != entity["id"] and repo.store.entities[v].get("record") is not None
    ]
    if not previous:
        fail(404, "The persistent identifier is not registered.")
    if entity["draft"].get("files_locked"):
        fail(403, "Permission denied.")
    source = previous[-1]
    for key, entry in (source.get("record_files") or {}).items():
        if key not in entity["draft_files"] and entry["status"] == "completed":
            entity["draft_files"][key] = copy.deepcopy(entry)
    repo.bump(entity)
    repo.store.save_entity(entity)
    return json_response(repo.files_list_json(entity, repo.base(request), draft=True), 201)


async def list_versions(request: web.Request) -> web.Response:
    repo = _repo(request)
    entity = repo.entity(_model(request), request.match_info["id"])
    parent = repo.parent_of(entity)
    base = repo.base(request)
    hits = [
        repo.record_json(repo.store.entities[v], base)
        for v in reversed(parent["versions"])
        if repo.store.entities[v].get("record") is not None
    ]
    page, size = paging(request)
    root = repo.api_root(entity, base) + "/versions"
    return json_response(page_of(hits, page, size, root, {}))


async def latest_version(request: web.Request) -> web.Response:
    repo = _repo(request)
    entity = repo.entity(_model(request), request.match_info["id"])
    latest = _latest_published(repo, repo.parent_of(entity))
    return record_response(repo, request, latest)


def routes(model_pattern: str) -> list[web.RouteDef]:
    coll = f"/api/{{coll:{model_pattern}}}"
    item = coll + "/{id}"
    return [
        web.post(coll, create_draft),
        web.get(item, read_record),
        web.get(item + "/draft", read_draft),
        web.put(item + "/draft", update_draft),
        web.delete(item + "/draft", discard_draft),
        web.post(item + "/draft", edit_record),
        web.post(item + "/draft/actions/publish", publish),
        web.post(item + "/draft/actions/files-import", import_files),
        web.post(item + "/versions", new_version),
        web.get(item + "/versions", list_versions),
        web.get(item + "/versions/latest", latest_version),
    ]
