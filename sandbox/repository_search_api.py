"""Search endpoints of the sandbox repository: ``/api/{model}`` and ``/api/user/{model}``.

Paging as InvenioRDM pages (at most ``MAX_RESULT_WINDOW`` hits reachable), the query
language of ``sandbox.repository_search``, the latest version of each record unless
``allversions``; a user search sees the owner's drafts.
"""

from __future__ import annotations

import copy

from aiohttp import web

from sandbox.repository_core import NRP_MODEL, Repo, fail, json_response
from sandbox.repository_paging import page_of, paging
from sandbox.repository_records import _model, _repo
from sandbox.repository_search import QuerySyntaxError, matches, parse_query
from sandbox.repository_store import Obj

Face = tuple[Obj, Obj, str]  # (doc, the face a search sees, "draft" or "record")


def _search(repo: Repo, request: web.Request, docs: list[Obj], *, user_search: bool, root: str) -> web.Response:
    page, size = paging(request)
    try:
        query = parse_query(request.query.get("q", ""))
    except QuerySyntaxError as exc:
        fail(400, f"Invalid query string syntax: {exc}.")
    faces = _visible_faces(docs, request.query.get("is_published", "").lower(), user_search=user_search)
    if request.query.get("allversions", "").lower() not in ("1", "true", "yes"):
        faces = _latest_versions(faces)
    faces = [item for item in faces if matches(item[1], query)]
    sort = request.query.get("sort", "newest")
    faces.sort(key=lambda item: item[0]["created"], reverse=sort != "oldest")
    base = repo.base(request)
    hits: list[Obj] = []
    for doc, face, kind in faces:
        entity = repo.store.entities.get(doc["eid"])
        hit = copy.deepcopy(face)
        if entity is not None:
            hit["links"] = repo.draft_links(entity, base) if kind == "draft" else repo.record_links(entity, base)
        else:
            # Deleted since it was indexed: InvenioRDM builds a hit's links from the indexed
            # document, so the stale hit still links where the record was (now 404).
            root = repo.api_root({"model": doc["model"], "id": doc["eid"]}, base)
            hit["links"] = {"self": f"{root}/draft", "record": root} if kind == "draft" else {"self": root}
        hits.append(hit)
    params = {k: v for k, v in request.query.items() if k not in ("page", "size")}
    return json_response(page_of(hits, page, size, root, params))


def _visible_faces(docs: list[Obj], published_filter: str, *, user_search: bool) -> list[Face]:
    """The face of each doc a search sees: the owner's draft if any (user search), else the record."""
    faces: list[Face] = []
    for doc in docs:
        if user_search:
            face, kind = (doc["draft"], "draft") if doc["draft"] is not None else (doc["record"], "record")
        else:
            face, kind = doc["record"], "record"
        if face is None:
            continue
        if published_filter in ("true", "false") and face["is_published"] != (published_filter == "true"):
            continue
        faces.append((doc, face, kind))
    return faces


def _latest_versions(faces: list[Face]) -> list[Face]:
    latest: dict[str, Face] = {}
    for item in faces:
        current = latest.get(item[0]["parent"])
        if current is None or item[0]["index"] > current[0]["index"]:
            latest[item[0]["parent"]] = item
    return list(latest.values())


async def search_user_records(request: web.Request) -> web.Response:
    repo = _repo(request)
    user = repo.require_user(request)
    model = request.match_info.get("coll", "records")
    if model == NRP_MODEL and not repo.options.nrp:
        fail(404, "The requested URL was not found on the server.")
    docs = [d for d in repo.store.search_docs() if d["owner"] == user and (model == "records" or d["model"] == model)]
    return _search(repo, request, docs, user_search=True, root=f"{repo.base(request)}/api/user/{model}")


async def search_records(request: web.Request) -> web.Response:
    repo = _repo(request)
    model = _model(request)
    user = repo.user(request)
    docs = [
        d
        for d in repo.store.search_docs()
        if d["model"] == model
        and d["record"] is not None
        and (d["record"]["access"].get("record") != "restricted" or d["owner"] == user)
    ]
    return _search(repo, request, docs, user_search=False, root=f"{repo.base(request)}/api/{model}")


def routes(model_pattern: str) -> list[web.RouteDef]:
    """Registered before the record routes (the same order as when they were one list)."""
    return [
        web.get("/api/user/records", search_user_records),
        web.get(f"/api/user/{{coll:{model_pattern}}}", search_user_records),
        web.get(f"/api/{{coll:{model_pattern}}}", search_records),
    ]
