"""Assembles one run from configuration: source, downloader, target, profile, ledger, stats.

The commands (`ferry upload`, `ferry bulk`, `ferry demo`) only parse flags and print;
everything they share about wiring the pipeline together is here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from download.base import Source
from download.engine import Downloader
from download.manifest import Manifest, load_manifest
from download.sources import SourceDeps, open_source
from download.transport import Transport
from ferry.core.config import Config, Limits, TargetConfig
from ferry.core.errors import ConfigError, DownloadFailed, InputError, is_disk_full
from ferry.core.model import Record
from ferry.progress import ProgressSink
from metadata.base import FieldIssue, Profile, get_profile
from pipeline.context import Fetch, PipelineContext, UploadProgress
from pipeline.ledger import Ledger
from pipeline.limits import CircuitBreaker
from pipeline.stream import StreamFrom
from pipeline.target_wiring import confirm_production, make_target
from stats.events import StatsWriter
from upload.targets.base import RequestLimiter, StreamingTarget
from upload.zip.policy import ZipPolicy
from upload.zip.zipper import bundled_keys, zip_executor


@dataclass(frozen=True)
class RunOptions:
    target: str
    dest: Path
    stats_dir: str | None = None
    portal: str | None = None
    records: Sequence[str] = ()
    protocol: str | None = None
    https_base: str | None = None
    publish: bool | None = None  # None: the target's `publish` setting
    new_version: bool = False
    dry_run: bool = False
    delete_staged: bool = False
    ledger: Path | None = None
    yes: bool = False
    run_id: str | None = None
    summary: bool = False  # write the run summary row when the stats close (bulk runs)
    source: str = "cernopendata"  # the SOURCES name the record ids belong to (download.sources.split_spec)
    stream: bool = False  # --stream: source -> target's put_stream, nothing staged (pipeline/stream.py)


@dataclass(frozen=True)
class RunSpec:
    """Everything a run is, frozen and picklable: built into live objects (limiters,
    executors, ledger, writers) only where it runs, by ``open_run`` (this process, or a
    Dask worker: ``pipeline.runners.dask``). Secrets are not in it: each process reads the
    token from the configured file or environment variable itself."""

    config: Config
    options: RunOptions
    limits: Limits


@dataclass(frozen=True)
class RunParts:
    """Live parts a runner supplies instead of the defaults (a cluster worker's shared
    budget, its captured stats, its ledger that shares create intents)."""

    limiter: RequestLimiter | None = None
    stats: Callable[[str | None, tuple[str, ...]], StatsWriter] | None = None  # (run_id, redact) -> writer
    ledger: Callable[[Path, str], Ledger] | None = None  # (path, target name) -> ledger


class NoDocument:
    """The profile of a target without metadata documents (``abilities.metadata`` False):
    nothing is sent, so any source's record passes (a folder or a Zenodo record has no
    CERN metadata to transform)."""

    name = "none"

    def transform(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def validate(self, body: Mapping[str, Any]) -> list[FieldIssue]:
        return []

    def find_query(self, recid: str) -> str:
        return recid


def make_source(
    config: Config, opts: RunOptions, transport: Transport, limits: Limits, name: str = "cernopendata"
) -> Source:
    deps = SourceDeps(config=config, limits=limits, transport=transport, portal=opts.portal, records=opts.records)
    return open_source(name, deps)


def make_fetch(downloader: Downloader, dest: Path) -> Fetch:
    """The pipeline's download stage: fetch and verify every file, or say which failed."""

    async def fetch(record: Record, record_dir: Path) -> Manifest:
        before = await asyncio.to_thread(load_manifest, record_dir, record.recid)
        bundled = bundled_keys(before)
        if bundled:
            # Originals deleted after zipping (`ferry zip --delete-originals`) live in the
            # verified bundles now: fetching them again would undo that for nothing.
            gone = {f.key for f in record.files if f.key in bundled and not (record_dir / f.key).exists()}
            record = dataclasses.replace(record, files=tuple(f for f in record.files if f.key not in gone))
        result = await downloader.download_record(record, dest)
        if result.error is not None:
            raise result.error
        if not result.ok:
            full = next((f.error for f in result.failures if f.error is not None and is_disk_full(f.error)), None)
            if full is not None:
                raise full  # not the record's fault: the bulk stops on it (pipeline/bulk.py)
            failures = {f.key: (f.error.message if f.error else "failed") for f in result.failures}
            first = next(iter(failures.items()))
            raise DownloadFailed(
                f"{len(failures)} of {len(result.files)} file(s) failed to download (first: {first[0]}: {first[1]})",
                failures=failures,
                # The engine already retried each file (transient errors with backoff, a
                # checksum mismatch once): repeating the whole record would not help.
                retryable=False,
                recid=record.recid,
            )
        return await asyncio.to_thread(load_manifest, record_dir, record.recid)

    return fetch


@dataclass
class Run:
    ctx: PipelineContext
    source: Source
    downloader: Downloader
    target_config: TargetConfig
    options: RunOptions


@contextlib.asynccontextmanager
async def open_run(
    config: Config,
    opts: RunOptions,
    *,
    progress: ProgressSink | None = None,
    on_plan: Callable[[str], None] | None = None,
    limits: Limits | None = None,
    parts: RunParts | None = None,
) -> AsyncIterator[Run]:
    """Everything one run needs, closed in the right order afterwards."""
    limits = limits or config.limits
    parts = parts or RunParts()
    tcfg = config.target(opts.target)
    confirm_production(tcfg, yes=opts.yes, dry_run=opts.dry_run)
    protocol = opts.protocol or config.source.protocol
    portal = (opts.portal or config.source.portal).rstrip("/")
    transport = Transport.create(
        protocol, https_base=opts.https_base or portal, limits=limits, verify_tls=config.source.verify_tls
    )
    profile: Profile = get_profile(tcfg.profile)
    # The token is read here, once per run (a missing or empty token file is a ConfigError
    # naming the target, before anything starts), and handed to the target and the stats.
    token = tcfg.token()
    redact = (token.reveal(),) if token else ()
    if parts.stats is not None:
        stats = parts.stats(opts.run_id, redact)
    else:
        stats = StatsWriter(opts.stats_dir, opts.run_id, redact=redact, summary=opts.summary)
    source = make_source(config, opts, transport, limits, opts.source)
    downloader = Downloader(transport, limits=limits, stats=stats, progress=progress)
    target = make_target(tcfg, limits, token=token, limiter=parts.limiter)
    if not target.abilities.metadata:
        profile = NoDocument()
    if opts.stream and not (target.abilities.streaming_put and isinstance(target, StreamingTarget)):
        await target.aclose()  # nothing has started: close what was opened, then refuse
        await downloader.close()
        with contextlib.suppress(Exception):
            await source.close()
        raise ConfigError(
            f"targets.{tcfg.name}: a {tcfg.type} target cannot take a stream (no streaming put): "
            "run without --stream (files are staged in --dest first)"
        )
    ledger = None
    if not opts.dry_run:
        ledger_path = opts.ledger or (opts.dest / ".ferry" / f"ledger-{tcfg.name}.sqlite")
        ledger_path.parent.mkdir(parents=True, exist_ok=True)
        ledger = parts.ledger(ledger_path, tcfg.name) if parts.ledger else Ledger.open(ledger_path, target=tcfg.name)
    pool = zip_executor(limits.zip_workers) if not opts.dry_run else None
    publish = tcfg.publish if opts.publish is None else opts.publish
    ctx = PipelineContext(
        target=target,
        profile=profile,
        dest=opts.dest,
        fetch=make_fetch(downloader, opts.dest),
        stats=stats,
        limits=limits,
        zip_policy=ZipPolicy.from_config(config, tcfg),
        zip_executor=pool,
        ledger=ledger,
        publish=publish,
        new_version=opts.new_version,
        dry_run=opts.dry_run,
        delete_staged=opts.delete_staged,
        oversize=tcfg.oversize,
        run_id=stats.run_id,
        breaker=CircuitBreaker(),
        upload_progress=progress if isinstance(progress, UploadProgress) else None,
        on_plan=on_plan,
        stream=StreamFrom(transport.fetcher_for, transport.url_for) if opts.stream else None,
    )
    try:
        yield Run(ctx=ctx, source=source, downloader=downloader, target_config=tcfg, options=opts)
    finally:
        with contextlib.suppress(Exception):
            await source.close()
        await downloader.close()
        await target.aclose()
        if pool is not None:
            await asyncio.to_thread(pool.shutdown)
        if ledger is not None:
            ledger.close()
        stats.close()


def with_jobs(limits: Limits, *, downloads: int | None = None, uploads: int | None = None) -> Limits:
    changes = {}
    if downloads is not None:
        if downloads < 1:
            raise InputError("--jobs must be at least 1")
        changes["downloads"] = downloads
    if uploads is not None:
        if uploads < 1:
            raise InputError("--uploads must be at least 1")
        changes["uploads"] = uploads
    return replace(limits, **changes) if changes else limits
