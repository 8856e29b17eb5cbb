"""The per-record pipeline: all transfer policy in one place.

One record goes resolve -> transform + validate -> download (verified) -> zip (when the
policy says so) -> upload (each file verified by the target's md5) -> verify the whole
record on the target -> publish (when asked). Sources, targets and the zipper only speak
their protocols; this module decides what to skip, what to retry, what a dry run may
touch (reads only), and what goes into the ledger and the stats.

The single-record command and the bulk runner both call ``RecordJob.run``; the bulk runner
shares one ``PipelineContext`` (and so every limit) across all its records, which is what
lets one record's upload overlap another's download.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import shutil
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import orjson

from download.manifest import Manifest, load_manifest
from download.sources import staging_name
from ferry.core.checksums import Checksum, choose_hash, hash_file
from ferry.core.config import Limits
from ferry.core.errors import (
    DownloadFailed,
    FerryError,
    InputError,
    NoFilesError,
    RateLimited,
    TargetError,
    TargetUnavailable,
    TransferFailed,
    VerificationError,
)
from ferry.core.model import Record
from ferry.core.retry import RetryPolicy, retry
from ferry.progress import human_bytes
from metadata.base import Profile, transform_and_validate
from metadata.fidelity import distribution_discrepancies
from metadata.readers import record_key
from pipeline import oversize, without_files
from pipeline.claims import settle_claim
from pipeline.ledger import Ledger
from pipeline.limits import CircuitBreaker, WeightedLimiter
from pipeline.local_check import blame_local_copy
from stats.events import Event, StatsWriter
from upload.targets.base import PublishOutcome, RemoteFile, RemoteRecord, Target
from upload.targets.http import maybe_applied
from upload.zip.format import is_zip_output
from upload.zip.policy import ZipPolicy, decide_zip
from upload.zip.zipper import bundled_keys, upload_keys, zip_record

log = logging.getLogger(__name__)
T = TypeVar("T")

Outcome = Literal["ok", "failed", "skipped", "dry-run"]

# Fetches a record's files into its folder, verified, and returns the updated manifest.
# The download stage (download/engine.py) is adapted to this shape by the command layer.
Fetch = Callable[[Record, Path], Awaitable[Manifest]]

# How long to keep asking the target's search for a draft whose create may have happened
# before a crash: InvenioRDM's search index refreshes about once a second.
CREATE_RECHECK_DELAYS = (0.5, 1.0, 2.0, 4.0)


@runtime_checkable
class UploadProgress(Protocol):
    """Where upload progress goes (``ferry.progress.BulkProgress``); optional."""

    def upload_totals(self, *, files: int, bytes: int) -> None: ...
    def upload_started(self, name: str) -> None: ...
    def upload_advance(self, nbytes: int) -> None: ...
    def upload_finished(self, name: str, *, ok: bool, skipped_bytes: int = 0) -> None: ...


@dataclass
class PipelineContext:
    """Everything records share in one run: the target, limits, ledger, stats."""

    target: Target
    profile: Profile
    dest: Path
    fetch: Fetch
    stats: StatsWriter
    limits: Limits = field(default_factory=Limits)
    zip_policy: ZipPolicy = field(default_factory=ZipPolicy)
    zip_executor: Executor | None = None
    ledger: Ledger | None = None
    publish: bool = False
    new_version: bool = False
    dry_run: bool = False
    delete_staged: bool = False
    oversize: str = "bundle"  # the target's setting for records over its limits (pipeline/oversize.py)
    run_id: str | None = None
    breaker: CircuitBreaker | None = None
    on_plan: Callable[[str], None] | None = None  # dry-run plan lines (printed by the CLI)
    upload_progress: UploadProgress | None = None
    upload_slots: asyncio.Semaphore = field(init=False)
    upload_bytes: WeightedLimiter = field(init=False)
    zip_slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.upload_slots = asyncio.Semaphore(self.limits.uploads)
        self.upload_bytes = WeightedLimiter(self.limits.upload_bytes_in_flight)
        self.zip_slots = asyncio.Semaphore(self.limits.zip_workers)

    @property
    def file_retry(self) -> RetryPolicy:
        return RetryPolicy(attempts=max(1, self.limits.retries), base=self.limits.backoff_base)

    def plan(self, line: str) -> None:
        if self.on_plan is not None:
            self.on_plan(line)


@dataclass
class RecordResult:
    recid: str
    status: Outcome
    stage: str  # the last stage reached (where a failure happened)
    error: FerryError | None = None
    remote_id: str | None = None
    publish: PublishOutcome | None = None
    file_count: int = 0
    bytes_uploaded: int = 0
    zip_used: bool | None = None
    reason: str | None = None
    failed_files: dict[str, str] = field(default_factory=dict)  # key -> reason

    def lines(self) -> list[str]:
        """One line per failure, for the terminal."""
        if self.status != "failed":
            return []
        out = [f"record {self.recid}: {self.stage} failed: {self.error}"]
        out += [f"record {self.recid}, file {k}: {why}" for k, why in sorted(self.failed_files.items())]
        return out


class RecordJob:
    """Moves one record through every stage, using the shared context's limits."""

    def __init__(self, ctx: PipelineContext, record: Record) -> None:
        self.ctx = ctx
        self.record = record
        self.recid = record.recid
        self.record_dir = ctx.dest / staging_name(record)  # zenodo:123 and CERN 123 apart
        self.stage = "resolve"
        self.result = RecordResult(recid=record.recid, status="failed", stage="resolve")
        self._manifest_lock = asyncio.Lock()  # md5s learnt during the upload are saved one at a time
        self.notes: list[str] = []  # where the record's own claims disagree with its files
        self.oversize_note: str | None = None  # what pipeline/oversize.py decided, when over a limit

    def event_extra(self) -> dict[str, Any]:
        """Facts for the record's stats event beyond the schema's columns (its ``extra``)."""
        extra: dict[str, Any] = {}
        if not self.record.files:
            extra["metadata_only"] = True
        if self.notes:
            extra["distribution"] = list(self.notes)
        if self.oversize_note:
            extra["oversize"] = self.oversize_note
        return extra

    # --- the whole record ---------------------------------------------------------------

    async def run(self) -> RecordResult:
        ctx = self.ctx
        event = ctx.stats.open("record", self.recid, file_count=len(self.record.files))
        try:
            status = await self._run()
            self.result.status = status
            event.close(
                status,
                bytes=self.result.bytes_uploaded,
                file_count=self.result.file_count,
                zip_used=self.result.zip_used,
                reason=self.result.reason,
                stage_reached=self.stage,
                remote_id=self.result.remote_id,
                **self.event_extra(),
            )
        except FerryError as exc:
            if exc.recid is None:
                exc.recid = self.recid
            if isinstance(exc, DownloadFailed):
                self.result.failed_files.update(exc.failures)
            self.result.status, self.result.error, self.result.stage = "failed", exc, self.stage
            event.close(
                "failed",
                error=exc,
                stage_reached=self.stage,
                file_count=self.result.file_count,
                **self.event_extra(),
            )
            if ctx.ledger is not None and not ctx.dry_run:
                await ctx.ledger.run(ctx.ledger.set_record_status, self.recid, "failed", error=exc, attempt=True)
        except BaseException as exc:  # cancelled or a bug: close the event, then let it go
            event.close("failed", error=exc, stage_reached=self.stage)
            raise
        return self.result

    async def _run(self) -> Outcome:
        ctx = self.ctx
        self.stage = "transform"
        body, query = await self._transform()

        if not self.record.files:  # metadata only, a record document, or a refusal
            return await without_files.run(self, body, query)
        self.stage = "plan"  # over the target's limits: bundle, split or refuse, before any write
        oversize.check(self, record_key(self.record.source, self.recid))
        if ctx.dry_run:
            return await self._plan(body, query)
        if await self._published_before():
            return "skipped"

        await self._ledger("downloading", file_count=len(self.record.files), bytes=self.record.total_size)
        self.stage = "download"
        manifest = await ctx.fetch(self.record, self.record_dir)
        missing = [f.key for f in self.record.files if f.key not in manifest.entries]
        if missing and not _bundled_all(manifest, missing):
            raise VerificationError(
                f"{len(missing)} file(s) not verified after download: {', '.join(missing[:5])}", recid=self.recid
            )
        await self._ledger("downloaded")

        self.stage = "zip"
        manifest = await self._zip(manifest)
        keys = upload_keys(manifest)
        if not keys:
            raise NoFilesError("nothing to upload after download and zip", recid=self.recid)
        self.result.file_count = len(keys)
        self._check_target_limits(manifest, keys)
        await self._ledger("zipped" if self.result.zip_used else "downloaded")
        return await self._deliver(body, query, manifest, keys)

    async def _deliver(self, body: Mapping[str, Any], query: str, manifest: Manifest, keys: list[str]) -> Outcome:
        """Upload the staged ``keys`` (verified), then publish: the stages after download and zip."""
        ctx = self.ctx
        self.result.file_count = len(keys)
        self.stage = "upload"
        remote = await self._find_or_create(body, query, manifest)
        if remote is None:  # published already with exactly these files
            return "skipped"
        await self._upload_files(remote, manifest, keys)

        self.stage = "verify"
        await self._verify(remote, manifest, keys)
        await self._ledger("uploaded")

        if ctx.publish and ctx.target.abilities.publish:
            self.stage = "publish"
            self.result.publish = await self._publish(remote)
        elif ctx.ledger is not None and not ctx.target.abilities.drafts:
            # Nothing to publish: a verified record on a target without drafts is final.
            await ctx.ledger.run(ctx.ledger.set_record_status, self.recid, "published")

        if ctx.delete_staged:
            await asyncio.to_thread(shutil.rmtree, self.record_dir, True)
        return "ok"

    # --- stages -------------------------------------------------------------------------

    async def _transform(self) -> tuple[dict[str, Any], str]:
        with self.ctx.stats.open("transform", self.recid) as event:
            try:
                # The resolved record: file types, sizes and counts come from its real files,
                # and the reader is the one of its source (metadata.readers).
                body = transform_and_validate(self.ctx.profile, self.record)
                query = self.ctx.profile.find_query(record_key(self.record.source, self.recid))
                self.notes = distribution_discrepancies(self.record)
                for note in self.notes:
                    log.warning("%s (the real files are what is migrated)", note)
            except FerryError as exc:
                event.close("failed", error=exc)
                raise
        return body, query

    async def _zip(self, manifest: Manifest) -> Manifest:
        async with self.ctx.zip_slots:
            result = await zip_record(
                self.record_dir,
                self.recid,
                policy=self.ctx.zip_policy,
                executor=self.ctx.zip_executor,
                stats=self.ctx.stats,
            )
        self.result.zip_used = result.zipped
        self.result.reason = result.reason
        # The zipper records bundles in the manifest (size and mtime; their md5 is computed
        # by the upload, which reads them anyway, and recorded there); read what it wrote.
        return await asyncio.to_thread(load_manifest, self.record_dir, self.recid)

    def _check_target_limits(self, manifest: Manifest, keys: list[str]) -> None:
        limits = self.ctx.target.limits
        if len(keys) > limits.max_files:
            raise InputError(
                f"{len(keys)} files exceed the target's limit of {limits.max_files} per record "
                f"(zip threshold {self.ctx.zip_policy.threshold})",
                recid=self.recid,
            )
        for key in keys:
            if manifest.entries[key].size > limits.max_file_size:
                raise InputError(
                    f"{manifest.entries[key].size} bytes exceed the target's per-file limit {limits.max_file_size}",
                    recid=self.recid,
                    file=key,
                )
        total = sum(manifest.entries[k].size for k in keys)
        if total > limits.max_record_size:
            raise InputError(
                f"{total} bytes exceed the target's per-record limit {limits.max_record_size}", recid=self.recid
            )

    async def _find_or_create(self, body: Mapping[str, Any], query: str, manifest: Manifest) -> RemoteRecord | None:
        """The draft to fill, never a second one for the same recid."""
        ctx, target = self.ctx, self.ctx.target
        row = await ctx.ledger.run(ctx.ledger.get, self.recid) if ctx.ledger is not None else None
        remote = None
        if row is not None and row.remote_id:
            # The ledger knows the id: no need to trust a search index that may lag.
            known_id = row.remote_id
            remote = await self._call(lambda: target.get(self.recid, known_id))
        if remote is None:
            remote = await self._call(lambda: target.find(self.recid, query))
        if remote is None and row is not None and row.create_pending:
            # A create may have reached the target just before a crash (or a failed try).
            remote = await self._search_patiently(query)
        if remote is None:
            remote = await self._create(body, query)
        elif remote.state == "published":
            if not ctx.new_version:
                self.result.remote_id = remote.id
                await self._published_unchanged(remote, manifest)
                return None
            published = remote
            draft = await self._call(lambda: target.new_version(published))
            remote = await self._call(lambda: target.update_metadata(draft, body))
        else:
            existing = remote
            remote = await self._call(lambda: target.update_metadata(existing, body))
        self.result.remote_id = remote.id
        if ctx.ledger is not None:
            await ctx.ledger.run(ctx.ledger.set_remote, self.recid, remote.id, remote.state)
        return remote

    async def _search_patiently(self, query: str) -> RemoteRecord | None:
        """Ask the search a few more times: its index can lag seconds behind a create."""
        for delay in CREATE_RECHECK_DELAYS:
            await asyncio.sleep(delay)
            remote = await self._call(lambda: self.ctx.target.find(self.recid, query))
            if remote is not None:
                return remote
        return None

    async def _create(self, body: Mapping[str, Any], query: str) -> RemoteRecord:
        """Create the draft; after an unclear failure, look (patiently) before trying again.

        The one place that decides whether a create whose answer was lost (timeout,
        502/504) happened: targets raise such a failure (``maybe_applied``) rather than
        guess. One quick search is not enough when the index lags behind: POSTing again
        after a missed look makes a twin draft. So this searches with the same delays as
        after a crash. The create intent stays in the ledger until the id is known, so a
        crash anywhere in here is handled alike by the next run.
        """
        ctx, target = self.ctx, self.ctx.target
        if ctx.ledger is not None:
            await ctx.ledger.run(ctx.ledger.begin_create, self.recid, run_id=ctx.run_id)
        attempt = 0
        while True:
            attempt += 1
            try:
                remote = await self._call(lambda: target.create(self.recid, body))
            except TargetError as exc:
                if not (exc.retryable and maybe_applied(exc)) or attempt >= max(1, ctx.limits.retries):
                    raise
                log.info("record %s: create failed unclearly (%s); looking for the draft first", self.recid, exc)
                found = await self._search_patiently(query)
                if found is not None:
                    log.info("record %s: the create had happened: using draft %s", self.recid, found.id)
                    return found
                continue
            log.info("record %s: created draft %s", self.recid, remote.id)
            # Another run (other --dest, other machine) may have created one too, unseen by
            # a lagging search: the oldest create wins, a loser discards its own draft.
            await settle_claim(target, self.recid, query, remote, self._call)
            return remote

    async def _published_before(self) -> bool:
        """Published by an earlier run, and the target confirms it: skip without downloading.

        A re-run of a finished bulk must not fetch everything again to learn that (the staged
        copies may be gone: --delete-staged). Only when the ledger has the record published
        with every file verified (key, size, md5), the target holds exactly those files, and,
        for an unzipped record, the source still lists the same keys and sizes. Anything
        else (a draft, a new version, zipped bundles whose members cannot be compared
        without the data) takes the normal path, which compares the downloaded files.
        """
        ctx = self.ctx
        if ctx.ledger is None or ctx.new_version:
            return False
        row = await ctx.ledger.run(ctx.ledger.get, self.recid)
        if row is None or not row.ok or row.status != "published" or not row.remote_id:
            return False
        files = {f.key: f for f in await ctx.ledger.run(ctx.ledger.file_status, self.recid)}
        if not files or any(f.status != "verified" or f.checksum is None or f.size is None for f in files.values()):
            return False
        source = {f.key: f.size for f in self.record.files}
        if not all(is_zip_output(self.recid, k) for k in files) and source != {k: f.size for k, f in files.items()}:
            return False
        record_id = row.remote_id
        remote = await self._call(lambda: ctx.target.get(self.recid, record_id))
        if remote is None or remote.state == "draft":  # "open": final on a target without drafts
            return False
        have = await self._call(lambda: ctx.target.list_files(remote))
        if set(have) != set(files) or not all(
            f.checksum is not None and have[k].matches(f.size or 0, f.checksum) for k, f in files.items()
        ):
            return False
        self.result.remote_id, self.result.file_count = remote.id, len(files)
        self.result.reason = f"already published as {remote.id} with the same files"
        ctx.stats.record("upload", "skipped", self.recid, reason=self.result.reason, file_count=len(files))
        return True

    async def _published_unchanged(self, remote: RemoteRecord, manifest: Manifest) -> None:
        """A published record is left alone; it must already hold exactly our files."""
        keys = upload_keys(manifest)
        have = await self._call(lambda: self.ctx.target.list_files(remote))
        for key in keys:  # a bundle not hashed yet: hash it now, only if it could match
            await self._checksum_to_compare(manifest, key, have.get(key))
        differ = [k for k in keys if _mismatch(have.get(k), manifest, k, self._hash_for(manifest, k)) is not None]
        if differ:
            raise TargetError(
                f"already published as {remote.id} with different files ({', '.join(differ[:5])}); "
                "use --new-version to publish a new version",
                recid=self.recid,
            )
        self.result.reason = f"already published as {remote.id} with the same files"
        self.ctx.stats.record("upload", "skipped", self.recid, reason=self.result.reason, file_count=len(keys))
        if self.ctx.ledger is not None:
            # The target verified every file: that corrects whatever the ledger believed (a
            # file marked failed here that another run has finished since).
            rows = [(k, manifest.entries[k].size, self._known(manifest, k)) for k in keys]
            await self.ctx.ledger.run(self.ctx.ledger.correct_from_target, self.recid, remote.id, rows)
        return None

    async def _upload_files(self, remote: RemoteRecord, manifest: Manifest, keys: list[str]) -> None:
        target = self.ctx.target
        have = await self._call(lambda: target.list_files(remote))
        # Files on the draft that are not ours (e.g. originals left before zipping) go.
        for stale in sorted(set(have) - set(keys)):
            log.info("record %s: removing %s from the draft (not part of this upload)", self.recid, stale)
            await self._call(functools.partial(target.delete_file, remote, stale))
        if self.ctx.ledger is not None:
            rows = [(k, manifest.entries[k].size, self._known(manifest, k)) for k in keys]
            await self.ctx.ledger.run(self.ctx.ledger.set_files, self.recid, rows)
        await self._ledger("uploading")

        shown = self.ctx.upload_progress
        if shown is not None:
            shown.upload_totals(files=len(keys), bytes=sum(manifest.entries[k].size for k in keys))

        async def one(key: str) -> None:
            entry = manifest.entries[key]
            expected = await self._checksum_to_compare(manifest, key, have.get(key))
            if expected is not None and key in have and have[key].matches(entry.size, expected):
                self.ctx.stats.record(
                    "upload",
                    "skipped",
                    self.recid,
                    key,
                    reason=f"already on the target with the same {expected.algorithm}",
                )
                if shown is not None:
                    shown.upload_finished(key, ok=True, skipped_bytes=entry.size)
                await self._file_state(key, "verified", checksum=expected)
                return
            await self._put(remote, manifest, key, entry.size, expected)

        results = await asyncio.gather(*(one(k) for k in keys), return_exceptions=True)
        failures = {k: r for k, r in zip(keys, results, strict=True) if isinstance(r, BaseException)}
        for exc in failures.values():
            if not isinstance(exc, Exception):  # cancellation and friends are not failures to report
                raise exc
        if failures:
            self.result.failed_files = {k: str(e) for k, e in failures.items()}
            first = next(iter(failures.values()))
            raise TransferFailed(
                f"{len(failures)} of {len(keys)} file(s) failed to upload (first: {first})", recid=self.recid
            ) from first

    async def _put(
        self, remote: RemoteRecord, manifest: Manifest, key: str, size: int, expected: Checksum | None
    ) -> None:
        """Upload one file, verified by the target's checksum in the negotiated hash.

        ``expected=None`` (e.g. a bundle the zip stage verified by CRC32 but did not hash):
        the target computes its hash while it sends the file and checks the stored file
        against it; the file must be the one the zip stage verified (size and mtime as
        recorded) before and after, and the value is then recorded in the manifest and the
        ledger.
        """
        ctx = self.ctx
        path = self.record_dir / key
        if expected is None:
            await self._check_unchanged(manifest, key)
        attempts = 0
        shown = ctx.upload_progress
        sent = shown.upload_advance if shown is not None else None
        events: list[Event] = []  # opened once the file first holds an upload slot

        def started() -> Event:
            # A file waiting for a slot is queued, not in flight: the display and the stats
            # event start when it holds one, so neither shows more uploads than the limit.
            if not events:
                events.append(
                    ctx.stats.open("upload", self.recid, key, bytes=size, transfer=ctx.target.plan_file(size))
                )
                if shown is not None:
                    shown.upload_started(key)
            return events[0]

        async def attempt() -> RemoteFile:
            nonlocal attempts
            attempts += 1
            # Wait for the breaker before taking an upload slot: a paused upload holds none.
            if ctx.breaker is not None:
                await ctx.breaker.wait_closed()
            async with ctx.upload_slots, ctx.upload_bytes.hold(size):
                started()
                try:
                    return await self._call(
                        lambda: ctx.target.put_file(remote, key, path, size, expected, sent), wait=False
                    )
                except VerificationError:
                    if expected is not None:  # the local copy may be the culprit: then say so, no retry
                        await blame_local_copy(path, expected, recid=self.recid, key=key)
                    raise

        try:
            got = await retry(attempt, policy=ctx.file_retry, what=f"upload of record {self.recid}, file {key}")
            if expected is None:
                expected = await self._learn_sent(remote, manifest, key, got)
        except FerryError as exc:
            if exc.file is None:
                exc.file = key
            started().close("failed", error=exc, attempts=attempts)
            if shown is not None:
                shown.upload_finished(key, ok=False)
            await self._file_state(key, "failed", error=exc)
            raise
        started().close("ok", attempts=attempts)
        if shown is not None:
            shown.upload_finished(key, ok=True)
        self.result.bytes_uploaded += size
        await self._file_state(key, "verified", checksum=expected)

    # --- the negotiated hash, and values the zip stage left to the upload ----------------

    def _hash_for(self, manifest: Manifest, key: str) -> str:
        """The hash ``key`` is verified with: the target's best that we know (or will compute)."""
        return choose_hash(self.ctx.target.abilities.hashes, manifest.entries[key].checksums)

    def _known(self, manifest: Manifest, key: str) -> Checksum | None:
        algorithm = self._hash_for(manifest, key)
        value = manifest.entries[key].checksums.get(algorithm)
        return Checksum(algorithm, value) if value is not None else None

    async def _checksum_to_compare(self, manifest: Manifest, key: str, there: RemoteFile | None) -> Checksum | None:
        """The local value of ``key`` in the negotiated hash when it is needed to decide a
        skip: known, or computed now (once, then recorded) when the target holds a finished
        file of the same size. None: unknown, and nothing there could match it (the upload
        will compute it)."""
        known = self._known(manifest, key)
        if known is not None:
            return known
        entry, algorithm = manifest.entries[key], self._hash_for(manifest, key)
        if there is None or not there.completed or there.size != entry.size or there.checksum(algorithm) is None:
            return None
        await self._check_unchanged(manifest, key)
        path = str(self.record_dir / key)
        value = (await asyncio.to_thread(hash_file, path, (algorithm,))).hexdigests()[algorithm]
        await self._check_unchanged(manifest, key)  # and not while it was read
        checksum = Checksum(algorithm, value)
        await self._record_checksum(manifest, key, checksum)
        return checksum

    async def _learn_sent(self, remote: RemoteRecord, manifest: Manifest, key: str, got: RemoteFile) -> Checksum:
        """Record the value the upload computed (and the target confirmed) for ``key``."""
        algorithm = self._hash_for(manifest, key)
        value = got.checksum(algorithm)
        if value is None:  # pragma: no cover - put_file verifies before returning
            raise VerificationError(f"the target returned no {algorithm} after a verified upload", file=key)
        try:
            await self._check_unchanged(manifest, key)
        except VerificationError:
            # Changed while it was sent: what the target holds may not be the verified bundle.
            try:
                await self._call(functools.partial(self.ctx.target.delete_file, remote, key))
            except TargetError as exc:
                log.warning("record %s: could not remove %s from the draft: %s", self.recid, key, exc)
            raise
        checksum = Checksum(algorithm, value)
        await self._record_checksum(manifest, key, checksum)
        return checksum

    async def _check_unchanged(self, manifest: Manifest, key: str) -> None:
        """``key`` still has the size and mtime the manifest recorded when it was verified."""
        if await asyncio.to_thread(manifest.fresh_entry, key) is None:
            err = VerificationError(
                f"{key} changed on disk after it was verified (size or mtime differ from the manifest); "
                "run again to check and rebuild it",
                recid=self.recid,
                file=key,
            )
            err.retryable = False  # the same file again would fail the same way
            raise err

    async def _record_checksum(self, manifest: Manifest, key: str, checksum: Checksum) -> None:
        """Keep a computed value in the manifest (saved atomically), so no later run hashes
        the file again while its size and mtime are unchanged."""
        async with self._manifest_lock:
            entry = manifest.entries[key]
            checksums = {**entry.checksums, checksum.algorithm: checksum.value}
            manifest.put(dataclasses.replace(entry, checksums=checksums))
            await asyncio.to_thread(manifest.save)

    async def _verify(self, remote: RemoteRecord, manifest: Manifest, keys: list[str]) -> None:
        """The record as a whole: every key present once, completed, with our size and checksum."""
        with self.ctx.stats.open("verify", self.recid, file_count=len(keys)) as event:
            have = await self._call(lambda: self.ctx.target.list_files(remote))
            checked = {k: _mismatch(have.get(k), manifest, k, self._hash_for(manifest, k)) for k in keys}
            bad = {k: why for k, why in checked.items() if why is not None}
            extra = sorted(set(have) - set(keys))
            if bad or extra:
                self.result.failed_files.update(bad)
                self.result.failed_files.update({k: "unexpected file on the target" for k in extra})
                err = VerificationError(
                    f"{len(bad) + len(extra)} file(s) differ on the target after upload", recid=self.recid
                )
                event.close("failed", error=err)
                raise err
            event.bytes = sum(manifest.entries[k].size for k in keys)

    async def _publish(self, remote: RemoteRecord) -> PublishOutcome:
        with self.ctx.stats.open("publish", self.recid) as event:
            outcome = await self._call(lambda: self.ctx.target.publish(remote))
            event.reason = outcome.state
            if outcome.state == "pending-review":
                event.close("ok", reason="pending-review: waiting for a curator", request_id=outcome.request_id)
        if self.ctx.ledger is not None:
            state = "published" if outcome.state == "published" else "uploaded"
            await self.ctx.ledger.run(self.ctx.ledger.set_remote_state, self.recid, outcome.state)
            await self.ctx.ledger.run(self.ctx.ledger.set_record_status, self.recid, state)
        return outcome

    async def _plan(self, body: Mapping[str, Any], query: str) -> Outcome:
        """Dry run: say what would happen; only read from the target, never write."""
        ctx = self.ctx
        files = [(f.key, f.size or 0) for f in self.record.files]
        policy = ctx.zip_policy
        decision = decide_zip(
            files,
            threshold=policy.threshold,
            max_files=policy.max_files,
            small_median_bytes=policy.small_median_bytes,
            force=policy.force,
            max_bundle_size=policy.max_bundle_size,
        )
        self.result.zip_used = decision.zip
        self.result.reason = decision.reason
        self.result.file_count = len(files)
        manifest = await asyncio.to_thread(load_manifest, self.record_dir, self.recid)
        local = sum(1 for k, _ in files if manifest.fresh_entry(k) is not None)
        remote = await self._call(lambda: ctx.target.find(self.recid, query))
        where = f"existing {remote.state} {remote.id}" if remote else "a new draft"
        ctx.plan(f"record {self.recid}: {len(files)} file(s), {human_bytes(sum(s for _, s in files))}, into {where}")
        ctx.plan(f"  download: {len(files) - local} to fetch, {local} already verified locally")
        ctx.plan(f"  zip: {'yes' if decision.zip else 'no'} ({decision.reason})")
        if not decision.zip:
            for key, size in files:
                ctx.plan(f"  upload {key}: {human_bytes(size)}, transfer {ctx.target.plan_file(size)}")
        else:
            ctx.plan(f"  upload {decision.bundles} bundle(s) + bundle manifest")
        for note in self.notes:
            ctx.plan(f"  distribution: {note}")
        ctx.plan(f"  metadata: {_short_json(body)}")
        if ctx.publish:
            ctx.plan("  publish: yes")
        ctx.stats.record(
            "record",
            "dry-run",
            self.recid,
            file_count=len(files),
            zip_used=decision.zip,
            reason=decision.reason,
            **self.event_extra(),
        )
        return "dry-run"

    # --- bookkeeping --------------------------------------------------------------------

    async def _call(self, op: Callable[[], Awaitable[T]], *, wait: bool = True) -> T:
        """One call to the target, seen by the circuit breaker (``wait``: wait for it first).

        Every call goes through here, not only uploads: when the target is down, the search
        or the create fails first, and without this the breaker would never open while each
        record burnt its retries and was lost. Only unavailability (5xx, connection errors,
        429 after the HTTP layer's own retries) counts as a failure; any other answer, even
        a 404 or a validation error, shows the target is up.
        """
        breaker = self.ctx.breaker
        if breaker is None:
            return await op()
        if wait:
            await breaker.wait_closed()
        try:
            result = await op()
        except (TargetUnavailable, RateLimited):
            breaker.record_failure()
            raise
        except TargetError:
            breaker.record_success()
            raise
        breaker.record_success()
        return result

    async def _ledger(self, status: str, **facts: Any) -> None:
        if self.ctx.ledger is not None:
            await self.ctx.ledger.run(
                self.ctx.ledger.set_record_status,
                self.recid,
                status,
                has_metadata=True,
                run_id=self.ctx.run_id,
                **facts,
            )

    async def _file_state(
        self, key: str, status: str, error: BaseException | None = None, *, checksum: Checksum | None = None
    ) -> None:
        if self.ctx.ledger is not None:
            await self.ctx.ledger.run(self.ctx.ledger.set_file, self.recid, key, status, error=error, checksum=checksum)


def _bundled_all(manifest: Manifest, keys: list[str]) -> bool:
    return set(keys) <= bundled_keys(manifest)


def _mismatch(remote: RemoteFile | None, manifest: Manifest, key: str, algorithm: str) -> str | None:
    entry = manifest.entries[key]
    if remote is None:
        return "missing on the target"
    if not remote.completed:
        return f"not completed on the target (status {remote.status})"
    if remote.size != entry.size:
        return f"size on the target {remote.size}, expected {entry.size}"
    ours = entry.checksums.get(algorithm)
    if ours is None:
        return f"{algorithm} unknown locally"
    theirs = remote.checksum(algorithm)
    if theirs != ours:
        return f"{algorithm} on the target {theirs}, expected {ours}"
    return None


def _short_json(body: Mapping[str, Any], limit: int = 400) -> str:
    text = orjson.dumps(body).decode()
    return text if len(text) <= limit else text[:limit] + "..."
