"""Records the source lists no files for (author lists, documentation, trigger paths...).

More than half of the CERN portal's records hold only metadata. What happens to one is
decided by what the target can do (``Target.abilities``), never by its type:

- ``metadata_only`` (InvenioRDM/NRP): a metadata-only record (the profile's body has
  ``files.enabled = false``): no download, zip or upload stage. The record is created (or
  its draft updated), verified to hold no files and to carry the metadata without field
  errors, published when asked; a re-run finds it published and skips it.
- ``metadata`` without ``metadata_only`` (Zenodo publishes nothing without a file): one
  file, the source record itself as JSON (``metadata.readers.record_document``), staged in
  ``DEST/<recid>/`` with its checksums and then moved by the normal upload stages (so it
  is verified, skipped when unchanged, published like any file); the profile's notes say so.
- neither (a folder, a bucket: only files): a per-record ``InputError`` saying so.

Every outcome is counted on the record's stats event (``extra.metadata_only``, and the
reason), so ``ferry stats`` can tell these records apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from download.manifest import ManifestEntry, load_manifest
from ferry.core.atomic import atomic_write_bytes
from ferry.core.errors import InputError, TargetError, VerificationError
from ferry.progress import human_bytes
from metadata.readers import record_document
from pipeline.job_base import short_json

if TYPE_CHECKING:
    from download.manifest import Manifest
    from ferry.core.model import Record
    from pipeline.context import Outcome, PipelineContext, RecordResult
    from upload.targets.base import PublishOutcome, RemoteRecord

T = TypeVar("T")


class RecordJob(Protocol):
    """What this module needs of the record job (``pipeline.job.RecordJob`` is one).

    Declared here, not imported: the record job calls this module, so importing it back
    would make the two a circle."""

    ctx: PipelineContext
    record: Record
    recid: str
    record_dir: Path
    stage: str
    result: RecordResult
    notes: list[str]

    def event_extra(self) -> dict[str, Any]: ...
    async def _call(self, op: Callable[[], Awaitable[T]], *, wait: bool = True) -> T: ...
    async def _ledger(self, status: str, **facts: Any) -> None: ...
    async def _search_patiently(self, query: str) -> RemoteRecord | None: ...
    async def _create(self, body: Mapping[str, Any], query: str) -> RemoteRecord: ...
    async def _publish(self, remote: RemoteRecord) -> PublishOutcome: ...
    async def _deliver(self, body: Mapping[str, Any], query: str, manifest: Manifest, keys: list[str]) -> Outcome: ...


METADATA_ONLY = "metadata-only record (the source lists no files)"


def mode(job: RecordJob) -> str:
    """``metadata-only``, ``document`` or ``refuse``: what this target does with no files."""
    abilities = job.ctx.target.abilities
    if abilities.metadata_only:
        return "metadata-only"
    if abilities.metadata:
        return "document"
    return "refuse"


def refusal(job: RecordJob) -> InputError:
    return InputError(
        f"the record lists no files, and target {job.ctx.target.name} holds only files "
        "(no metadata-only records, no metadata documents): nothing to migrate there",
        recid=job.recid,
    )


async def run(job: RecordJob, body: Mapping[str, Any], query: str) -> Outcome:
    """Migrate a record without files; the caller has transformed and validated it."""
    how = mode(job)
    if how == "refuse":
        raise refusal(job)
    if job.ctx.dry_run:
        return await plan(job, body, query, how)
    if how == "document":
        manifest = await stage_document(job)
        key = next(iter(manifest.entries))
        job.result.reason = f"{METADATA_ONLY}: uploaded as one file, {key}, the source record as JSON"
        return await job._deliver(body, query, manifest, [key])
    return await _metadata_only(job, body, query)


async def stage_document(job: RecordJob) -> Manifest:
    """Write the record document into the record folder, with its size and checksums."""
    name, data = record_document(job.record)

    def write() -> Manifest:
        path = job.record_dir / name
        job.record_dir.mkdir(parents=True, exist_ok=True)
        manifest = load_manifest(job.record_dir, job.recid)
        entry = manifest.fresh_entry(name)
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if entry is not None and entry.checksums.get("md5") == md5 and entry.size == len(data):
            return manifest  # unchanged since the last run: its mtime (and so the skip) holds
        atomic_write_bytes(path, data)
        st = os.stat(path)
        checksums = {"md5": md5, "sha256": hashlib.sha256(data).hexdigest()}
        for key in list(manifest.entries):
            manifest.drop(key)  # a record without files has nothing else to send
        manifest.put(ManifestEntry(key=name, size=len(data), mtime_ns=st.st_mtime_ns, checksums=checksums))
        manifest.save()
        return manifest

    manifest = await asyncio.to_thread(write)
    await job._ledger("downloaded", file_count=1, bytes=len(data))
    return manifest


async def _find(job: RecordJob, query: str) -> RemoteRecord | None:
    ctx, target = job.ctx, job.ctx.target
    row = await ctx.ledger.run(ctx.ledger.get, job.recid) if ctx.ledger is not None else None
    remote = None
    if row is not None and row.remote_id:
        known = row.remote_id
        remote = await job._call(lambda: target.get(job.recid, known))
    if remote is None:
        remote = await job._call(lambda: target.find(job.recid, query))
    if remote is None and row is not None and row.create_pending:
        remote = await job._search_patiently(query)
    return remote


async def _metadata_only(job: RecordJob, body: Mapping[str, Any], query: str) -> Outcome:
    ctx, target = job.ctx, job.ctx.target
    job.stage = "upload"
    remote = await _find(job, query)
    if remote is not None and remote.state == "published" and not ctx.new_version:
        found = remote
        have = await job._call(lambda: target.list_files(found))
        if have:
            raise TargetError(
                f"already published as {found.id} with {len(have)} file(s), but the source lists none; "
                "use --new-version to publish a metadata-only version",
                recid=job.recid,
            )
        job.result.remote_id = found.id
        job.result.reason = f"{METADATA_ONLY}: already published as {found.id}"
        ctx.stats.record("upload", "skipped", job.recid, reason=job.result.reason, file_count=0)
        if ctx.ledger is not None:
            await ctx.ledger.run(ctx.ledger.set_remote, job.recid, found.id, found.state)
            await ctx.ledger.run(ctx.ledger.set_record_status, job.recid, "published")
        return "skipped"

    await job._ledger("uploading", file_count=0, bytes=0)
    if remote is None:
        remote = await job._create(body, query)
    elif remote.state == "published":  # --new-version
        published = remote
        draft = await job._call(lambda: target.new_version(published))
        remote = await job._call(lambda: target.update_metadata(draft, body))
    else:
        existing = remote
        remote = await job._call(lambda: target.update_metadata(existing, body))
    job.result.remote_id = remote.id
    if ctx.ledger is not None:
        await ctx.ledger.run(ctx.ledger.set_remote, job.recid, remote.id, remote.state)

    job.stage = "verify"
    await _verify(job, remote)
    await job._ledger("uploaded")
    job.result.reason = METADATA_ONLY
    if ctx.publish and target.abilities.publish:
        job.stage = "publish"
        job.result.publish = await job._publish(remote)
    return "ok"


async def _verify(job: RecordJob, remote: RemoteRecord) -> None:
    """The record holds no files and the server took the metadata without field errors."""
    with job.ctx.stats.open("verify", job.recid, file_count=0) as event:
        have = await job._call(lambda: job.ctx.target.list_files(remote))
        problems = []
        if have:
            problems.append(f"it holds {len(have)} file(s) ({', '.join(sorted(have)[:5])})")
        if remote.errors:
            fields = ", ".join(f"{k}: {'; '.join(v)}" for k, v in sorted(remote.errors.items()))
            problems.append(f"the target reports metadata errors ({fields})")
        if problems:
            err = VerificationError(
                f"metadata-only record {remote.id} is not as sent: {'; '.join(problems)}", recid=job.recid
            )
            event.close("failed", error=err)
            raise err


async def plan(job: RecordJob, body: Mapping[str, Any], query: str, how: str) -> Outcome:
    """Dry run: what would happen, reading from the target only."""
    ctx = job.ctx
    remote = await job._call(lambda: ctx.target.find(job.recid, query))
    where = f"existing {remote.state} {remote.id}" if remote else "a new draft"
    if how == "metadata-only":
        ctx.plan(f"record {job.recid}: no files: a metadata-only record (files.enabled = false), into {where}")
    else:
        name, data = record_document(job.record)
        ctx.plan(
            f"record {job.recid}: no files: one file {name} ({human_bytes(len(data))}, the source record as JSON; "
            f"{ctx.target.name} publishes nothing without a file), into {where}"
        )
    for note in job.notes:
        ctx.plan(f"  distribution: {note}")
    ctx.plan(f"  metadata: {short_json(body)}")
    if ctx.publish:
        ctx.plan("  publish: yes")
    job.result.reason = METADATA_ONLY
    ctx.stats.record("record", "dry-run", job.recid, file_count=0, reason=METADATA_ONLY, **job.event_extra())
    return "dry-run"
