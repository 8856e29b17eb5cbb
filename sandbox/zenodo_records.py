"""The records API of the Zenodo stand-in, and its loopback-only admin endpoints.

    GET /api/records/{id}                    200 (410 deleted; a concept id redirects, 302,
                                             to its latest published version)
    GET /api/records/{id}/versions/latest    302 to the latest published version (record
                                             or concept id, as InvenioRDM's read_latest)
    GET /api/records/{id}/versions           200, every published version
    GET /api/records/{id}/files              200, RDM-shaped entries
    GET /api/records/{id}/files/{key}/content   the bytes (Range works; 403 restricted)
    GET /api/records?q=&all_versions=&size=&page=   published records (latest versions)

Admin (tests): ``GET /_sandbox/state``, ``GET|POST /_sandbox/config``, ``GET
/_sandbox/requests``, ``POST /_sandbox/records/{id}/delete`` (the record answers 410),
``POST /_sandbox/records/{id}/corrupt`` ``{"key", "offset"}`` (the served bytes change,
the listed md5 does not).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from aiohttp import web

from sandbox.zenodo_http import CTX, fail, json_body, json_response, mimetype_of, user_of
from sandbox.zenodo_json import files_readable, record_json
from sandbox.zenodo_metadata import Obj
from sandbox.zenodo_state import Deposition, StoredFile, ZenodoState, restricted_reason

DELETED = "The record has been deleted."


def _published(state: ZenodoState, raw: str) -> Deposition | None:
    """The published record with this id; 410 if it was deleted; None if the id is no record."""
    if not raw.isdigit():
        fail(404, "The persistent identifier does not exist.")
    dep = state.depositions.get(int(raw))
    if dep is not None and dep.deleted:
        fail(410, DELETED)
    if dep is not None and dep.published:
        return dep
    return None


def _latest_or_fail(state: ZenodoState, raw: str) -> Deposition:
    dep = _published(state, raw)
    concept = dep.concept if dep is not None else int(raw)
    if dep is None and concept not in state.concepts:
        if int(raw) in state.depositions:
            fail(404, "The persistent identifier is not registered.")  # a draft, never published
        fail(404, "The persistent identifier does not exist.")
    latest = state.latest_published(concept)
    if latest is None:
        fail(404, "Failed to fetch the record versions: no published version.")
    return latest


async def read(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    raw = request.match_info["id"]
    dep = _published(ctx.state, raw)
    if dep is None:
        latest = _latest_or_fail(ctx.state, raw)  # a concept id, or 404
        raise web.HTTPFound(f"{ctx.base(request)}/api/records/{latest.id}")
    readable = files_readable(dep, user_of(request))
    return json_response(record_json(ctx.state, dep, ctx.base(request), can_read_files=readable))


async def latest(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    dep = _latest_or_fail(ctx.state, request.match_info["id"])
    raise web.HTTPFound(f"{ctx.base(request)}/api/records/{dep.id}")


def _hits(request: web.Request, deps: list[Deposition]) -> web.Response:
    ctx = request.app[CTX]
    try:
        size = min(int(request.query.get("size", "10")), 100)
        page = max(int(request.query.get("page", "1")), 1)
    except ValueError:
        fail(400, "Validation error.", [{"field": "size", "messages": ["Not a valid integer."]}])
    base = ctx.base(request)
    user = user_of(request)
    chosen = deps[(page - 1) * size : page * size]
    hits = [record_json(ctx.state, d, base, can_read_files=files_readable(d, user)) for d in chosen]
    links: Obj = {"self": str(request.url)}
    if page * size < len(deps):
        links["next"] = str(request.url.update_query(page=str(page + 1)))
    return json_response({"hits": {"hits": hits, "total": len(deps)}, "links": links})


async def versions(request: web.Request) -> web.Response:
    state = request.app[CTX].state
    dep = _latest_or_fail(state, request.match_info["id"])
    ids = state.concepts[dep.concept].versions
    deps = [state.depositions[i] for i in reversed(ids) if state.depositions[i].published]
    return _hits(request, [d for d in deps if not d.deleted])


async def search(request: web.Request) -> web.Response:
    state = request.app[CTX].state
    all_versions = request.query.get("all_versions", "").lower() in ("1", "true", "yes")
    return _hits(request, state.search_records(request.query.get("q", ""), all_versions))


def _readable_file(request: web.Request) -> tuple[Deposition, StoredFile]:
    state = request.app[CTX].state
    dep = _published(state, request.match_info["id"])
    if dep is None:
        fail(404, "The persistent identifier does not exist.")
    stored = dep.record_files.get(request.match_info["key"])
    if stored is None:
        fail(404, "The file does not exist.")
    if not files_readable(dep, user_of(request)):
        why = restricted_reason(dep.record_metadata or {})
        fail(403, f"You don't have the permission to access the requested resource (files {why}).")
    return dep, stored


async def files(request: web.Request) -> web.Response:
    state = request.app[CTX].state
    dep = _published(state, request.match_info["id"])
    if dep is None:
        fail(404, "The persistent identifier does not exist.")
    base = request.app[CTX].base(request)
    entries = []
    if files_readable(dep, user_of(request)):
        for f in dep.record_files.values():
            url = f"{base}/api/records/{dep.id}/files/{f.key}"
            entries.append(
                {
                    "key": f.key,
                    "size": f.size,
                    "checksum": f.checksum,
                    "status": "completed",
                    "mimetype": mimetype_of(f.key),
                    "file_id": f.file_id,
                    "links": {"self": url, "content": f"{url}/content"},
                }
            )
    return json_response({"enabled": True, "entries": entries, "links": {"self": f"{base}/api/records/{dep.id}/files"}})


async def content(request: web.Request) -> web.StreamResponse:
    _, stored = _readable_file(request)
    return web.FileResponse(stored.blob, headers={"Content-Type": mimetype_of(stored.key)})


# --- admin ---------------------------------------------------------------------------------
def summary(state: ZenodoState) -> Obj:
    deps = list(state.depositions.values())
    return {
        "depositions": len(deps),
        "drafts": sum(1 for d in deps if d.has_draft),
        "published": sum(1 for d in deps if d.published and not d.deleted),
        "concepts": len(state.concepts),
        "items": [
            {
                "id": d.id,
                "concept": d.concept,
                "owner": d.owner,
                "state": d.state,
                "deleted": d.deleted,
                "title": d.visible_metadata().get("title"),
                "files": {k: {"size": f.size, "md5": f.md5} for k, f in d.visible_files().items()},
            }
            for d in deps
        ],
        "options": state.options.as_dict(),
    }


async def admin_state(request: web.Request) -> web.Response:
    return json_response(summary(request.app[CTX].state))


async def admin_config(request: web.Request) -> web.Response:
    state = request.app[CTX].state
    if request.method == "POST":
        body = await json_body(request)
        if not isinstance(body, dict):
            fail(400, "Send a JSON object of options.")
        try:
            state.options.update(body)
        except ValueError as exc:
            fail(400, str(exc))
    return json_response(state.options.as_dict())


async def admin_requests(request: web.Request) -> web.Response:
    return json_response(request.app[CTX].rows)


def _admin_record(request: web.Request) -> Deposition:
    dep = request.app[CTX].state.depositions.get(int(request.match_info["id"]))
    if dep is None or not dep.published:
        fail(404, "No such published record.")
    return dep


async def admin_delete(request: web.Request) -> web.Response:
    request.app[CTX].state.mark_deleted(_admin_record(request))
    return json_response({"deleted": True})


async def admin_corrupt(request: web.Request) -> web.Response:
    dep = _admin_record(request)
    body = await json_body(request) or {}
    stored = dep.record_files.get(str(body.get("key")))
    if stored is None:
        fail(404, "No such file in the record.")
    offset = int(body.get("offset", 0))
    _, copy = request.app[CTX].state.new_blob()
    await asyncio.to_thread(_flip_copy, stored.blob, copy, offset)
    # Only this record serves the bad copy; the listed size and md5 stay as they were.
    dep.record_files[stored.key] = StoredFile(stored.file_id, stored.key, stored.size, stored.md5, copy, stored.created)
    return json_response({"corrupted": stored.key, "offset": offset})


def _flip_copy(src: Path, dst: Path, offset: int) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]) if byte else b"\x00")


def routes() -> list[web.RouteDef]:
    rec = "/api/records/{id}"
    return [
        web.get("/api/records", search),
        web.get(rec, read),
        web.get(rec + "/versions/latest", latest),
        web.get(rec + "/versions", versions),
        web.get(rec + "/files", files),
        web.get(rec + "/files/{key}/content", content),
        web.get("/_sandbox/state", admin_state),
        web.get("/_sandbox/config", admin_config),
        web.post("/_sandbox/config", admin_config),
        web.get("/_sandbox/requests", admin_requests),
        web.post("/_sandbox/records/{id}/delete", admin_delete),
        web.post("/_sandbox/records/{id}/corrupt", admin_corrupt),
    ]
