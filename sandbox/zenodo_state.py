"""State of the Zenodo stand-in: depositions, concepts, file blobs, limits and search.

Zenodo (on InvenioRDM since Oct 2023) keeps one entity per version: a deposition id is
also the record id once published, and all versions share a concept id (the RDM parent).
A published deposition may be reopened (``actions/edit``: metadata only, files locked) or
get a new version (``actions/newversion``: a new draft with the files imported).

Everything is in memory (the stand-in lives as long as a test or ``ferry sandbox``);
file contents are blobs under ``DATA/blobs/``, shared by a draft, its record and later
versions, never rewritten (an upload writes a new blob).

Search sees a change only ``index_delay_ms`` after it was made, as Zenodo's search index
does (seconds, in real life): code that looks for its own draft by a source id right after
creating it must not trust a miss.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from sandbox.zenodo_metadata import Obj, matches_query

GB = 10**9
NewVersionAnswer = Literal["original", "draft"]
FIRST_ID = 1000001  # real Zenodo ids are 7-8 digits; any int works


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class ZenodoOptions:
    """Knobs (keyword args of ``start_zenodo``, flags of ``python -m sandbox.zenodo``,
    keys of ``POST /_sandbox/config``)."""

    # Zenodo's defaults for authenticated users: 100 requests per minute, 5000 per hour.
    rate_per_minute: int = 100
    rate_per_hour: int = 5000
    # Per deposition: 100 files and 50 GB (a single file may use all of it).
    max_files: int = 100
    max_bytes: int = 50 * GB
    # Search sees a change this long after it was made.
    index_delay_ms: float = 0.0
    # What actions/newversion answers with: the original deposition (the legacy API as
    # documented and as clients such as zenodo-client expect: the new draft is at
    # links.latest_draft), or the new draft itself (what zenodo-rdm's code does today).
    newversion_answer: NewVersionAnswer = "original"
    latency_ms: float = 0.0
    # The next N API requests answer 429 (with Retry-After: retry_after).
    force_429: int = 0
    retry_after: int = 2

    def update(self, values: dict[str, Any]) -> None:
        known = {f.name: f for f in dataclasses.fields(self)}
        for name, raw in values.items():
            if name not in known:
                raise ValueError(f"unknown Zenodo sandbox option {name!r}")
            current = getattr(self, name)
            try:
                if name == "newversion_answer":
                    if raw not in get_args(NewVersionAnswer):
                        raise ValueError(raw)
                    value: Any = raw
                elif isinstance(current, int):
                    value = int(raw)
                else:
                    value = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"option {name}: bad value {raw!r}") from None
            setattr(self, name, value)

    def as_dict(self) -> Obj:
        return dataclasses.asdict(self)


@dataclass
class StoredFile:
    file_id: str
    key: str
    size: int
    md5: str
    blob: Path
    created: str

    @property
    def checksum(self) -> str:
        return f"md5:{self.md5}"


@dataclass
class Deposition:
    id: int
    concept: int
    owner: int
    bucket: str
    version_index: int
    created: str
    modified: str
    metadata: Obj = field(default_factory=dict)  # the editable (draft) face
    files: dict[str, StoredFile] = field(default_factory=dict)  # draft files, in upload order
    published: bool = False
    editing: bool = False  # a published deposition reopened with actions/edit
    record_metadata: Obj | None = None  # the published face
    record_files: dict[str, StoredFile] = field(default_factory=dict)
    published_at: str | None = None
    deleted: bool = False
    # Search snapshots: (visible from, document or None when removed), oldest first.
    index: list[tuple[float, Obj | None]] = field(default_factory=list)

    @property
    def has_draft(self) -> bool:
        return not self.published or self.editing

    @property
    def files_editable(self) -> bool:
        """Files can change only before the first publication (Zenodo locks them after)."""
        return not self.published

    @property
    def state(self) -> str:
        if not self.published:
            return "unsubmitted"
        return "inprogress" if self.editing else "done"

    def visible_metadata(self) -> Obj:
        return self.metadata if self.has_draft or self.record_metadata is None else self.record_metadata

    def visible_files(self) -> dict[str, StoredFile]:
        return self.files if not self.published else self.record_files


@dataclass
class Concept:
    id: int
    owner: int
    versions: list[int] = field(default_factory=list)  # deposition ids, oldest first


def restricted_reason(metadata: Obj, today: date | None = None) -> str | None:
    """Why anonymous users cannot read a record's files, or None when they can."""
    access = str(metadata.get("access_right") or "open")
    if access in ("restricted", "closed"):
        return access
    if access == "embargoed":
        until = str(metadata.get("embargo_date") or "")
        try:
            if date.fromisoformat(until) > (today or date.today()):
                return f"embargoed until {until}"
        except ValueError:
            return "embargoed"
    return None


class ZenodoState:
    """All depositions and concepts of one running stand-in."""

    def __init__(self, data_dir: Path, options: ZenodoOptions) -> None:
        self.data_dir = data_dir
        self.blobs = data_dir / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.options = options
        self.depositions: dict[int, Deposition] = {}
        # Deleted drafts the search index still shows (until their removal is visible).
        self.removed: dict[int, Deposition] = {}
        self.concepts: dict[int, Concept] = {}
        self.buckets: dict[str, int] = {}  # bucket id -> deposition id
        self._next_id = FIRST_ID
        self._next_blob = 0

    # --- ids -------------------------------------------------------------------------
    def _new_id(self) -> int:
        value = self._next_id
        self._next_id += 1
        return value

    def new_blob(self) -> tuple[str, Path]:
        self._next_blob += 1
        file_id = f"{self._next_blob:08x}-{int(time.time() * 1000) & 0xFFFF:04x}-4000-8000-{self._next_blob:012x}"
        return file_id, self.blobs / file_id

    # --- life cycle ----------------------------------------------------------------------
    def create(self, owner: int, metadata: Obj, concept: Concept | None = None) -> Deposition:
        if concept is None:
            concept = Concept(id=self._new_id(), owner=owner)
            self.concepts[concept.id] = concept
        dep_id = self._new_id()
        bucket = f"{dep_id:08x}-b0c4-4e7a-9d1b-{dep_id:012x}"
        stamp = now_iso()
        dep = Deposition(
            id=dep_id,
            concept=concept.id,
            owner=owner,
            bucket=bucket,
            version_index=len(concept.versions) + 1,
            created=stamp,
            modified=stamp,
            metadata=dict(metadata),
        )
        concept.versions.append(dep_id)
        self.depositions[dep_id] = dep
        self.buckets[bucket] = dep_id
        self.reindex(dep)
        return dep

    def delete_draft(self, dep: Deposition) -> None:
        """Remove a never-published draft entirely."""
        self.depositions.pop(dep.id, None)
        self.buckets.pop(dep.bucket, None)
        concept = self.concepts[dep.concept]
        concept.versions = [v for v in concept.versions if v != dep.id]
        if not concept.versions:
            self.concepts.pop(concept.id, None)
        dep.index.append((self._visible_at(), None))
        if self.options.index_delay_ms > 0:
            self.removed[dep.id] = dep

    def publish(self, dep: Deposition) -> None:
        stamp = now_iso()
        dep.record_metadata = dict(dep.metadata)
        if not dep.published:
            dep.record_files = dict(dep.files)
            dep.published_at = stamp
        dep.published = True
        dep.editing = False
        dep.modified = stamp
        self.reindex(dep)

    def edit(self, dep: Deposition) -> None:
        dep.editing = True
        dep.metadata = dict(dep.record_metadata or {})
        dep.modified = now_iso()
        self.reindex(dep)

    def discard(self, dep: Deposition) -> None:
        """Drop the changes of an edit session (a never-published draft is deleted)."""
        if not dep.published:
            self.delete_draft(dep)
            return
        dep.editing = False
        dep.metadata = dict(dep.record_metadata or {})
        dep.modified = now_iso()
        self.reindex(dep)

    def open_new_version(self, dep: Deposition) -> Deposition:
        """The concept's open new-version draft, made (with the files imported) if none is."""
        concept = self.concepts[dep.concept]
        newest = self.depositions[concept.versions[-1]]
        if not newest.published:
            return newest  # InvenioRDM hands back the draft that is already open
        draft = self.create(dep.owner, dict(newest.record_metadata or {}), concept)
        draft.metadata.pop("doi", None)
        draft.files = dict(newest.record_files)  # the import: blobs shared, not copied
        self.reindex(draft)
        return draft

    def mark_deleted(self, dep: Deposition) -> None:
        """An administrator removed a published record: the records API answers 410."""
        dep.deleted = True
        dep.index.append((self._visible_at(), None))

    # --- lookups -----------------------------------------------------------------------
    def latest_published(self, concept_id: int) -> Deposition | None:
        concept = self.concepts.get(concept_id)
        if concept is None:
            return None
        for dep_id in reversed(concept.versions):
            dep = self.depositions.get(dep_id)
            if dep is not None and dep.published and not dep.deleted:
                return dep
        return None

    def latest_version(self, dep: Deposition) -> Deposition:
        concept = self.concepts.get(dep.concept)
        if concept is None or not concept.versions:
            return dep
        return self.depositions.get(concept.versions[-1], dep)

    def used(self, dep: Deposition, replacing: str | None = None) -> tuple[int, int]:
        """(files, bytes) a deposition's draft holds, without the file ``replacing``."""
        files = [f for k, f in dep.files.items() if k != replacing]
        return len(files), sum(f.size for f in files)

    # --- search --------------------------------------------------------------------------
    def _visible_at(self) -> float:
        return time.monotonic() + self.options.index_delay_ms / 1000

    def reindex(self, dep: Deposition) -> None:
        doc = {
            "id": dep.id,
            "recid": dep.id,
            "conceptrecid": dep.concept,
            "owner": dep.owner,
            "state": dep.state,
            "submitted": dep.published,
            "draft": dep.has_draft,
            "published": dep.published and not dep.deleted,
            "metadata": dict(dep.visible_metadata()),
            "record_metadata": dict(dep.record_metadata or {}),
            "latest": False,  # filled in at query time
        }
        dep.index.append((self._visible_at(), doc))
        if len(dep.index) > 8:  # older snapshots can never be the visible one again
            now = time.monotonic()
            while len(dep.index) > 1 and dep.index[1][0] <= now:
                dep.index.pop(0)

    def _snapshot(self, dep: Deposition, now: float) -> Obj | None:
        doc: Obj | None = None
        for visible_from, snap in dep.index:
            if visible_from <= now:
                doc = snap
        return doc

    def search_depositions(self, owner: int, query: str, status: str | None) -> list[Deposition]:
        now = time.monotonic()
        hits = []
        for gone in [d for d in self.removed.values() if self._snapshot(d, now) is None]:
            del self.removed[gone.id]
        # A deleted draft stays a hit (its reads 404) until the index refresh shows it gone.
        for dep in list(self.depositions.values()) + list(self.removed.values()):
            doc = self._snapshot(dep, now)
            if doc is None or doc["owner"] != owner:
                continue
            if status == "draft" and doc["submitted"] and not doc["draft"]:
                continue
            if status == "published" and not doc["submitted"]:
                continue
            if matches_query(doc, query):
                hits.append(dep)
        hits.sort(key=lambda d: d.modified, reverse=True)
        return hits

    def search_records(self, query: str, all_versions: bool) -> list[Deposition]:
        now = time.monotonic()
        hits = []
        for dep in list(self.depositions.values()):
            doc = self._snapshot(dep, now)
            if doc is None or not doc["published"]:
                continue
            latest = self.latest_published(dep.concept)
            if not all_versions and (latest is None or latest.id != dep.id):
                continue
            view = {**doc, "metadata": doc["record_metadata"]}
            if matches_query(view, query):
                hits.append(dep)
        hits.sort(key=lambda d: d.published_at or "", reverse=True)
        return hits
