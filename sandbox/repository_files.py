"""Draft and record file endpoints: L (one PUT) and M (multipart) transfers.

Content is streamed to a blob on disk; writing and md5 hashing run in a worker
thread, overlapped with reading the next chunk from the socket, so an upload never
sits in memory and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import cast

from aiohttp import web

from ferry.core.checksums import hash_file
from sandbox.repository_body import (
    BlobWriter,
    ClientGone,
    Dropped,
    check_announced,
    check_content_type,
    cut_point,
    fault,
    receive,
)
from sandbox.repository_core import DROPPED_KEY, Repo, fail, guess_mimetype, json_response
from sandbox.repository_file_init import check_room, expiry, parse_init, pending_entry, preallocate
from sandbox.repository_records import REPO, _model
from sandbox.repository_store import Obj, now_iso

TRANSFER_FAILED = "File upload transfer failed."


def _repo(request: web.Request) -> Repo:
    return request.app[REPO]


def _entry(entity: Obj, key: str) -> Obj:
    entry = (entity.get("draft_files") or {}).get(key)
    if entry is None:
        fail(404, f"File with key {key} not found.")
    return cast(Obj, entry)


def _writable_draft(request: web.Request) -> tuple[Repo, Obj]:
    repo = _repo(request)
    entity = repo.owned_draft(request, _model(request), request.match_info["id"])
    draft = entity["draft"]
    if not draft.get("files", {}).get("enabled", True):
        fail(403, "Permission denied.")  # files disabled (metadata-only record)
    if draft.get("files_locked"):
        # files of a published record are locked; a new version is needed to change them
        fail(403, "Permission denied.")
    return repo, entity


# --- listing and init -----------------------------------------------------------------
async def list_draft_files(request: web.Request) -> web.Response:
    repo = _repo(request)
    entity = repo.owned_draft(request, _model(request), request.match_info["id"])
    return json_response(repo.files_list_json(entity, repo.base(request), draft=True))


async def init_files(request: web.Request) -> web.Response:
    repo, entity = _writable_draft(request)
    items = parse_init(await repo.json_body(request))
    files: dict[str, Obj] = entity["draft_files"]
    check_room(files, items, repo.options)
    now, expires = now_iso(), expiry()
    for item in items:
        entry = pending_entry(item, now, expires)
        if entry["transfer"]["type"] == "M":
            # Local storage pre-allocates the file and writes every part in place.
            blob, path = repo.store.new_blob()
            await asyncio.to_thread(preallocate, path, int(item["size"]))
            entry["blob"] = blob
        files[item["key"]] = entry
    repo.bump(entity)
    repo.store.save_entity(entity)
    return json_response(repo.files_list_json(entity, repo.base(request), draft=True), 201)


# --- content --------------------------------------------------------------------------
def _remove_entry(repo: Repo, entity: Obj, key: str) -> None:
    entry = entity["draft_files"].pop(key, None)
    repo.bump(entity)
    repo.store.save_entity(entity)
    if entry is not None:
        repo.store.release_blob(entry.get("blob"))


def _failed_transfer(repo: Repo, request: web.Request, entity: Obj, entry: Obj) -> web.Response:
    """InvenioRDM answers a failed upload with 200, an `errors` string, and deletes the entry."""
    body = repo.file_json(entity, entry, repo.base(request), draft=True)
    _remove_entry(repo, entity, entry["key"])
    body["errors"] = TRANSFER_FAILED
    return json_response(body, 200)


def _size_limit(repo: Repo, entity: Obj, entry: Obj) -> int:
    opts = repo.options
    others = sum(
        int(f.get("size") or f.get("declared_size") or 0) for k, f in entity["draft_files"].items() if k != entry["key"]
    )
    limit = min(opts.max_file_size, max(0, opts.max_record_size - others))
    cap = opts.single_put_cap()
    if cap and entry["transfer"]["type"] != "M":
        limit = min(limit, cap)
    return limit


async def upload_content(request: web.Request) -> web.Response:
    repo, entity = _writable_draft(request)
    key = request.match_info["key"]
    entry = _entry(entity, key)
    check_content_type(request)
    if entry["transfer"]["type"] == "M" and entry["status"] == "pending":
        fail(400, "Can not set content for multipart file, use the parts instead.")
    if entry["status"] == "completed":
        fail(400, f'File with key "{key}" is already committed.')
    limit = _size_limit(repo, entity, entry)
    check_announced(request, limit)
    drop_at = cut_point(repo, request)
    fail_transfer = fault(repo, "transfer_fail_next", "transfer_fail_rate")
    corrupt = fault(repo, "corrupt_next", "")
    blob, path = repo.store.new_blob()
    writer = BlobWriter(path)
    try:
        total = await receive(
            request,
            [writer.write, writer.hash],
            limit=limit,
            drop_at=drop_at,
            corrupt=corrupt,
            rate=repo.options.body_bytes_per_s,
        )
    except (Dropped, ClientGone):
        await asyncio.to_thread(writer.close)
        path.unlink(missing_ok=True)
        request[DROPPED_KEY] = True
        if key in entity["draft_files"]:
            _remove_entry(repo, entity, key)
        return web.Response(status=499)
    except BaseException:
        await asyncio.to_thread(writer.close)
        path.unlink(missing_ok=True)
        raise
    await asyncio.to_thread(writer.close)
    entry = entity["draft_files"].get(key)
    if entry is None:  # deleted while we were receiving
        path.unlink(missing_ok=True)
        fail(404, f"File with key {key} not found.")
    declared = entry.get("declared_size")
    if fail_transfer or (declared is not None and total != declared):
        path.unlink(missing_ok=True)
        return _failed_transfer(repo, request, entity, entry)
    old_blob = entry.get("blob")
    entry.update(blob=blob, received_size=total, received_md5=writer.md5.hexdigest(), updated=now_iso())
    repo.bump(entity)
    repo.store.save_entity(entity)
    repo.store.release_blob(old_blob)
    return json_response(repo.file_json(entity, entry, repo.base(request), draft=True))


def _expected_part_size(request: web.Request, transfer: Obj, size: int, part: int) -> int:
    """The size part ``part`` must have; a part number or announced length out of line is refused."""
    parts, part_size = transfer["parts"], transfer["part_size"]
    if part < 1 or part > parts:
        fail(400, "Part number is higher than total parts sent in multipart initialization.")
    expected = int(part_size if part < parts else size - (parts - 1) * part_size)
    if request.content_length is not None and request.content_length != expected:
        fail(400, "Size of this part must be equal to part_size sent in multipart initialization.")
    return expected


async def upload_part(request: web.Request) -> web.Response:
    repo, entity = _writable_draft(request)
    key = request.match_info["key"]
    entry = _entry(entity, key)
    check_content_type(request)
    transfer = entry["transfer"]
    if transfer["type"] != "M" or entry["status"] != "pending":
        fail(400, f"File with key {key} is not a pending multipart upload.")
    part = int(request.match_info["part"])
    part_size = transfer["part_size"]
    expected = _expected_part_size(request, transfer, int(entry["declared_size"]), part)
    drop_at = cut_point(repo, request)
    fail_transfer = fault(repo, "transfer_fail_next", "transfer_fail_rate")
    corrupt = fault(repo, "corrupt_next", "")
    path = repo.store.blob_path(entry["blob"])
    fd = await asyncio.to_thread(os.open, path, os.O_WRONLY)
    offset = [(part - 1) * part_size]

    def write(data: bytes) -> None:
        os.pwrite(fd, data, offset[0])
        offset[0] += len(data)

    try:
        total = await receive(
            request, [write], limit=expected, drop_at=drop_at, corrupt=corrupt, rate=repo.options.body_bytes_per_s
        )
    except (Dropped, ClientGone):
        request[DROPPED_KEY] = True
        if key in entity["draft_files"]:
            _remove_entry(repo, entity, key)
        return web.Response(status=499)
    finally:
        await asyncio.to_thread(os.close, fd)
    entry = entity["draft_files"].get(key)
    if entry is None:
        fail(404, f"File with key {key} not found.")
    if fail_transfer:
        return _failed_transfer(repo, request, entity, entry)
    if total != expected:
        fail(400, "Size of this part must be equal to part_size sent in multipart initialization.")
    if part not in entry["parts_done"]:
        entry["parts_done"] = sorted([*entry["parts_done"], part])
    entry["updated"] = now_iso()
    repo.store.save_entity(entity)
    return json_response(repo.file_json(entity, entry, repo.base(request), draft=True))


# --- commit, read, delete ---------------------------------------------------------------
async def commit_file(request: web.Request) -> web.Response:
    repo, entity = _writable_draft(request)
    key = request.match_info["key"]
    entry = _entry(entity, key)
    if entry["status"] == "completed":
        return json_response(repo.file_json(entity, entry, repo.base(request), draft=True))
    transfer = entry["transfer"]
    if transfer["type"] == "L":
        if not entry.get("blob"):
            fail(400, f"File with key {key} has no content to commit.")
        entry.update(size=entry["received_size"], checksum=f"md5:{entry['received_md5']}")
    else:
        missing = sorted(set(range(1, transfer["parts"] + 1)) - set(entry["parts_done"]))
        if missing:
            fail(400, f"File with key {key} is missing parts {missing[:10]}.")
        entry["size"] = int(entry["declared_size"])
        # Like InvenioRDM on S3: a declared checksum is trusted as is; otherwise the
        # multipart placeholder (or nothing) stays until a background task has the md5.
        if entry.get("declared_checksum"):
            entry["checksum"] = entry["declared_checksum"]
        else:
            entry["checksum"] = (
                f"multipart:{secrets.token_hex(16)}-{transfer['part_size']}"
                if repo.options.multipart_checksum == "multipart"
                else None
            )
            entry["checksum_pending"] = True
        entry["transfer"] = {"type": "L"}  # after commit a multipart file is a plain local file
    entry.update(status="completed", mimetype=guess_mimetype(key), updated=now_iso())
    repo.bump(entity)
    repo.store.save_entity(entity)
    if entry.get("checksum_pending"):
        schedule_checksum(repo, entity["id"], key, entry["blob"])
    return json_response(repo.file_json(entity, entry, repo.base(request), draft=True))


def schedule_checksum(repo: Repo, eid: str, key: str, blob: str) -> None:
    task = asyncio.get_running_loop().create_task(_compute_checksum(repo, eid, key, blob))
    repo.background.add(task)
    task.add_done_callback(repo.background.discard)


async def _compute_checksum(repo: Repo, eid: str, key: str, blob: str) -> None:
    await asyncio.sleep(repo.options.checksum_delay_ms / 1000)
    digest = await asyncio.to_thread(_md5_file, repo.store.blob_path(blob))
    entity = repo.store.entities.get(eid)
    if entity is None:
        return
    for files in (entity.get("draft_files") or {}, entity.get("record_files") or {}):
        entry = files.get(key)
        if entry is not None and entry.get("blob") == blob:
            entry["checksum"] = f"md5:{digest}"
            entry.pop("checksum_pending", None)
    repo.store.save_entity(entity)


def _md5_file(path: Path) -> str:
    return hash_file(str(path), ("md5",)).hexdigests()["md5"]


def resume_checksums(repo: Repo) -> None:
    """After a restart, finish the md5 tasks that were still pending."""
    for entity in repo.store.entities.values():
        for files in (entity.get("draft_files") or {}, entity.get("record_files") or {}):
            for key, entry in files.items():
                if entry.get("checksum_pending") and entry.get("blob"):
                    schedule_checksum(repo, entity["id"], key, entry["blob"])


async def read_draft_file(request: web.Request) -> web.Response:
    repo = _repo(request)
    entity = repo.owned_draft(request, _model(request), request.match_info["id"])
    entry = _entry(entity, request.match_info["key"])
    return json_response(repo.file_json(entity, entry, repo.base(request), draft=True))


async def delete_draft_file(request: web.Request) -> web.Response:
    repo, entity = _writable_draft(request)
    key = request.match_info["key"]
    _entry(entity, key)
    _remove_entry(repo, entity, key)
    return web.Response(status=204)


async def download_draft_file(request: web.Request) -> web.StreamResponse:
    repo = _repo(request)
    entity = repo.owned_draft(request, _model(request), request.match_info["id"])
    return _download(repo, _entry(entity, request.match_info["key"]))


def _download(repo: Repo, entry: Obj) -> web.StreamResponse:
    if entry["status"] != "completed":
        fail(404, f"File with key {entry['key']} is not committed.")
    return web.FileResponse(
        repo.store.blob_path(entry["blob"]),
        headers={"Content-Type": entry["mimetype"], "Content-Disposition": "attachment"},
    )


def _record_entry(request: web.Request) -> tuple[Repo, Obj, Obj]:
    repo = _repo(request)
    entity = repo.published(request, _model(request), request.match_info["id"])
    access = entity["record"].get("access") or {}
    if access.get("files") == "restricted" and repo.user(request) != entity["owner"]:
        fail(403, "Permission denied.")
    key = request.match_info.get("key")
    entry = (entity.get("record_files") or {}).get(key) if key is not None else {}
    if entry is None:
        fail(404, f"File with key {key} not found.")
    return repo, entity, entry


async def list_record_files(request: web.Request) -> web.Response:
    repo, entity, _ = _record_entry(request)
    return json_response(repo.files_list_json(entity, repo.base(request), draft=False))


async def read_record_file(request: web.Request) -> web.Response:
    repo, entity, entry = _record_entry(request)
    return json_response(repo.file_json(entity, entry, repo.base(request), draft=False))


async def download_record_file(request: web.Request) -> web.StreamResponse:
    repo, _, entry = _record_entry(request)
    return _download(repo, entry)


def routes(model_pattern: str) -> list[web.RouteDef]:
    # Keys may contain "/" (sent raw or as %2F): the specific suffix routes go first.
    item = f"/api/{{coll:{model_pattern}}}/{{id}}"
    draft_files = item + "/draft/files"
    key = draft_files + "/{key:.+}"
    record_key = item + "/files/{key:.+}"
    return [
        web.get(draft_files, list_draft_files),
        web.post(draft_files, init_files),
        web.put(key + r"/content/{part:\d+}", upload_part),
        web.put(key + "/content", upload_content),
        web.get(key + "/content", download_draft_file),
        web.post(key + "/commit", commit_file),
        web.get(key, read_draft_file),
        web.delete(key, delete_draft_file),
        web.get(item + "/files", list_record_files),
        web.get(record_key + "/content", download_record_file),
        web.get(record_key, read_record_file),
    ]
