"""``ferry mirror SOURCE TARGET``: every file of a source record into an S3 prefix, no local disk.

The JUMP mirror (seed 000) in one command, policy here, mechanics in the target:

1. Resolve the source record (a Zenodo version, the latest of a concept, a CERN record).
2. Take the prefix's lock (an object with an expiry; a second mirror is refused).
3. Each file to ``<prefix>/<record_id>/<key>/content``: skipped when the object already
   has the same size and checksum (its metadata), else streamed from the source straight
   into the target (``put_stream``: md5 checked before the object is completed), memory
   bounded by ``window`` bytes per file plus the parts in flight.
4. Only when every file of the version is verified: ``latest/`` by server-side copy
   (unchanged objects not copied again), keys no longer in the version removed from it,
   and ``latest/_manifest.json`` written last, naming the record id and each file.
5. Release the lock.

A re-run moves 0 bytes and copies nothing; a drifted ``latest/`` heals by copy. A dry run
makes reads only (no lock, no write), and prints what it would do.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from download.base import ByteFetcher, Source
from ferry.core.checksums import Checksum
from ferry.core.errors import AuthError, ConfigError, FerryError, InputError
from ferry.core.model import FileEntry, Record
from pipeline.mirror_file import FileOutcome, FileStep
from pipeline.stream import expected_of
from stats.events import StatsWriter
from upload.targets.base import RemoteRecord
from upload.targets.s3 import S3Target
from upload.targets.s3_layout import CONTENT, LATEST
from upload.targets.s3_lock import S3Lock
from upload.targets.s3_upload import b64

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
LOCK = ".ferry-mirror.lock"
MiB = 1024 * 1024

# Step 3 done elsewhere (``pipeline.runners.dask_mirror``): every file's outcome, when all are done.
FilesStep = Callable[[RemoteRecord, Sequence[FileEntry], dict[str, Checksum]], Awaitable[Sequence[FileOutcome]]]


@dataclass(frozen=True)
class MirrorOptions:
    only: tuple[str, ...] = ()  # keys to mirror (all when empty); latest/ then only gains them
    dry_run: bool = False
    jobs: int = 4  # files streamed at once
    window: int = 32 * MiB  # source bytes held per file between the fetcher and the target
    lock_ttl: float = 900.0  # seconds; renewed every third of it while the mirror runs
    retries: int = 4  # extra tries per file after the first, a fresh stream each (as limits.retries)
    source_spec: str = ""  # as given on the command line, for the manifest


@dataclass
class MirrorResult:
    record_id: str = ""
    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)  # copied into the version from latest/ (same bytes)
    copied: list[str] = field(default_factory=list)  # into latest/
    removed: list[str] = field(default_factory=list)  # from latest/
    failed: dict[str, str] = field(default_factory=dict)
    manifest_written: bool = False
    bytes_sent: int = 0
    plan: list[str] = field(default_factory=list)  # dry run: what would be done

    @property
    def ok(self) -> bool:
        return not self.failed


# --- the mirror --------------------------------------------------------------------------


def pick(record: Record, only: Sequence[str]) -> list[FileEntry]:
    """The files to mirror; an --only key the record lacks is an error naming the keys it has."""
    files = list(record.files)
    if not only:
        return files
    keys = {f.key for f in files}
    missing = [k for k in only if k not in keys]
    if missing:
        have = ", ".join(sorted(keys)) or "none"
        raise InputError(f"--only {', '.join(missing)}: not a file of record {record.recid} (it has: {have})")
    return [f for f in files if f.key in set(only)]


def manifest_bytes(record: Record, files: Sequence[FileEntry], spec: str) -> bytes:
    """``latest/_manifest.json``: which version latest/ shows, each file with size and checksums.
    No timestamp, so an unchanged version gives the same bytes and is not written again."""
    doc = {
        "record_id": record.recid,
        "source": spec or record.source,
        "layout": f"<record_id>/<key>/{CONTENT}",
        "files": [
            {"key": f.key, "size": f.size, "checksums": {c.algorithm: c.value for c in f.checksums}}
            for f in sorted(files, key=lambda f: f.key)
        ],
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


class Mirror:
    def __init__(
        self,
        source: Source,
        fetcher_for: Callable[[str], ByteFetcher],
        target: S3Target,
        opts: MirrorOptions,
        *,
        stats: StatsWriter | None = None,
        url_for: Callable[[str], str] = str,
        files_step: FilesStep | None = None,
    ) -> None:
        if not isinstance(target, S3Target) or target.options.layout != "versioned":
            raise ConfigError(f"target {target.name}: ferry mirror needs an s3 target with layout = 'versioned'")
        self.source, self.fetcher_for, self.target, self.opts = source, fetcher_for, target, opts
        self.stats = stats or StatsWriter(None)
        self.url_for = url_for  # a file URI -> the URL to fetch (CERN over https: Transport.url_for)
        self.result = MirrorResult()
        self.step = FileStep(target, fetcher_for, self.stats, url_for=url_for, window=opts.window, retries=opts.retries)
        self.files_step = files_step  # None: this process streams the files itself

    async def run(self, record_id: str) -> MirrorResult:
        record = await self.source.resolve(record_id)
        files = pick(record, self.opts.only)
        self.result.record_id = record.recid
        wanted = {f.key: expected_of(f, record.recid) for f in files}
        if self.opts.dry_run:
            await self._plan(record, files, wanted)
            return self.result
        client = await self.target.client()
        lock = S3Lock(
            client,
            self.target.location.bucket,
            self.target.location.key(LOCK),
            ttl=self.opts.lock_ttl,
            run=self.stats.run_id,
        )
        await lock.acquire()
        renewing = asyncio.create_task(self._renew(lock))
        try:
            await self._locked(record, files, wanted, lock)
        except BaseException:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            try:
                await lock.release()
            except FerryError as exc:
                # The run's own error is the one to report (expired credentials cannot
                # delete the lock either); a lock left behind expires, and one of a dead
                # process on this host is taken over at once.
                log.warning("the mirror lock is left in place: %s", exc)
            raise
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
        await lock.release()
        return self.result

    async def _locked(
        self, record: Record, files: Sequence[FileEntry], wanted: dict[str, Checksum], lock: S3Lock
    ) -> None:
        rec = await self.target.create(record.recid, {})
        await self._versions(rec, files, wanted)
        if self.result.failed:
            log.warning("record %s: latest/ left as it was: %d file(s) failed", record.recid, len(self.result.failed))
            return
        if not lock.held:
            raise FerryError("the mirror lock was lost: latest/ not switched (run again)", recid=record.recid)
        await self._latest(rec, record, files, wanted)

    async def _renew(self, lock: S3Lock) -> None:
        while True:
            await asyncio.sleep(self.opts.lock_ttl / 3)
            try:
                await lock.renew()
            except FerryError as exc:
                log.error("%s", exc)
                return

    # --- step 3: the version -----------------------------------------------------------

    async def _versions(self, rec: RemoteRecord, files: Sequence[FileEntry], wanted: dict[str, Checksum]) -> None:
        if self.files_step is not None:
            # Elsewhere (a Dask cluster): the outcomes come back, this process keeps the result.
            for outcome in await self.files_step(rec, files, wanted):
                if outcome.auth:
                    raise AuthError(outcome.error or "credentials refused", recid=rec.recid, file=outcome.key)
                self._note(outcome)
            return
        slots = asyncio.Semaphore(max(1, self.opts.jobs))
        tasks = [asyncio.create_task(self._one(rec, f, wanted[f.key], slots)) for f in files]
        try:
            await asyncio.gather(*tasks)
        except AuthError:
            # Credentials refused or expired: nothing else can be written. Stop cleanly
            # (unfinished uploads abort themselves); a re-run resumes.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _one(self, rec: RemoteRecord, entry: FileEntry, expected: Checksum, slots: asyncio.Semaphore) -> None:
        async with slots:
            self._note(await self.step.run(rec, entry, expected))

    def _note(self, outcome: FileOutcome) -> None:
        result = self.result
        if outcome.action == "failed":
            result.failed[outcome.key] = outcome.error or outcome.error_kind or "failed"
            return
        {"sent": result.sent, "skipped": result.skipped, "reused": result.reused}[outcome.action].append(outcome.key)
        result.bytes_sent += outcome.bytes_sent

    # --- step 4: latest/ ----------------------------------------------------------------

    async def _latest(
        self, rec: RemoteRecord, record: Record, files: Sequence[FileEntry], wanted: dict[str, Checksum]
    ) -> None:
        latest = self.target.latest_record()
        have = await self.target.list_files(latest)
        for entry in files:
            there = have.get(entry.key)
            if there is not None and there.matches(entry.size or 0, wanted[entry.key]):
                continue  # the same bytes (a file unchanged since an earlier version): no copy
            await self.target.copy_file(rec, entry.key, latest, entry.key)
            self.result.copied.append(entry.key)
            self.stats.record("publish", "ok", rec.recid, entry.key, bytes=entry.size, reason="copied to latest/")
        if not self.opts.only:  # a partial mirror leaves the rest of latest/ alone
            for key in sorted(set(have) - {f.key for f in files}):
                await self.target.delete_file(latest, key)
                self.result.removed.append(key)
                self.stats.record("publish", "ok", rec.recid, key, reason="removed from latest/")
            await self._write_manifest(record, files)

    async def _write_manifest(self, record: Record, files: Sequence[FileEntry]) -> None:
        client = await self.target.client()
        bucket, key = self.target.location.bucket, self.target.location.key(LATEST, MANIFEST)
        body = manifest_bytes(record, files, self.opts.source_spec)
        digest = hashlib.md5(body).digest()
        info = await client.head(bucket, key)
        if info is not None and info.etag == digest.hex() and info.size == len(body):
            return
        await client.put(
            bucket,
            key,
            body,
            content_md5=b64(digest),
            metadata={"ferry-record": record.recid, "ferry-md5": digest.hex()},
            content_type="application/json",
        )
        self.result.manifest_written = True

    # --- dry run: reads only --------------------------------------------------------------

    async def _plan(self, record: Record, files: Sequence[FileEntry], wanted: dict[str, Checksum]) -> None:
        plan = self.result.plan
        latest_files = await self.target.list_files(self.target.latest_record())
        for entry in files:
            size = entry.size or 0
            there = await self.target.stat(record.recid, entry.key)
            if there is not None and there.matches(size, wanted[entry.key]):
                self.result.skipped.append(entry.key)
                plan.append(f"skip {record.recid}/{entry.key} (same size and checksum)")
            else:
                plan.append(f"stream {entry.key} ({size} bytes) -> {record.recid}/{entry.key}/{CONTENT}")
            now = latest_files.get(entry.key)
            if now is None or not now.matches(size, wanted[entry.key]):
                plan.append(f"copy {record.recid}/{entry.key} -> {LATEST}/{entry.key}/{CONTENT}")
        if not self.opts.only:
            for key in sorted(set(latest_files) - {f.key for f in files}):
                plan.append(f"remove {LATEST}/{key}")
            plan.append(f"write {LATEST}/{MANIFEST}")
        for step in plan:
            log.info("dry run: %s", step)
        self.stats.record("record", "dry-run", record.recid, reason=f"{len(plan)} step(s) planned")
