"""``oversize = "split"``: one source record carried as a series of linked records.

pipeline/oversize.py plans the parts (the file keys of each, a pure function of the file
list, so a re-run plans the same parts). Each part is a record of its own through the
normal per-record pipeline (``RecordJob.for_part``: a record job over the record with only
that part's files; its metadata and stats facts come from here): its own staging folder
(``DEST/81009.part-1-of-3``), ledger row, stats event, draft, uploads, verification and
publication, and so its own idempotence: a re-run finds each part again by its
identifier (or the ledger's id) and skips the published ones, never making a second.

Two passes, because each part links to the others' pages on the target: first every
part's draft is found or created (its page becomes known), then each part runs whole
with the links to all the others in its metadata (``metadata.parts.part_body``).

The whole record's result sums the parts; its ledger row is ``published`` (``uploaded``
before publication) once every part is, and a part that failed fails the record with
that part's error (named by its key), after the other parts have had their turn.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ferry.core.errors import FerryError, ValidationError
from metadata.base import control_characters, transform_and_validate
from metadata.parts import Part, part_body
from metadata.readers import identifier, record_key

if TYPE_CHECKING:
    from ferry.core.model import Record
    from pipeline.context import Outcome, PipelineContext, RecordResult
    from pipeline.oversize import OversizePlan
    from upload.targets.base import RemoteRecord

log = logging.getLogger(__name__)
_PAGE_LINKS = ("record_html", "self_html", "html")  # the record's page, as the target gives it
T = TypeVar("T")


class RecordJob(Protocol):
    """What this module needs of the record job (``pipeline.job.RecordJob`` is one).

    Declared here, not imported: the record job calls this module (a record to split, a
    part's body and stats), so importing it back would make the two a circle. A part is a
    record job too (``for_part``), with ``part`` set."""

    ctx: PipelineContext
    record: Record
    recid: str
    stage: str
    result: RecordResult
    part: Part | None  # set on the job of one part of a split record
    whole: str | None  # that part's source record (its recid), for the stats

    def for_part(self, record: Record, part: Part) -> RecordJob: ...
    async def run(self) -> RecordResult: ...
    async def _call(self, op: Callable[[], Awaitable[T]], *, wait: bool = True) -> T: ...
    async def _ledger(self, status: str, **facts: Any) -> None: ...
    async def _search_patiently(self, query: str) -> RemoteRecord | None: ...
    async def _create(self, body: Mapping[str, Any], query: str) -> RemoteRecord: ...


def page_of(remote: RemoteRecord) -> str | None:
    return next((remote.links[k] for k in _PAGE_LINKS if remote.links.get(k)), None)


def _part(job: RecordJob) -> Part:
    assert job.part is not None, f"record {job.recid} is not a part of a split record"
    return job.part


def event_facts(job: RecordJob) -> dict[str, Any]:
    """A part's facts for its record event: the source record it is a part of, which part."""
    part = _part(job)
    return {"part_of": job.whole, "part": f"{part.index} of {part.total}"}


def body(job: RecordJob) -> tuple[dict[str, Any], str]:
    """A part's metadata (the record's, as ``metadata.parts`` words it for the part) and query."""
    part, profile = _part(job), job.ctx.profile
    doc = part_body(profile.name, transform_and_validate(profile, job.record), part)
    issues = [*control_characters(doc), *profile.validate(doc)]
    if issues:  # a title or description made too long by the part's words, say
        errors: dict[str, list[str]] = {}
        for issue in issues:
            errors.setdefault(issue.path, []).append(issue.message)
        raise ValidationError(
            f"metadata of part {part.index} of {part.total} is invalid: {', '.join(errors)}",
            errors=errors,
            recid=job.recid,
        )
    return doc, profile.find_query(record_key(job.record.source, job.recid))


async def transform(job: RecordJob) -> tuple[dict[str, Any], str]:
    """A part's transform stage. No distribution notes per part: the claims are the whole
    record's (its own event has them)."""
    with job.ctx.stats.open("transform", job.recid) as event:
        try:
            return body(job)
        except FerryError as exc:
            event.close("failed", error=exc)
            raise


async def draft(job: RecordJob) -> RemoteRecord:
    """The part's record on the target: the ledger's, the search's, or a new draft."""
    ctx = job.ctx
    doc, query = body(job)
    row = await ctx.ledger.run(ctx.ledger.get, job.recid) if ctx.ledger is not None else None
    remote = None
    if row is not None and row.remote_id:
        known = row.remote_id
        remote = await job._call(lambda: ctx.target.get(job.recid, known))
    if remote is None:
        remote = await job._call(lambda: ctx.target.find(job.recid, query))
    if remote is None and row is not None and row.create_pending:
        remote = await job._search_patiently(query)
    if remote is None:
        remote = await job._create(doc, query)
    if ctx.ledger is not None:
        await ctx.ledger.run(ctx.ledger.set_remote, job.recid, remote.id, remote.state)
    return remote


def part_jobs(job: RecordJob, plan: OversizePlan) -> list[RecordJob]:
    """A job per planned part, over the record with only that part's files."""
    record, total = job.record, len(plan.parts)
    by_key = {f.key: f for f in record.files}
    whole = identifier(record.source, record.recid)
    url = _source_url(record)
    jobs = []
    for index, keys in enumerate(plan.parts, start=1):
        recid = f"{record.recid}.part-{index}-of-{total}"
        sub = dataclasses.replace(record, recid=recid, files=tuple(by_key[k] for k in keys))
        part = Part(index, total, whole, identifier(record.source, recid), url, len(keys), len(record.files), {})
        jobs.append(job.for_part(sub, part))
    return jobs


def _source_url(record: Record) -> str | None:
    from metadata.readers import read

    return read(record).url


async def run_parts(job: RecordJob, plan: OversizePlan) -> Outcome:
    """Carry ``job``'s record as the parts ``plan`` says; the outcome of the whole."""
    ctx = job.ctx
    jobs = part_jobs(job, plan)
    job.stage = "upload"
    pages: dict[int, str] = {}
    for part_job in jobs:  # pass 1: every part's page, before any part's metadata names them
        remote = await draft(part_job)
        if (page := page_of(remote)) is not None:
            pages[_part(part_job).index] = page
    results = []
    for part_job in jobs:  # pass 2: each part whole, linked to the others
        part_job.part = dataclasses.replace(_part(part_job), siblings=pages)
        results.append(await part_job.run())
    job.result.file_count = sum(r.file_count for r in results)  # bundles and manifests, when zipped
    job.result.source_files, job.result.parts = sum(r.source_files for r in results), len(jobs)
    job.result.bytes_uploaded = sum(r.bytes_uploaded for r in results)
    job.result.remote_id = ",".join(r.remote_id or "?" for r in results)
    job.result.zip_used = any(bool(r.zip_used) for r in results)
    failed = [(j, r) for j, r in zip(jobs, results, strict=True) if r.status == "failed"]
    if failed:
        part_job, result = failed[0]
        part = _part(part_job)
        job.stage = f"part {part.index} of {part.total} ({result.stage})"
        for other, res in failed:
            job.result.failed_files.update({f"{other.recid}/{k}": why for k, why in res.failed_files.items()})
        assert result.error is not None  # a failed RecordResult carries its error
        raise result.error
    rows = [await ctx.ledger.run(ctx.ledger.get, j.recid) for j in jobs] if ctx.ledger is not None else []
    published = bool(rows) and all(row is not None and row.status == "published" for row in rows)
    job.result.reason = f"split into {len(jobs)} linked records: " + ", ".join(
        f"part {_part(j).index} of {_part(j).total} = {r.remote_id} ({r.status})"
        for j, r in zip(jobs, results, strict=True)
    )
    await job._ledger(
        "published" if published else "uploaded", file_count=len(job.record.files), bytes=job.record.total_size
    )
    return "skipped" if all(r.status == "skipped" for r in results) else "ok"
