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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import orjson

from ferry.core.atomic import atomic_write_bytes
from ferry.core.checksums import Checksum, hash_file
from ferry.core.errors import FerryError, InputError, QuotaError, TargetError
from ferry.progress import human_bytes
from pipeline.ledger import Ledger
from pipeline.push_select import STATE_DIR, PushFile, select_files
from stats.events import StatsWriter
from upload.targets.base import RemoteFile, RemoteRecord, Target
from upload.targets.http import maybe_applied

if TYPE_CHECKING:
    from pipeline.context import UploadProgress

log = logging.getLogger(__name__)

Select = Literal["all", "catalog", "files"]
# What a publish needs in a new record, per metadata dialect (the target's profile name):
# the flag that gives it, and where it lives in the document's "metadata".
REQUIRED = ("title", "creators", "description", "upload_type")
LEDGER_KEY = "dir"  # one record per (directory, target)
SEARCH_DELAYS = (0.5, 1.0, 2.0, 4.0)  # a create whose answer was lost: the index lags


@runtime_checkable
class MetadataReader(Protocol):
    """A target that can read a record's current metadata document (Zenodo)."""

    async def read_metadata(self, rec: RemoteRecord) -> dict[str, Any]: ...


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


def creators_from(names: Sequence[str]) -> list[dict[str, str]]:
    """``"Family, Given"`` strings as Zenodo creators (anything else is refused, named)."""
    out = []
    for name in names:
        family, _, given = name.partition(",")
        if not family.strip() or not given.strip():
            raise InputError(f'--creators {name!r}: write each creator as "Family, Given"', field="creators")
        out.append({"name": f"{family.strip()}, {given.strip()}"})
    return out


def wanted_metadata(opts: PushOptions) -> dict[str, Any]:
    """The metadata fields this push sets: ``--metadata FILE.json``, then the flags over it."""
    fields: dict[str, Any] = {}
    if opts.metadata_file is not None:
        try:
            doc = orjson.loads(opts.metadata_file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise InputError(f"--metadata {opts.metadata_file}: cannot read it as JSON: {exc}") from exc
        doc = doc.get("metadata", doc) if isinstance(doc, dict) else doc
        if not isinstance(doc, dict):
            raise InputError(f"--metadata {opts.metadata_file}: must hold a JSON object")
        fields.update(doc)
    fields.update({k: v for k, v in opts.fields.items() if v not in (None, "", [])})
    return fields


def check_new_metadata(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A new record's metadata: every field a publish needs, the date defaulting to today."""
    missing = [k for k in REQUIRED if fields.get(k) in (None, "", [])]
    if missing:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in missing)
        raise InputError(
            f"a new deposition needs {', '.join(missing)} (give {flags} or --metadata FILE.json)", field=missing[0]
        )
    return {"publication_date": date.today().isoformat(), **fields}


def zenodo_document(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Zenodo's deposit metadata: the fields as they are (the flags speak its dialect)."""
    return {"metadata": dict(fields)}


def rdm_document(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The same fields as an InvenioRDM/NRP draft body (``resource_type``, ``person_or_org``)."""
    metadata: dict[str, Any] = {k: v for k, v in fields.items() if k not in ("upload_type", "creators")}
    if fields.get("upload_type"):
        metadata["resource_type"] = {"id": fields["upload_type"]}
    people = []
    for creator in fields.get("creators") or []:
        family, _, given = str(creator.get("name", "")).partition(",")
        people.append(
            {"person_or_org": {"type": "personal", "family_name": family.strip(), "given_name": given.strip()}}
        )
    if people:
        metadata["creators"] = people
    return {"access": {"record": "public", "files": "public"}, "files": {"enabled": True}, "metadata": metadata}


# The push's metadata flags in each profile's dialect (by the target's profile name).
DIALECTS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "zenodo": zenodo_document,
    "inveniordm": rdm_document,
    "nrp-particles": rdm_document,
}


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
        try:
            self.document = DIALECTS[profile]
        except KeyError:
            raise InputError(f"ferry push has no metadata dialect for profile {profile!r}") from None
        self.target, self.opts, self.stats, self.ledger = target, opts, stats, ledger
        self.name = opts.directory.resolve().name or "push"
        self.marker_suffix = marker_suffix
        self.plan = on_plan
        self.shown = shown  # the run display, if any
        self.result = PushResult()
        self._md5s: dict[str, Any] | None = None  # DIR/.ferry/push-md5.json, once read

    async def run(self) -> PushResult:
        opts, target = self.opts, self.target
        files = await asyncio.to_thread(
            select_files,
            opts.directory,
            opts.select,
            opts.catalog,
            opts.files,
            flatten=opts.flatten,
            sub_paths=target.abilities.sub_paths,
            marker_suffix=self.marker_suffix,
        )
        if opts.keep is not None:
            chosen = [f for f in files if opts.keep(f.key)]
            if files and not chosen:
                raise InputError(f"none of the {len(files)} selected file(s) matches {opts.keep_text}")
            files = chosen
        fields = wanted_metadata(opts)
        known_id = self._ledger_id()
        new_body = None
        if opts.deposition is None and known_id is None:
            new_body = self._new_body(fields)
        hashes = await self._hash(files, read=False)  # what the cache knows; nothing read yet
        event = self.stats.open("record", self.name, file_count=len(files), bytes=sum(f.size for f in files))
        try:
            rec, have = await self._record(known_id, new_body, fields)
            # An md5 is needed first only to compare with a file the target holds; the others
            # are hashed while they are sent (one read, not two) and checked the same way.
            hashes |= await self._hash([f for f in files if f.key in have and f.key not in hashes])
            todo = self._decide(files, hashes, have)
            self._check_limits(files, have)
            if opts.dry_run:
                event.close("dry-run", reason="dry run: nothing written")
                return self.result
            assert rec is not None
            await self._upload(rec, files, hashes, todo)
            await self._verify(rec, files, hashes)
            if opts.publish and self.result.ok and target.abilities.publish:
                with self.stats.open("publish", self.name):
                    outcome = await target.publish(rec)
                self.result.published = outcome.state == "published"
                await self._ledger_status("published")
            elif self.result.ok:
                await self._ledger_status("uploaded")
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
        target, opts = self.target, self.opts
        wanted = opts.deposition or known_id
        if wanted is None and not target.abilities.drafts:
            wanted = self.name  # no draft life cycle (S3): the record is found by its name, also in a dry run
        rec = await target.get(self.name, wanted) if wanted else None
        if wanted and rec is None:
            if opts.deposition:
                raise InputError(f"--deposition {opts.deposition}: the target has no such record (or not yours)")
            new_body = self._new_body(fields)  # the remembered one is gone
        if rec is None and new_body is not None:
            rec = await self._find_lost_create(new_body)
        if rec is None:
            assert new_body is not None
            self.plan(f"push {self.name}: a new {'draft' if target.abilities.drafts else 'record'} on {target.name}")
            if opts.dry_run:
                return None, {}
            rec = await self._create(new_body)
            return rec, {}
        if rec.state == "published":
            if not target.abilities.versions:
                raise TargetError(f"record {rec.id} is published and the target has no versions", recid=self.name)
            self.plan(f"push {self.name}: record {rec.id} is published: a new version")
            if opts.dry_run:
                return rec, await target.list_files(rec)  # a new version starts with these files
            rec = await target.new_version(rec)
        else:
            self.plan(f"push {self.name}: into existing {'draft' if target.abilities.drafts else 'record'} {rec.id}")
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
            missing = [k for k in REQUIRED if fields.get(k) in (None, "", [])]
            if missing:
                raise InputError(
                    f"target {self.target.name} cannot read a record's metadata to override some fields of it: "
                    f"give all of {', '.join(REQUIRED)} (missing: {', '.join(missing)})"
                )
            self.plan("  metadata: replaced (this target's current metadata cannot be read to compare)")
            if self.opts.dry_run:
                return rec
            return await self.target.update_metadata(rec, self.document(check_new_metadata(fields)))
        current = await self.target.read_metadata(rec)
        merged = {**current.get("metadata", {}), **fields}
        merged.setdefault("publication_date", date.today().isoformat())
        if merged == current.get("metadata"):
            self.plan("  metadata: unchanged")
            return rec
        self.plan(f"  metadata: {', '.join(sorted(k for k in merged if merged[k] != current['metadata'].get(k)))}")
        if self.opts.dry_run:
            return rec
        return await self.target.update_metadata(rec, {"metadata": merged})

    async def _find_lost_create(self, body: Mapping[str, Any]) -> RemoteRecord | None:
        """A create this push began before a crash (the ledger says so): find it, patiently."""
        if self.ledger is None or not self.target.abilities.search:
            return None
        row = self.ledger.get(LEDGER_KEY)
        if row is None or not row.create_pending:
            return None
        query = f'title:"{body["metadata"]["title"]}"'
        for delay in (0.0, *SEARCH_DELAYS):
            await asyncio.sleep(delay)
            found = await self.target.find(self.name, query)
            if found is not None and found.state == "draft":
                log.info("push %s: the interrupted create had happened: using draft %s", self.name, found.id)
                return found
        return None

    async def _create(self, body: Mapping[str, Any]) -> RemoteRecord:
        if self.ledger is not None:
            await self.ledger.run(self.ledger.begin_create, LEDGER_KEY, run_id=self.stats.run_id)
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
        self.result.record_id = rec.id
        if self.ledger is not None:
            await self.ledger.run(self.ledger.set_remote, LEDGER_KEY, rec.id, rec.state)
        return rec

    # --- the plan ---------------------------------------------------------------------------

    async def _hash(self, files: list[PushFile], *, read: bool = True) -> dict[str, Checksum]:
        """md5 of ``files`` from the cache (by size and mtime), else (``read``) by reading them."""
        cache_path = self.opts.directory / STATE_DIR / "push-md5.json"
        if self._md5s is None:
            try:
                self._md5s = orjson.loads(cache_path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                self._md5s = {}
        cache = self._md5s
        gate = asyncio.Semaphore(max(1, min(self.opts.jobs, 4)))

        async def one(f: PushFile) -> tuple[str, str | None]:
            stamp = f"{f.size}:{f.mtime_ns}"
            hit = cache.get(str(f.path))
            if isinstance(hit, list) and hit[0] == stamp:
                return f.key, str(hit[1])
            if not read:
                return f.key, None
            async with gate:
                value = (await asyncio.to_thread(hash_file, str(f.path), ("md5",))).hexdigests()["md5"]
            cache[str(f.path)] = [stamp, value]
            return f.key, value

        pairs = await asyncio.gather(*(one(f) for f in files))
        if not self.opts.dry_run and read and files:
            await asyncio.to_thread(atomic_write_bytes, cache_path, orjson.dumps(cache))
        return {k: Checksum("md5", v) for k, v in pairs if v is not None}

    async def _learned(self, files: list[PushFile], hashes: Mapping[str, Checksum]) -> None:
        """Keep the md5s computed while sending, so the next push reads nothing to compare."""
        cache = self._md5s if self._md5s is not None else {}
        for f in files:
            if f.key in hashes:
                cache[str(f.path)] = [f"{f.size}:{f.mtime_ns}", hashes[f.key].value]
        path = self.opts.directory / STATE_DIR / "push-md5.json"
        await asyncio.to_thread(atomic_write_bytes, path, orjson.dumps(cache))

    def _decide(
        self, files: list[PushFile], hashes: Mapping[str, Checksum], have: Mapping[str, RemoteFile]
    ) -> set[str]:
        """Keys to send; prints the plan."""
        todo: set[str] = set()
        for f in files:
            there = have.get(f.key)
            same = there is not None and there.matches(f.size, hashes[f.key])
            if same and not self.opts.restart:
                self.result.skipped.append(f.key)
                self.plan(f"  skip    {f.key} ({human_bytes(f.size)}, same md5 on the target)")
                continue
            todo.add(f.key)
            verb = "replace" if there is not None else "send   "
            self.plan(f"  {verb} {f.key} ({human_bytes(f.size)}, {f.group})")
        sent = sum(f.size for f in files if f.key in todo)
        self.plan(f"  {len(todo)} to send ({human_bytes(sent)}), {len(files) - len(todo)} to skip")
        return todo

    def _check_limits(self, files: list[PushFile], have: Mapping[str, RemoteFile]) -> None:
        limits = self.target.limits
        after = {k: (f.size or 0) for k, f in have.items()}
        after.update({f.key: f.size for f in files})
        count, total = len(after), sum(after.values())
        self.plan(
            f"  limits: {count} file(s) of {limits.max_files}, {human_bytes(total)} of "
            f"{human_bytes(limits.max_record_size)} after the push ({len(have)} there now)"
        )
        if count > limits.max_files:
            raise QuotaError(
                f"{count} files after the push ({len(have)} on the target + {len(set(after) - set(have))} new) "
                f"exceed the target's limit of {limits.max_files} per record; nothing was uploaded",
                recid=self.name,
            )
        if total > limits.max_record_size:
            raise QuotaError(
                f"{total} bytes after the push exceed the target's limit of {limits.max_record_size} per record; "
                "nothing was uploaded",
                recid=self.name,
            )
        for f in files:
            if f.size > limits.max_file_size:
                raise QuotaError(f"{f.size} bytes exceed the target's per-file limit", recid=self.name, file=f.key)

    # --- the transfer -----------------------------------------------------------------------

    async def _upload(
        self, rec: RemoteRecord, files: list[PushFile], hashes: dict[str, Checksum], todo: set[str]
    ) -> None:
        gate = asyncio.Semaphore(max(1, self.opts.jobs))
        shown = self.shown
        if shown is not None:
            shown.upload_totals(files=len(todo), bytes=sum(f.size for f in files if f.key in todo))
        if self.ledger is not None:
            rows = [(f.key, f.size, hashes.get(f.key)) for f in files]
            await self.ledger.run(self.ledger.set_files, LEDGER_KEY, rows)
        for key in self.result.skipped:
            await self._file_state(key, "verified", hashes[key])
            self.stats.record("upload", "skipped", self.name, key, reason="already on the target with the same md5")

        async def one(f: PushFile) -> None:
            async with gate:
                event = self.stats.open(
                    "upload", self.name, f.key, bytes=f.size, transfer=self.target.plan_file(f.size)
                )
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
                    await self._file_state(f.key, "failed", None, exc)
                    return
                md5 = got.checksum("md5")
                if f.key not in hashes and md5:  # hashed while sent; put_file compared it with the target's
                    hashes[f.key] = Checksum("md5", md5)
                event.close("ok")
                if shown is not None:
                    shown.upload_finished(f.key, ok=True)
                self.result.sent.append(f.key)
                await self._file_state(f.key, "verified", hashes.get(f.key))

        for group in ("core", "basemap", "optional"):
            members = [f for f in files if f.group == group]
            await asyncio.gather(*(one(f) for f in members if f.key in todo))
            if group == "core" and self.opts.marker:
                await self._marker(rec, members, hashes)
        if todo:
            await self._learned(files, hashes)

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
