"""`ferry push DIR`: a local directory into one record of a target (cartloader's upload_zenodo).

The policy lives here; the target only speaks ``upload.targets.base.Target``. In order:

1. Select the files (``all`` / ``catalog`` / ``files``), check every one exists and is
   readable, and that their keys suit the target (flat keys unless it has sub-paths):
   any problem is an ``InputError`` before the first request.
2. The metadata of a new record is checked for the fields a publish needs, before any
   request, too. Hash the files (md5, off the event loop; kept in ``DIR/.ferry`` by size
   and mtime so a re-run does not read them again).
3. The record: ``--deposition ID`` (published: a new version), else the one this directory
   was pushed into before (the ledger ``DIR/.ferry/push-TARGET.sqlite`` keeps the id, and a
   create's intent before it is sent, so a kill never leads to a second record), else a
   new draft. Metadata flags override only their fields; only a changed document is sent.
4. The plan against the files already there: same key, size and md5 is skipped (unless
   ``restart``), different is replaced; the target's limits are checked over what will be
   there afterwards. A dry run prints this and stops: it has made no writing request.
5. Upload by group (core first), each file verified by the target's md5; the marker after
   the core group is verified; publish only when every selected file is verified.

The steps beside it: ``push_select`` (1), ``push_metadata`` (2), ``push_hashes`` (the md5
cache), ``push_create`` (3: the marker a create carries and the look for a lost one, so a
kill never leaves a twin draft), ``push_plan`` (4).

Why one module of about 470 lines: ``Pusher`` is the order of one push, read top to
bottom, and holds the result, ledger and plan output every step writes to; the steps
without that state live in the modules above.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from ferry.core.atomic import atomic_write_bytes
from ferry.core.checksums import Checksum
from ferry.core.errors import FerryError, InputError, TargetError, maybe_applied
from pipeline.ledger import Ledger
from pipeline.push_create import find_lost_create, keep_oldest, marked, marks
from pipeline.push_hashes import Md5Cache
from pipeline.push_metadata import (
    REQUIRED,
    MetadataReader,
    check_new_metadata,
    creators_from,
    dialect,
    metadata_changes,
    missing_required,
    wanted_metadata,
)
from pipeline.push_plan import check_limits, decide
from pipeline.push_select import STATE_DIR, PushFile, select_files
from stats.events import StatsWriter
from upload.targets.base import ListingHinted, RemoteFile, RemoteRecord, Target

if TYPE_CHECKING:
    from pipeline.context import UploadProgress

log = logging.getLogger(__name__)

Select = Literal["all", "catalog", "files"]
LEDGER_KEY = "dir"  # one record per (directory, target)
GROUPS = ("core", "basemap", "optional")  # the order files are sent in; the marker follows "core"


@dataclass(frozen=True)
class PushOptions:
    directory: Path
    select: Select = "all"
    catalog: Path | None = None
    files: Sequence[str] = ()
    deposition: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)  # title, creators, description, upload_type
    metadata_file: Path | None = None
    restart: bool = False
    publish: bool = False
    marker: bool = False
    flatten: bool = False
    jobs: int = 4
    dry_run: bool = False
    # Which selected keys to push (--include/--exclude, decided by the CLI); None: all.
    keep: Callable[[str], bool] | None = None
    keep_text: str = ""  # the patterns, for the message when nothing is left


@dataclass
class PushResult:
    record_id: str | None = None
    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    published: bool = False
    marker: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


class Pusher:
    """One push of a directory into one record of ``target``."""

    def __init__(
        self,
        target: Target,
        opts: PushOptions,
        *,
        stats: StatsWriter,
        ledger: Ledger | None,
        marker_suffix: str,
        profile: str = "zenodo",
        on_plan: Callable[[str], None] = print,
        shown: UploadProgress | None = None,
    ) -> None:
        self.document = dialect(profile)
        self.marking = marks(profile, target)  # creates carry the push's marker (pipeline.push_create)
        self.target, self.opts, self.stats, self.ledger = target, opts, stats, ledger
        self.name = opts.directory.resolve().name or "push"
        self.marker_suffix = marker_suffix
        self.plan = on_plan
        self.shown = shown  # the run display, if any
        self.result = PushResult()
        self.md5s = Md5Cache(opts.directory, jobs=opts.jobs, dry_run=opts.dry_run)

    async def run(self) -> PushResult:
        opts = self.opts
        files = await self._select()
        fields = wanted_metadata(opts.metadata_file, opts.fields)
        known_id = self._ledger_id()
        new_body = None
        if opts.deposition is None and known_id is None:
            new_body = self._new_body(fields)
        hashes = await self.md5s.hashes(files, read=False)  # what the cache knows; nothing read yet
        event = self.stats.open("record", self.name, file_count=len(files), bytes=sum(f.size for f in files))
        try:
            rec, have = await self._record(known_id, new_body, fields)
            # An md5 is needed first only to compare with a file the target holds; the others
            # are hashed while they are sent (one read, not two) and checked the same way.
            hashes |= await self.md5s.hashes([f for f in files if f.key in have and f.key not in hashes])
            todo, skipped = decide(files, hashes, have, restart=opts.restart, plan=self.plan)
            self.result.skipped.extend(skipped)
            check_limits(self.target.limits, files, have, recid=self.name, plan=self.plan)
            if opts.dry_run:
                event.close("dry-run", reason="dry run: nothing written")
                return self.result
            assert rec is not None
            self._mark_absent(rec, files, hashes, have, todo)
            await self._upload(rec, files, hashes, todo)
            await self._verify(rec, files, hashes)
            await self._finish(rec)
        except FerryError as exc:
            if exc.recid is None:
                exc.recid = self.name
            event.close("failed", error=exc)
            raise
        event.close(
            "ok" if self.result.ok else "failed",
            remote_id=self.result.record_id,
            reason=f"{len(self.result.sent)} sent, {len(self.result.skipped)} already there",
        )
        return self.result

    def _mark_absent(
        self,
        rec: RemoteRecord,
        files: list[PushFile],
        hashes: Mapping[str, Checksum],
        have: Mapping[str, RemoteFile],
        todo: set[str],
    ) -> None:
        """Tell a target that can use it (S3) which files the listing just showed absent or
        different: their put needs no probing HEAD first (a file with a cached md5 on a
        fresh prefix, or a changed one). A ``--restart`` of an identical file is not among
        them: its put still finds it there, as before."""
        if not isinstance(self.target, ListingHinted):
            return
        self.target.mark_absent(
            rec.recid,
            [
                f.key
                for f in files
                if f.key in todo
                and not (f.key in have and f.key in hashes and have[f.key].matches(f.size, hashes[f.key]))
            ],
        )

    async def _select(self) -> list[PushFile]:
        """The files to push: the selection, checked, then ``--include``/``--exclude``."""
        opts = self.opts
        files = await asyncio.to_thread(
            select_files,
            opts.directory,
            opts.select,
            opts.catalog,
            opts.files,
            flatten=opts.flatten,
            sub_paths=self.target.abilities.sub_paths,
            marker_suffix=self.marker_suffix,
        )
        if opts.keep is None:
            return files
        chosen = [f for f in files if opts.keep(f.key)]
        if files and not chosen:
            raise InputError(f"none of the {len(files)} selected file(s) matches {opts.keep_text}")
        return chosen

    async def _finish(self, rec: RemoteRecord) -> None:
        """Publish (when asked, able and every file is verified), and say so in the ledger."""
        if self.opts.publish and self.result.ok and self.target.abilities.publish:
            with self.stats.open("publish", self.name):
                outcome = await self.target.publish(rec)
            self.result.published = outcome.state == "published"
            await self._ledger_status("published")
        elif self.result.ok:
            await self._ledger_status("uploaded")

    # --- the record -------------------------------------------------------------------------

    def _ledger_id(self) -> str | None:
        if self.ledger is None or self.opts.deposition is not None:
            return None
        row = self.ledger.get(LEDGER_KEY)
        return row.remote_id if row is not None else None

    async def _record(
        self, known_id: str | None, new_body: dict[str, Any] | None, fields: Mapping[str, Any]
    ) -> tuple[RemoteRecord | None, dict[str, RemoteFile]]:
        """The draft to fill (None in a dry run that would create one) and its files."""
        wanted = self.opts.deposition or known_id
        if wanted is None and not self.target.abilities.drafts:
            wanted = self.name  # no draft life cycle (S3): the record is found by its name, also in a dry run
        rec = await self.target.get(self.name, wanted) if wanted else None
        if wanted and rec is None:
            if self.opts.deposition:
                raise InputError(f"--deposition {self.opts.deposition}: the target has no such record (or not yours)")
            new_body = self._new_body(fields)  # the remembered one is gone
        if rec is None and new_body is not None:
            rec = await self._find_lost_create(new_body)
        if rec is None:
            assert new_body is not None
            return await self._new_record(new_body), {}
        return await self._existing_record(rec, fields)

    def _kind(self) -> str:
        return "draft" if self.target.abilities.drafts else "record"

    async def _new_record(self, body: Mapping[str, Any]) -> RemoteRecord | None:
        """A new record (None in a dry run: only the plan says so)."""
        self.plan(f"push {self.name}: a new {self._kind()} on {self.target.name}")
        if self.opts.dry_run:
            return None
        return await self._create(body)

    async def _existing_record(
        self, rec: RemoteRecord, fields: Mapping[str, Any]
    ) -> tuple[RemoteRecord, dict[str, RemoteFile]]:
        """A record that exists: a new version of a published one; its metadata merged."""
        target, opts = self.target, self.opts
        if rec.state == "published":
            if not target.abilities.versions:
                raise TargetError(f"record {rec.id} is published and the target has no versions", recid=self.name)
            self.plan(f"push {self.name}: record {rec.id} is published: a new version")
            if opts.dry_run:
                return rec, await target.list_files(rec)  # a new version starts with these files
            rec = await target.new_version(rec)
        else:
            self.plan(f"push {self.name}: into existing {self._kind()} {rec.id}")
        self.result.record_id = rec.id
        if self.ledger is not None and not opts.dry_run:
            await self.ledger.run(self.ledger.set_remote, LEDGER_KEY, rec.id, rec.state)
        rec = await self._merge_metadata(rec, fields)
        return rec, await target.list_files(rec)

    def _new_body(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A new record's document; a target without metadata documents (S3) needs none."""
        return self.document(check_new_metadata(fields)) if self.target.abilities.metadata else {}

    async def _merge_metadata(self, rec: RemoteRecord, fields: Mapping[str, Any]) -> RemoteRecord:
        """Override only the given fields; send the document only when it changed."""
        if not fields or not self.target.abilities.metadata:
            return rec
        if not isinstance(self.target, MetadataReader):
            # Nothing to merge with: the fields must make a whole document, sent as it is.
            missing = missing_required(fields)
            if missing:
                raise InputError(
                    f"target {self.target.name} cannot read a record's metadata to override some fields of it: "
                    f"give all of {', '.join(REQUIRED)} (missing: {', '.join(missing)})"
                )
            self.plan("  metadata: replaced (this target's current metadata cannot be read to compare)")
            if self.opts.dry_run:
                return rec
            return await self.target.update_metadata(rec, self._marked(self.document(check_new_metadata(fields))))
        merged, changed = metadata_changes(await self.target.read_metadata(rec), fields)
        if not changed:
            self.plan("  metadata: unchanged")
            return rec
        self.plan(f"  metadata: {', '.join(changed)}")
        if self.opts.dry_run:
            return rec
        return await self.target.update_metadata(rec, {"metadata": merged})

    def _marked(self, body: dict[str, Any]) -> dict[str, Any]:
        """A replacing document keeps the record's marker (``pipeline.push_create``)."""
        row = self.ledger.get(LEDGER_KEY) if self.ledger is not None and self.marking else None
        return marked(body, row.create_token) if row is not None and row.create_token else body

    async def _find_lost_create(self, body: Mapping[str, Any]) -> RemoteRecord | None:
        """A create this push began before a crash (the ledger says so): find it, patiently."""
        if self.ledger is None or not self.target.abilities.search:
            return None
        row = self.ledger.get(LEDGER_KEY)
        if row is None or not row.create_pending:
            return None
        token = row.create_token if self.marking else None
        title = str(body["metadata"]["title"])
        return await find_lost_create(self.target, self.name, token, title, legacy=row.create_legacy)

    async def _create(self, body: Mapping[str, Any]) -> RemoteRecord:
        token = None
        if self.ledger is not None:
            row = self.ledger.get(LEDGER_KEY)
            # The same token for every try of this push: each draft it makes carries one marker.
            known = row.create_token if row is not None and self.marking else None
            token = await self.ledger.run(self.ledger.begin_create, LEDGER_KEY, run_id=self.stats.run_id, token=known)
            if self.marking:
                body = marked(body, token)
        try:
            rec = await self.target.create(self.name, body)
        except FerryError as exc:
            if not (exc.retryable and maybe_applied(exc)):
                if self.ledger is not None:
                    await self.ledger.run(self.ledger.abandon_create, LEDGER_KEY, exc)
                raise
            found = await self._find_lost_create(body)
            if found is None:
                raise
            rec = found
        if self.marking and token is not None:
            # Outside the try: the draft exists now, a failed look must not abandon the intent.
            rec = await keep_oldest(self.target, self.name, token, rec)
        self.result.record_id = rec.id
        if self.ledger is not None:
            await self.ledger.run(self.ledger.set_remote, LEDGER_KEY, rec.id, rec.state)
        return rec

    # --- the transfer -----------------------------------------------------------------------

    async def _upload(
        self, rec: RemoteRecord, files: list[PushFile], hashes: dict[str, Checksum], todo: set[str]
    ) -> None:
        """Send ``todo`` group by group (core first); the marker once the core group is verified."""
        await self._begin_upload(files, hashes, todo)
        gate = asyncio.Semaphore(max(1, self.opts.jobs))

        async def one(f: PushFile) -> None:
            async with gate:
                state = await self._send(rec, f, hashes)
            # The ledger row is written (in the ledger's one thread) once the slot is free:
            # the next file's transfer does not wait behind this commit.
            await self._file_state(f.key, *state)

        for group in GROUPS:
            members = [f for f in files if f.group == group]
            await asyncio.gather(*(one(f) for f in members if f.key in todo))
            if group == "core" and self.opts.marker:
                await self._marker(rec, members, hashes)
        if todo:
            await self.md5s.learned(files, hashes)

    async def _begin_upload(self, files: list[PushFile], hashes: Mapping[str, Checksum], todo: set[str]) -> None:
        """The display's totals; the ledger's file rows, the skipped ones verified already."""
        if self.shown is not None:
            self.shown.upload_totals(files=len(todo), bytes=sum(f.size for f in files if f.key in todo))
        if self.ledger is not None:
            rows = [(f.key, f.size, hashes.get(f.key)) for f in files]
            await self.ledger.run(self.ledger.set_files, LEDGER_KEY, rows)
        for key in self.result.skipped:
            await self._file_state(key, "verified", hashes[key])
            self.stats.record("upload", "skipped", self.name, key, reason="already on the target with the same md5")

    async def _send(
        self, rec: RemoteRecord, f: PushFile, hashes: dict[str, Checksum]
    ) -> tuple[str, Checksum | None, Exception | None]:
        """One file to the target, verified by its md5; a failure is kept in the result, not
        raised. Returns the file's ledger state (status, checksum, error) for the caller to write."""
        shown = self.shown
        event = self.stats.open("upload", self.name, f.key, bytes=f.size, transfer=self.target.plan_file(f.size))
        if shown is not None:
            shown.upload_started(f.key)
        advance = shown.upload_advance if shown is not None else None
        try:
            got = await self.target.put_file(rec, f.key, f.path, f.size, hashes.get(f.key), advance)
        except FerryError as exc:
            event.close("failed", error=exc)
            self.result.failed[f.key] = exc.message
            if shown is not None:
                shown.upload_finished(f.key, ok=False)
            return "failed", None, exc
        md5 = got.checksum("md5")
        if f.key not in hashes and md5:  # hashed while sent; put_file compared it with the target's
            hashes[f.key] = Checksum("md5", md5)
        event.close("ok")
        if shown is not None:
            shown.upload_finished(f.key, ok=True)
        self.result.sent.append(f.key)
        return "verified", hashes.get(f.key), None

    async def _marker(self, rec: RemoteRecord, core: list[PushFile], hashes: Mapping[str, Checksum]) -> None:
        """``DIR/<name><suffix>``, only once every core file is verified on the target."""
        have = await self.target.list_files(rec)
        bad = [
            f.key
            for f in core
            if not (f.key in have and f.key in hashes and have[f.key].matches(f.size, hashes[f.key]))
        ]
        if bad:
            log.warning("push %s: no marker: %d core file(s) not verified (%s)", self.name, len(bad), bad[0])
            return
        name = "cartload" if self.opts.select == "catalog" else self.name
        path = self.opts.directory / f"{name}{self.marker_suffix}"
        body = {"record": rec.id, "target": self.target.name, "files": sorted(f.key for f in core)}
        await asyncio.to_thread(atomic_write_bytes, path, orjson.dumps(body, option=orjson.OPT_INDENT_2))
        self.result.marker = path
        self.stats.record(
            "verify", "ok", self.name, path.name, reason="core group verified: marker written", file_count=len(core)
        )

    async def _verify(self, rec: RemoteRecord, files: list[PushFile], hashes: Mapping[str, Checksum]) -> None:
        with self.stats.open("verify", self.name, file_count=len(files)) as event:
            have = await self.target.list_files(rec)
            for f in files:
                there = have.get(f.key)
                if f.key in self.result.failed:
                    continue
                if there is None or f.key not in hashes or not there.matches(f.size, hashes[f.key]):
                    got = "missing" if there is None else f"size {there.size}, md5 {there.checksum('md5')}"
                    self.result.failed[f.key] = f"not verified on the target after upload ({got})"
            if self.result.failed:
                event.close("failed", reason=f"{len(self.result.failed)} file(s) not verified")

    async def _file_state(
        self, key: str, status: str, checksum: Checksum | None, error: Exception | None = None
    ) -> None:
        if self.ledger is not None:
            await self.ledger.run(self.ledger.set_file, LEDGER_KEY, key, status, checksum=checksum, error=error)

    async def _ledger_status(self, status: str) -> None:
        if self.ledger is not None:
            await self.ledger.run(self.ledger.set_record_status, LEDGER_KEY, status, has_metadata=True)


def marker_suffix(target_type: str) -> str:
    return f".{target_type}.done"


def default_ledger(directory: Path, target_name: str) -> Path:
    return directory / STATE_DIR / f"push-{target_name}.sqlite"


__all__ = ["PushFile", "PushOptions", "PushResult", "Pusher", "creators_from", "default_ledger", "marker_suffix"]
