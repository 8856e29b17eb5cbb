"""NRP (oarepo) flavour: repository discovery and the request-based publish workflow.

Shapes follow oarepo-requests / oarepo-runtime: `GET links["applicable-requests"]`
answers `{"hits": {"hits": [{"type_id": "publish_draft", "links": {"actions":
{"create": ...}}}], "total": 1}}`; a request carries `links.actions.<action>` for the
actions its status allows; an accepted publish request names the published record in
its payload (`published_record:links:self`).
"""

from __future__ import annotations

import secrets

from aiohttp import web

from sandbox.repository_core import INVENIO_VERSION, NRP_MODEL, ApiError, Repo, fail, json_response
from sandbox.repository_records import REPO, _model, do_publish, open_version_draft, publish_errors, start_new_version
from sandbox.repository_store import Obj, now_iso

PUBLISH_DRAFT = "publish_draft"
NEW_VERSION = "new_version"
REQUEST_NAMES = {PUBLISH_DRAFT: "Publish draft", NEW_VERSION: "New version"}


def _repo(request: web.Request) -> Repo:
    repo = request.app[REPO]
    if not repo.options.nrp:
        fail(404, "The requested URL was not found on the server.")
    return repo


# --- discovery ----------------------------------------------------------------------------
def model_json(base: str) -> Obj:
    return {
        "type": NRP_MODEL,
        "name": "Particles",
        "description": "Particle physics datasets (sandbox model)",
        "version": "1.0.0",
        "schema": "local://particles-1.0.0.json",
        "features": ["requests", "drafts", "files", "communities", "workflows"],
        "content_type": "application/json",
        "links": {
            "records": f"{base}/api/{NRP_MODEL}",
            "drafts": f"{base}/api/user/{NRP_MODEL}",
            "api": f"{base}/api/{NRP_MODEL}",
            "published": f"{base}/api/{NRP_MODEL}",
            "user_records": f"{base}/api/user/{NRP_MODEL}",
            "html": f"{base}/{NRP_MODEL}/",
            "model": f"{base}/.well-known/repository/models/{NRP_MODEL}",
        },
    }


async def well_known(request: web.Request) -> web.Response:
    repo = _repo(request)
    base = repo.base(request)
    return json_response(
        {
            # nrp-cmd refuses an info document without its schema id (oarepo-runtime sends it)
            "schema": "local://introspection-v1.0.0.json",
            "name": "dataferry sandbox repository",
            "description": "A local stand-in for an NRP (oarepo) / InvenioRDM repository",
            "version": "sandbox",
            "invenio_version": INVENIO_VERSION,
            "transfers": ["L", "F", "R", "M"],
            "features": ["drafts", "requests", "communities", "workflows", "multipart"],
            "default_model": NRP_MODEL,
            "links": {
                "self": f"{base}/.well-known/repository",
                "api": f"{base}/api",
                "records": f"{base}/api/records",
                "drafts": f"{base}/api/user/records",
                "models": f"{base}/.well-known/repository/models",
                "requests": f"{base}/api/requests",
                "user_records": f"{base}/api/user/records",
            },
        }
    )


async def models(request: web.Request) -> web.Response:
    repo = _repo(request)
    return json_response([model_json(repo.base(request))])


async def model(request: web.Request) -> web.Response:
    repo = _repo(request)
    if request.match_info["name"] != NRP_MODEL:
        fail(404, "Model not found.")
    return json_response(model_json(repo.base(request)))


# --- requests ---------------------------------------------------------------------------------
def _open_request(repo: Repo, eid: str, rtype: str) -> Obj | None:
    for req in repo.store.requests.values():
        if req["topic_id"] == eid and req["type"] == rtype and req["status"] in ("created", "submitted"):
            return req
    return None


def _open_publish_request(repo: Repo, eid: str) -> Obj | None:
    return _open_request(repo, eid, PUBLISH_DRAFT)


def _applicable_types(repo: Repo, entity: Obj, *, draft: bool) -> list[str]:
    """Request types the owner may create on this topic now (oarepo's applicable requests)."""
    if not repo.workflow_requests(entity):
        return []
    if draft:
        if entity.get("draft") is None or _open_request(repo, entity["id"], PUBLISH_DRAFT) is not None:
            return []
        return [PUBLISH_DRAFT]
    if entity.get("record") is None or _open_request(repo, entity["id"], NEW_VERSION) is not None:
        return []
    # A new version is offered while the parent has no unpublished next version.
    return [] if open_version_draft(repo, entity) is not None else [NEW_VERSION]


def _type_json(repo: Repo, entity: Obj, base: str, rtype: str, *, draft: bool) -> Obj:
    root = repo.api_root(entity, base) + ("/draft" if draft else "")
    return {
        "type_id": rtype,
        "name": REQUEST_NAMES[rtype],
        "description": REQUEST_NAMES[rtype],
        "links": {"actions": {"create": f"{root}/requests/{rtype}"}},
    }


def _applicable(request: web.Request, *, draft: bool) -> web.Response:
    repo = _repo(request)
    if draft:
        entity = repo.owned_draft(request, _model(request), request.match_info["id"])
    else:
        user = repo.require_user(request)
        entity = repo.published(request, _model(request), request.match_info["id"])
        if entity["owner"] != user:
            fail(403, "Permission denied.")
    base = repo.base(request)
    hits = [_type_json(repo, entity, base, t, draft=draft) for t in _applicable_types(repo, entity, draft=draft)]
    root = repo.api_root(entity, base) + ("/draft" if draft else "") + "/requests/applicable"
    # nrp-cmd reads a list without links.self as a broken response
    return json_response({"hits": {"hits": hits, "total": len(hits)}, "links": {"self": root}})


async def applicable_draft(request: web.Request) -> web.Response:
    return _applicable(request, draft=True)


async def applicable_record(request: web.Request) -> web.Response:
    return _applicable(request, draft=False)


def expanded(repo: Repo, entity: Obj, base: str, draft: bool) -> Obj:
    """The `expanded` section oarepo adds with `?expand=1`: open requests, applicable types."""
    if not repo.workflow_requests(entity):
        return {}
    topic_requests = [
        request_json(repo, r, base)
        for r in repo.store.requests.values()
        if r["topic_id"] == entity["id"] and r["status"] in ("created", "submitted")
    ]
    types = [_type_json(repo, entity, base, t, draft=draft) for t in _applicable_types(repo, entity, draft=draft)]
    return {"requests": topic_requests, "request_types": types}


def _receiver(repo: Repo) -> Obj:
    # oarepo workflows name a receiver when the request is created; auto-approved ones
    # go to the "auto_approve" entity, others to the curators.
    if repo.options.publish_workflow == "curator":
        return {"group": "curators"}
    return {"auto_approve": "true"}


async def create_request(request: web.Request) -> web.Response:
    repo = _repo(request)
    rtype = request.match_info["type"]
    draft = request.path.rstrip("/").rsplit("/", 3)[-3] == "draft"
    if draft:
        entity = repo.owned_draft(request, _model(request), request.match_info["id"])
    else:
        user = repo.require_user(request)
        entity = repo.published(request, _model(request), request.match_info["id"])
        if entity["owner"] != user:
            fail(403, "Permission denied.")
    if rtype not in _applicable_types(repo, entity, draft=draft):
        if rtype in REQUEST_NAMES and _open_request(repo, entity["id"], rtype) is not None:
            fail(400, f"A {rtype} request is already open for this record.")
        fail(400, f"Request type {rtype} is not applicable to this record.")
    body = await repo.json_body(request)
    payload = body.get("payload") if isinstance(body, dict) else None
    now = now_iso()
    req: Obj = {
        "id": secrets.token_hex(16),
        "number": str(len(repo.store.requests) + 1),
        "type": rtype,
        "title": "",
        "status": "created",
        "created": now,
        "updated": now,
        "created_by": entity["owner"],
        "receiver": _receiver(repo),
        "topic_model": entity["model"],
        "topic_id": entity["id"],
        "topic_draft": draft,
        "payload": dict(payload) if isinstance(payload, dict) else {},
        "revision_id": 1,
    }
    repo.store.save_request(req)
    return json_response(request_json(repo, req, repo.base(request)), 201)


def request_json(repo: Repo, req: Obj, base: str) -> Obj:
    root = f"{base}/api/requests/{req['id']}"
    status = req["status"]
    actions: dict[str, str] = {}
    if status == "created":
        actions = {"submit": f"{root}/actions/submit", "delete": f"{root}/actions/delete"}
    elif status == "submitted":
        actions = {
            "accept": f"{root}/actions/accept",
            "decline": f"{root}/actions/decline",
            "cancel": f"{root}/actions/cancel",
        }
    entity = repo.store.entities.get(req["topic_id"])
    topic_links: Obj = {}
    if entity is not None:
        if entity.get("draft") is not None and req.get("topic_draft", True):
            topic_links = repo.draft_links(entity, base)
        elif entity.get("record") is not None:
            topic_links = repo.record_links(entity, base)
    return {
        "id": req["id"],
        "number": req["number"],
        "type": req["type"],
        "title": req["title"],
        "status": status,
        "is_open": status == "submitted",
        "is_closed": status in ("accepted", "declined", "cancelled", "expired"),
        "is_expired": False,
        "created": req["created"],
        "updated": req["updated"],
        "revision_id": req["revision_id"],
        "created_by": {"user": str(req["created_by"])},
        "receiver": dict(req.get("receiver") or {"group": "curators"}),
        "topic": {f"{req['topic_model']}{'_draft' if req.get('topic_draft', True) else ''}": req["topic_id"]},
        "payload": dict(req["payload"]),
        "links": {
            "self": root,
            "self_html": f"{base}/requests/{req['id']}",
            "comments": f"{root}/comments",
            "timeline": f"{root}/timeline",
            "actions": actions,
            "topic": topic_links,
        },
    }


def _accept(repo: Repo, req: Obj, base: str) -> None:
    entity = repo.store.entities.get(req["topic_id"])
    if req["type"] == NEW_VERSION:
        if entity is None or entity.get("record") is None:
            fail(400, "The record of this request no longer exists.")
        new = start_new_version(repo, entity, entity["owner"])
        req["status"] = "accepted"
        req["payload"]["draft_record:links:self"] = f"{repo.api_root(new, base)}/draft"
        req["payload"]["draft_record:links:self_html"] = f"{base}/{new['model']}/{new['id']}/edit"
        return
    if entity is None or entity.get("draft") is None:
        fail(400, "The draft of this request no longer exists.")
    do_publish(repo, entity)
    req["status"] = "accepted"
    req["payload"]["published_record:links:self"] = repo.api_root(entity, base)
    req["payload"]["published_record:links:self_html"] = f"{base}/records/{entity['id']}"


async def request_action(request: web.Request) -> web.Response:
    repo = _repo(request)
    user = repo.require_user(request)
    req = repo.store.requests.get(request.match_info["rid"])
    if req is None:
        fail(404, "Request not found.")
    action = request.match_info["action"]
    base = repo.base(request)
    status = req["status"]
    creator = req["created_by"] == user
    if action == "submit" and status == "created" and creator:
        if req["type"] == PUBLISH_DRAFT:
            entity = repo.store.entities.get(req["topic_id"])
            if entity is None or entity.get("draft") is None:
                fail(400, "The draft of this request no longer exists.")
            # NRP validates the draft when the publish request is submitted.
            errors = publish_errors(repo, entity)
            if errors:
                raise ApiError(400, "A validation error occurred.", errors)
        req["status"] = "submitted"
        if repo.options.publish_workflow in ("direct", "auto"):
            _accept(repo, req, base)  # auto-approve: the workflow's curator is the system
    elif action == "accept" and status == "submitted":
        _accept(repo, req, base)  # any authenticated user acts as curator in the sandbox
    elif action == "decline" and status == "submitted":
        req["status"] = "declined"
    elif (creator and (action == "cancel" and status in ("created", "submitted"))) or (
        creator and action == "delete" and status == "created"
    ):
        req["status"] = "cancelled"
    else:
        fail(403, f"Action {action} is not allowed on a {status} request.")
    req["revision_id"] += 1
    repo.store.save_request(req)
    return json_response(request_json(repo, req, base))


async def read_request(request: web.Request) -> web.Response:
    repo = _repo(request)
    repo.require_user(request)
    req = repo.store.requests.get(request.match_info["rid"])
    if req is None:
        fail(404, "Request not found.")
    return json_response(request_json(repo, req, repo.base(request)))


async def list_requests(request: web.Request) -> web.Response:
    repo = _repo(request)
    user = repo.require_user(request)
    base = repo.base(request)
    hits = [request_json(repo, r, base) for r in repo.store.requests.values() if r["created_by"] == user]
    return json_response({"hits": {"hits": hits, "total": len(hits)}, "links": {"self": f"{base}/api/requests"}})


def routes(model_pattern: str) -> list[web.RouteDef]:
    item = f"/api/{{coll:{model_pattern}}}/{{id}}"
    return [
        web.get("/.well-known/repository", well_known),
        web.get("/.well-known/repository/", well_known),
        web.get("/.well-known/repository/models", models),
        web.get("/.well-known/repository/models/{name}", model),
        web.get(item + "/draft/requests/applicable", applicable_draft),
        web.get(item + "/requests/applicable", applicable_record),
        web.post(item + "/draft/requests/{type}", create_request),
        web.post(item + "/requests/{type}", create_request),
        web.get("/api/requests", list_requests),
        web.get("/api/requests/{rid}", read_request),
        web.post("/api/requests/{rid}/actions/{action}", request_action),
    ]
