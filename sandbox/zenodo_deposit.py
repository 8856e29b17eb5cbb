"""The legacy deposit API of the Zenodo stand-in: depositions, actions, files, buckets.

POST   /api/deposit/depositions                      201 (body {} or {"metadata": ...})
GET    /api/deposit/depositions?q=&status=&page=&size=   200, a JSON list
GET|PUT|DELETE /api/deposit/depositions/{id}         200 | 200 | 204
POST   /api/deposit/depositions/{id}/actions/publish 202
POST   .../actions/edit 201, .../actions/discard 204, .../actions/newversion 201
GET    /api/deposit/depositions/{id}/files           200 (bare hex checksums)
DELETE /api/deposit/depositions/{id}/files/{file_id} 204
PUT    /api/files/{bucket}/{key}                      201, replaces a same-name file
GET    /api/files/{bucket}[/{key}], DELETE /api/files/{bucket}/{key}
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import date
from pathlib import Path

from aiohttp import web

from sandbox.zenodo_http import CTX, fail, json_body, json_response, mimetype_of, owned, require_user
from sandbox.zenodo_json import bucket_listing, bucket_object, deposition_file, deposition_json
from sandbox.zenodo_metadata import Obj, field_errors, publish_errors
from sandbox.zenodo_state import Deposition, StoredFile, now_iso

MAX_PAGE_SIZE = 100
WRITE_BATCH = 4 << 20  # body bytes gathered before one write+hash hop to a thread
NEW_VERSION_HAS_FILES = "Please remove all files first."


def _metadata_from(body: object) -> Obj:
    if body is None:
        return {}
    if not isinstance(body, dict):
        fail(400, "Validation error.", [{"field": "_schema", "messages": ["Invalid input type."]}])
    metadata = body.get("metadata", {})
    errors = field_errors(metadata)
    if errors:
        fail(400, "Validation error.", errors)
    metadata = dict(metadata)
    if metadata and "publication_date" not in metadata:
        # zenodo-rdm's legacy deserializer: any metadata without a date gets today's.
        metadata["publication_date"] = date.today().isoformat()
    return metadata


def _answer(request: web.Request, dep: Deposition, status: int = 200) -> web.Response:
    ctx = request.app[CTX]
    return json_response(deposition_json(ctx.state, dep, ctx.base(request)), status)


async def create(request: web.Request) -> web.Response:
    user = require_user(request)
    metadata = _metadata_from(await json_body(request))
    dep = request.app[CTX].state.create(user, metadata)
    return _answer(request, dep, 201)


async def search(request: web.Request) -> web.Response:
    user = require_user(request)
    ctx = request.app[CTX]
    try:
        size = int(request.query.get("size", "10"))
        page = int(request.query.get("page", "1"))
    except ValueError:
        fail(400, "Validation error.", [{"field": "size", "messages": ["Not a valid integer."]}])
    if not 1 <= size <= MAX_PAGE_SIZE or page < 1:
        fail(400, "Validation error.", [{"field": "size", "messages": [f"Must be between 1 and {MAX_PAGE_SIZE}."]}])
    status = request.query.get("status")
    if status not in (None, "draft", "published"):
        fail(400, "Validation error.", [{"field": "status", "messages": ["Must be one of: draft, published."]}])
    hits = ctx.state.search_depositions(user, request.query.get("q", ""), status)
    chosen = hits[(page - 1) * size : page * size]
    base = ctx.base(request)
    return json_response([deposition_json(ctx.state, d, base) for d in chosen])


async def read(request: web.Request) -> web.Response:
    return _answer(request, owned(request, request.match_info["id"]))


async def update(request: web.Request) -> web.Response:
    dep = owned(request, request.match_info["id"])
    metadata = _metadata_from(await json_body(request))
    if not dep.has_draft:
        fail(400, "The deposition is published: open it with actions/edit before changing its metadata.")
    dep.metadata = metadata
    dep.modified = now_iso()
    request.app[CTX].state.reindex(dep)
    return _answer(request, dep)


async def delete(request: web.Request) -> web.Response:
    dep = owned(request, request.match_info["id"])
    if dep.published:
        fail(403, "You cannot delete a published deposition.")
    request.app[CTX].state.delete_draft(dep)
    return web.Response(status=204)


async def publish(request: web.Request) -> web.Response:
    dep = owned(request, request.match_info["id"])
    if not dep.has_draft:
        fail(400, "The deposition is already published: nothing to publish.")
    files = dep.files if not dep.published else dep.record_files
    errors = publish_errors(dep.metadata, len(files))
    if errors:
        fail(400, "Validation error.", errors)
    request.app[CTX].state.publish(dep)
    return _answer(request, dep, 202)


async def edit(request: web.Request) -> web.Response:
    dep = owned(request, request.match_info["id"])
    if dep.published and not dep.editing:
        request.app[CTX].state.edit(dep)
    return _answer(request, dep, 201)


async def discard(request: web.Request) -> web.Response:
    dep = owned(request, request.match_info["id"])
    request.app[CTX].state.discard(dep)
    return web.Response(status=204)


async def new_version(request: web.Request) -> web.Response:
    dep = owned(request, request.match_info["id"])
    state = request.app[CTX].state
    latest = state.latest_published(dep.concept)
    if latest is None:
        fail(400, "The deposition is not published: publish it before making a new version.")
    newest = state.latest_version(dep)
    if not newest.published:
        # A new-version draft is open already: Zenodo hands it back and imports the
        # files into it, which fails when it has files of its own.
        if newest.files:
            fail(400, NEW_VERSION_HAS_FILES, [{"field": "files.enabled", "messages": [NEW_VERSION_HAS_FILES]}])
        newest.files = dict(latest.record_files)
        state.reindex(newest)
        draft = newest
    else:
        draft = state.open_new_version(latest)
    answer = draft if state.options.newversion_answer == "draft" else dep
    return _answer(request, answer, 201)


async def list_files(request: web.Request) -> web.Response:
    dep = owned(request, request.match_info["id"])
    base = request.app[CTX].base(request)
    return json_response([deposition_file(dep, f, base) for f in dep.visible_files().values()])


async def delete_file(request: web.Request) -> web.Response:
    dep = owned(request, request.match_info["id"])
    if not dep.files_editable:
        fail(403, "The files of a published deposition cannot change (make a new version).")
    key = next((k for k, f in dep.files.items() if f.file_id == request.match_info["file_id"]), None)
    if key is None:
        fail(404, "The file does not exist.")
    dep.files.pop(key)
    request.app[CTX].state.reindex(dep)
    return web.Response(status=204)


# --- buckets (Files-REST) ----------------------------------------------------------------
def _bucket(request: web.Request) -> Deposition:
    ctx = request.app[CTX]
    dep_id = ctx.state.buckets.get(request.match_info["bucket"])
    if dep_id is None:
        fail(404, "Bucket does not exist.")
    return owned(request, str(dep_id))


async def put_object(request: web.Request) -> web.Response:
    dep = _bucket(request)
    state = request.app[CTX].state
    opts = state.options
    key = request.match_info["key"]
    if not dep.files_editable:
        fail(403, "The bucket is locked: the files of a published deposition cannot change (make a new version).")
    if not key or "/" in key or key in (".", ".."):
        fail(400, f"Invalid file name {key!r}.")
    count, used = state.used(dep, replacing=key)
    if count >= opts.max_files:
        fail(400, f"Too many files: a deposition holds at most {opts.max_files} files (it has {count}).")
    declared = request.content_length
    if declared is not None and used + declared > opts.max_bytes:
        fail(413, f"Bucket quota exceeded: {used} + {declared} bytes is more than the {opts.max_bytes} allowed.")
    file_id, blob = state.new_blob()
    try:
        size, md5 = await _receive(request, blob, opts.max_bytes - used)
    except BaseException:
        await asyncio.to_thread(blob.unlink, missing_ok=True)
        raise
    if declared is not None and size != declared:
        await asyncio.to_thread(blob.unlink, missing_ok=True)
        fail(400, f"The body was {size} bytes, Content-Length said {declared}.")
    stored = StoredFile(file_id=file_id, key=key, size=size, md5=md5, blob=blob, created=now_iso())
    # Replace only now that the new content is complete: a failed upload leaves the old file.
    dep.files.pop(key, None)
    dep.files[key] = stored
    dep.modified = stored.created
    state.reindex(dep)
    base = request.app[CTX].base(request)
    return json_response(bucket_object(dep, stored, base, mimetype_of(key)), 201)


async def _receive(request: web.Request, blob: Path, room: int) -> tuple[int, str]:
    """Stream the body to ``blob`` (md5 on the way); refuse it past ``room`` bytes."""
    digest = hashlib.md5()
    size = 0
    fd = await asyncio.to_thread(os.open, blob, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pending: list[bytes] = []
        held = 0
        async for chunk in request.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > room:
                fail(413, f"Bucket quota exceeded: the deposition has room for {room} more bytes.")
            pending.append(chunk)
            held += len(chunk)
            if held >= WRITE_BATCH:
                await asyncio.to_thread(_write, fd, digest, pending)
                pending, held = [], 0
        if pending:
            await asyncio.to_thread(_write, fd, digest, pending)
    finally:
        await asyncio.to_thread(os.close, fd)
    return size, digest.hexdigest()


def _write(fd: int, digest: hashlib._Hash, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


async def get_bucket(request: web.Request) -> web.Response:
    dep = _bucket(request)
    return json_response(bucket_listing(dep, request.app[CTX].base(request), mimetype_of))


async def get_object(request: web.Request) -> web.StreamResponse:
    dep = _bucket(request)
    stored = dep.files.get(request.match_info["key"])
    if stored is None:
        fail(404, "Object does not exist.")
    return web.FileResponse(stored.blob, headers={"Content-Type": mimetype_of(stored.key)})


async def delete_object(request: web.Request) -> web.Response:
    dep = _bucket(request)
    if not dep.files_editable:
        fail(403, "The bucket is locked: the files of a published deposition cannot change.")
    if dep.files.pop(request.match_info["key"], None) is None:
        fail(404, "Object does not exist.")
    request.app[CTX].state.reindex(dep)
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    dep = "/api/deposit/depositions/{id}"
    return [
        web.post("/api/deposit/depositions", create),
        web.get("/api/deposit/depositions", search),
        web.get(dep, read),
        web.put(dep, update),
        web.delete(dep, delete),
        web.post(dep + "/actions/publish", publish),
        web.post(dep + "/actions/edit", edit),
        web.post(dep + "/actions/discard", discard),
        web.post(dep + "/actions/newversion", new_version),
        web.get(dep + "/files", list_files),
        web.delete(dep + "/files/{file_id}", delete_file),
        web.get("/api/files/{bucket}", get_bucket),
        web.put("/api/files/{bucket}/{key}", put_object),
        web.get("/api/files/{bucket}/{key}", get_object),
        web.delete("/api/files/{bucket}/{key}", delete_object),
    ]
