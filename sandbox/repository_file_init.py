"""A file-init request (``POST .../draft/files``) read and checked, as InvenioRDM does it.

The endpoint is ``sandbox.repository_files.init_files``; here is what it asks for: the
items parsed (unknown fields, keys, sizes, L or M transfers), the record's room checked
(file count, file size, quota) and the pending entries made.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sandbox.repository_core import ApiError, fail
from sandbox.repository_options import RepositoryOptions
from sandbox.repository_store import Obj

INIT_FIELDS = frozenset({"key", "size", "checksum", "metadata", "access", "transfer", "storage_class"})
MAX_PARTS = 10_000


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "A validation error occurred.", [{"field": field, "messages": [message]}])


def parse_init(body: Any) -> list[Obj]:
    """The items of an init request body, each with a clean ``transfer``; refused as a whole
    at the first bad item, naming its field."""
    if not isinstance(body, list):
        raise _invalid("_schema", "Invalid input type.")
    if not body:
        raise _invalid("_schema", "No files to upload.")
    items: list[Obj] = []
    seen: set[str] = set()
    for index, item in enumerate(body):
        items.append(_parse_item(index, item, seen))
    return items


def _parse_item(index: int, item: Any, seen: set[str]) -> Obj:
    if not isinstance(item, dict):
        raise _invalid(f"{index}", "Invalid input type.")
    for name in item:
        if name not in INIT_FIELDS:
            raise _invalid(f"{index}.{name}", "Unknown field.")
    key = item.get("key")
    if not isinstance(key, str) or not key.strip():
        raise _invalid(f"{index}.key", "Missing data for required field.")
    if key in seen:
        fail(400, f"File with key {key} already exists.")
    seen.add(key)
    size = item.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise _invalid(f"{index}.size", "Not a valid integer.")
    return {**item, "transfer": _parse_transfer(index, item.get("transfer") or {"type": "L"}, size)}


def _parse_transfer(index: int, transfer: Any, size: int | None) -> Obj:
    if not isinstance(transfer, dict):
        raise _invalid(f"{index}.transfer", "Invalid input type.")
    kind = transfer.get("type", "L")
    if kind not in ("L", "M"):
        raise _invalid(f"{index}.transfer.type", f"Transfer type {kind} is not supported by this sandbox.")
    if kind == "L":
        return {"type": kind}
    parts, part_size = transfer.get("parts"), transfer.get("part_size")
    if not isinstance(parts, int) or parts < 1 or parts > MAX_PARTS:
        fail(400, "Multipart file transfer requires parts.")
    if not size:
        fail(400, "Multipart file transfer requires file size.")
    if not isinstance(part_size, int) or part_size < 1:
        fail(400, "Multipart file transfer to local storage requires part_size.")
    if (parts - 1) * part_size >= size or parts * part_size < size:
        raise _invalid(f"{index}.transfer.parts", "parts and part_size do not match the file size.")
    return {"type": kind, "parts": parts, "part_size": part_size}


def check_room(files: dict[str, Obj], items: list[Obj], opts: RepositoryOptions) -> None:
    """The new items fit the record: new keys, file count, file size, the record's quota."""
    for item in items:
        if item["key"] in files:
            fail(400, f"File with key {item['key']} already exists.")
    if len(files) + len(items) > opts.max_files:
        fail(400, "Uploading selected files will result in exceeding the max amount per record.")
    used = sum(int(f.get("size") or f.get("declared_size") or 0) for f in files.values())
    for item in items:
        size = item.get("size")
        if size is not None and size > opts.max_file_size:
            fail(400, f"Maximum file size exceeded ({item['key']}).")
        used += size or 0
    if used > opts.max_record_size:
        fail(400, "Bucket quota exceeded.")


def pending_entry(item: Obj, now: str, expires: str) -> Obj:
    """The draft's entry for an initialised file: pending until its content is committed."""
    return {
        "key": item["key"],
        "status": "pending",
        "created": now,
        "updated": now,
        "metadata": item.get("metadata"),
        "declared_size": item.get("size"),
        "declared_checksum": item.get("checksum"),
        "transfer": item.get("transfer") or {"type": "L"},
        "file_id": secrets.token_hex(16),
        "blob": None,
        "expires": expires,
        "parts_done": [],
    }


def expiry() -> str:
    """When a pending file of a new init expires (two weeks, as InvenioRDM)."""
    return (datetime.now(UTC) + timedelta(days=14)).isoformat()


def preallocate(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        fh.truncate(size)
