"""State of the sandbox repository: records, parents, requests and file blobs.

Everything lives in memory for simple handlers and is written through to SQLite (WAL)
on every change, so a killed or restarted server comes back with the same state.
File contents are blobs under `blobs/`, named by a file id, shared (never copied)
between a draft, its published record and later versions.

The search index is a separate, optionally delayed view (like an OpenSearch refresh
interval): a change becomes visible to search only `index_delay_ms` after it was made.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

Obj = dict[str, Any]

# Crockford base32 without ambiguous letters, as InvenioRDM's recid provider uses.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"

KINDS = ("entity", "parent", "request")


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


DocFn = Callable[[Obj], "Obj | None"]


class Store:
    def __init__(self, data_dir: Path, index_doc: DocFn) -> None:
        self.data_dir = data_dir
        self.blob_dir = data_dir / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(data_dir / "state.sqlite3", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS objects (kind TEXT NOT NULL, id TEXT NOT NULL, data BLOB NOT NULL,"
            " PRIMARY KEY (kind, id))"
        )
        self.entities: dict[str, Obj] = {}
        self.parents: dict[str, Obj] = {}
        self.requests: dict[str, Obj] = {}
        tables = {"entity": self.entities, "parent": self.parents, "request": self.requests}
        for kind, oid, data in self._db.execute("SELECT kind, id, data FROM objects"):
            tables[kind][oid] = orjson.loads(data)
        # Search index: `index_doc(entity)` is what search finds for an entity (None: nothing).
        # With a refresh delay, search keeps seeing the previous document until `due`.
        self._index_doc = index_doc
        self._last_doc: dict[str, Obj | None] = {}
        self._stale: dict[str, tuple[Obj | None, float]] = {}
        self.index_delay_s = 0.0

    def close(self) -> None:
        self._db.close()

    # --- persistence -------------------------------------------------------------
    def _put(self, kind: str, obj: Obj) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO objects (kind, id, data) VALUES (?, ?, ?)", (kind, obj["id"], orjson.dumps(obj))
        )

    def _del(self, kind: str, oid: str) -> None:
        self._db.execute("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, oid))

    def save_entity(self, entity: Obj) -> None:
        entity["updated"] = now_iso()
        self.entities[entity["id"]] = entity
        self._put("entity", entity)
        self._reindex(entity["id"], self._index_doc(entity))

    def delete_entity(self, eid: str) -> None:
        self.entities.pop(eid, None)
        self._del("entity", eid)
        self._reindex(eid, None)

    def save_parent(self, parent: Obj) -> None:
        self.parents[parent["id"]] = parent
        self._put("parent", parent)

    def delete_parent(self, pid: str) -> None:
        self.parents.pop(pid, None)
        self._del("parent", pid)

    def save_request(self, request: Obj) -> None:
        request["updated"] = now_iso()
        self.requests[request["id"]] = request
        self._put("request", request)

    # --- ids and blobs -------------------------------------------------------------
    def new_id(self) -> str:
        while True:
            raw = "".join(secrets.choice(_ALPHABET) for _ in range(10))
            rid = f"{raw[:5]}-{raw[5:]}"
            if rid not in self.entities and rid not in self.parents:
                return rid

    def blob_path(self, blob: str) -> Path:
        return self.blob_dir / blob[:2] / blob

    def new_blob(self) -> tuple[str, Path]:
        blob = secrets.token_hex(16)
        path = self.blob_path(blob)
        path.parent.mkdir(parents=True, exist_ok=True)
        return blob, path

    def blob_referenced(self, blob: str) -> bool:
        for entity in self.entities.values():
            for files in (entity.get("draft_files") or {}, entity.get("record_files") or {}):
                if any(f.get("blob") == blob for f in files.values()):
                    return True
        return False

    def release_blob(self, blob: str | None) -> None:
        """Delete a blob nobody refers to any more (drafts, records and versions share them)."""
        if blob and not self.blob_referenced(blob):
            self.blob_path(blob).unlink(missing_ok=True)

    # --- search index with refresh delay ---------------------------------------------
    def prime_index(self) -> None:
        """Index what was loaded from disk (after a restart search sees everything at once)."""
        self._last_doc = {eid: self._index_doc(entity) for eid, entity in self.entities.items()}

    def reindex(self, eid: str) -> None:
        """Refresh an entity's search document after a change outside save_entity (e.g. versions)."""
        entity = self.entities.get(eid)
        self._reindex(eid, self._index_doc(entity) if entity else None)

    def _doc(self, eid: str) -> Obj | None:
        return self._last_doc.get(eid)

    def _reindex(self, eid: str, doc: Obj | None) -> None:
        previous = self._last_doc.get(eid)
        self._last_doc[eid] = doc
        if self.index_delay_s <= 0:
            return
        now = time.monotonic()
        stale = self._stale.get(eid)
        seen = stale[0] if stale and now < stale[1] else previous
        self._stale[eid] = (seen, now + self.index_delay_s)

    def search_docs(self) -> list[Obj]:
        """What search sees now: current documents, except changes younger than the delay."""
        now = time.monotonic()
        out: list[Obj] = []
        for eid in list(self._stale):
            if now >= self._stale[eid][1]:
                del self._stale[eid]
        for eid in self.entities.keys() | self._stale.keys():
            doc = self._stale[eid][0] if eid in self._stale else self._doc(eid)
            if doc is not None:
                out.append(doc)
        return out
