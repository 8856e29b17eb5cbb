"""The per-record pipeline: all transfer policy in one place.

One record goes resolve -> transform + validate -> download (verified) -> zip (when the
policy says so) -> upload (each file verified by the target's md5) -> verify the whole
record on the target -> publish (when asked). Sources, targets and the zipper only speak
their protocols; this module decides what to skip, what to retry, what a dry run may
touch (reads only), and what goes into the ledger and the stats.

The single-record command and the bulk runner both call ``RecordJob.run``; the bulk runner
shares one ``PipelineContext`` (pipeline/context.py, and so every limit) across all its
records, which is what lets one record's upload overlap another's download. The upload and
verify stages are in pipeline/job_files.py, the bookkeeping (target calls through the
breaker, ledger, stats) in pipeline/job_base.py.

Why one module of about 440 lines: the stages of a record in the order they run are
the pipeline's policy, kept readable in one place on purpose; the upload and verify
stages (job_files.py) and the bookkeeping (job_base.py) are already beside it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
from collections.abc import Mapping
from typing import Any

from download.manifest import Manifest, load_manifest
from ferry.core.errors import (
    DownloadFailed,
    FerryError,
    InputError,
    NoFilesError,
    TargetError,
    VerificationError,
    maybe_applied,
)
from ferry.core.model import Record
from ferry.progress import human_bytes
from metadata.base import transform_and_validate
from metadata.fidelity import distribution_discrepancies
from metadata.parts import Part
from metadata.readers import record_key
from pipeline import job_split, oversize, without_files
from pipeline.claims import settle_claim
from pipeline.context import Outcome, PipelineContext, RecordResult
from pipeline.job_base import short_json
from pipeline.job_files import FileStages, mismatch
from pipeline.stream import stream_manifest
from upload.targets.base import PublishOutcome, RemoteRecord
from upload.zip.format import is_zip_output
from upload.zip.policy import decide_zip
from upload.zip.zipper import bundled_keys, upload_keys, zip_record

log = logging.getLogger(__name__)
# How long to keep asking the target's search for a draft whose create may have happened
# before a crash: InvenioRDM's search index refreshes about once a second.
CREATE_RECHECK_DELAYS = (0.5, 1.0, 2.0, 4.0)


class RecordJob(FileStages):
    """Moves one record through every stage, using the shared context's limits."""

    def __init__(
        self, ctx: PipelineContext, record: Record, *, part: Part | None = None, whole: str | None = None
    ) -> None:
        super().__init__(ctx, record)
        # The job of one part of a split record (pipeline/job_split.py): its metadata is the
        # part's, ``whole`` the source record's recid. None for a whole record.
        self.part = part
        self.whole = whole

    def for_part(self, record: Record, part: Part) -> RecordJob:
        """The job of one part of this record (``record``: the part's recid and files)."""
        return RecordJob(self.ctx, record, part=part, whole=self.recid)

    def event_extra(self) -> dict[str, Any]:
        extra = super().event_extra()
        return extra if self.part is None else {**extra, **job_split.event_facts(self)}

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
                **self.result.event_files(),
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
                **self.result.event_files(),
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
        plan = oversize.check(self, record_key(self.record.source, self.recid))
        if plan.action == "split" and not ctx.dry_run:
            return await job_split.run_parts(self, plan)
        if ctx.dry_run:
            return await self._plan(body, query)
        if await self._published_before():
            return "skipped"

        if ctx.stream is not None:
            return await self._stream(body, query)
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

    async def _stream(self, body: Mapping[str, Any], query: str) -> Outcome:
        """``--stream``: no download, no zip; each file from the source straight into the
        target, checked against the source's size and checksum (pipeline/stream.py)."""
        self.stage = "upload"
        manifest = stream_manifest(self.record_dir, self.record)
        keys = sorted(manifest.entries)
        self.result.zip_used, self.result.reason = False, "streamed from the source (no staging, no zip)"
        self._check_target_limits(manifest, keys)
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
        if self.part is not None:
            return await job_split.transform(self)
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
                if not (exc.retryable and maybe_applied(exc)) or attempt > ctx.limits.retries:
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
        differ = [k for k in keys if mismatch(have.get(k), manifest, k, self._hash_for(manifest, k)) is not None]
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
        if ctx.stream is not None:  # nothing staged, nothing zipped: each file as the source has it
            ctx.plan(f"  stream: {len(files)} file(s) from the source straight into the target (no staging, no zip)")
            decision = dataclasses.replace(decision, zip=False)
            self.result.zip_used = False
        else:
            ctx.plan(f"  download: {len(files) - local} to fetch, {local} already verified locally")
            ctx.plan(f"  zip: {'yes' if decision.zip else 'no'} ({decision.reason})")
        if not decision.zip:
            for key, size in files:
                ctx.plan(f"  upload {key}: {human_bytes(size)}, transfer {ctx.target.plan_file(size)}")
        else:
            ctx.plan(f"  upload {decision.bundles} bundle(s) + bundle manifest")
        for note in self.notes:
            ctx.plan(f"  distribution: {note}")
        ctx.plan(f"  metadata: {short_json(body)}")
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


def _bundled_all(manifest: Manifest, keys: list[str]) -> bool:
    return set(keys) <= bundled_keys(manifest)
