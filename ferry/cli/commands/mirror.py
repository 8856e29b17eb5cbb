"""`ferry mirror SOURCE TARGET`: a source record into an S3 prefix, streamed, with latest/."""

from __future__ import annotations

import argparse
import asyncio
import sys

from download.base import Source
from download.sources import SourceDeps, open_source, split_spec
from download.transport import Transport
from ferry.core.config import Config, TargetConfig
from ferry.core.errors import ConfigError, InputError
from pipeline.mirror import Mirror, MirrorOptions, MirrorResult
from pipeline.runners.forkserver import start_forkserver
from pipeline.target_wiring import confirm_production, make_target
from stats.events import StatsWriter
from upload.targets.s3 import S3Target, budgeted

from .bulk_cluster import add_cluster_arguments

DESCRIPTION = """\
Mirror every file of a source record (zenodo:ID, zenodo:concept:ID for its latest
version, a CERN recid) into an S3 target with the versioned layout:

    <prefix>/<record_id>/<key>/content     an immutable copy per version
    <prefix>/latest/<key>/content          the newest version, switched by server-side copy
    <prefix>/latest/_manifest.json         written last: which record latest/ shows

Bytes go from the source straight into S3 (no local disk; md5 checked before an object
is completed). A file already there with the same size and checksum is skipped, one the
latest version already holds is copied server-side; latest/ changes only after the whole
version is verified, and loses the files the version no longer has. A run twice moves
nothing. TARGET is a [targets.NAME] of type s3, or s3://bucket/prefix (credentials and
endpoint from the standard AWS settings). Two mirrors of one prefix at once: the second
is refused (a lock object with an expiry). --dry-run reads, prints the plan, writes nothing.

Exit status: 0 every file verified (or already there); 1 with one line per failed file;
2 for bad usage, configuration or input.
"""

EPILOG = """\
examples:
  ferry mirror zenodo:concept:10408587 cpg --dry-run
  ferry mirror zenodo:concept:10408587 cpg --stats-dir stats
  ferry mirror zenodo:19835081 s3://bucket/prefix --only README.md
  ferry mirror 80509 cpg
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "mirror",
        parents=[common],
        help="mirror a record (Zenodo, CERN) into S3 with a latest/ pointer, streamed",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="zenodo:ID, zenodo:concept:ID or a CERN recid")
    p.add_argument("target", metavar="TARGET", help="a [targets.NAME] of type s3, or s3://bucket/prefix")
    p.add_argument("--only", nargs="+", default=[], metavar="KEY", help="mirror only these files")
    p.add_argument(
        "--jobs", type=int, default=None, metavar="N", help="files streamed at once (default limits.uploads)"
    )
    p.add_argument("--stats-dir", metavar="DIR")
    p.add_argument("--yes", action="store_true", help="allow writing to a target marked production = true")
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing anywhere")
    add_cluster_arguments(p)  # one Dask task per file (docs/cluster.md)
    p.set_defaults(func=run)


def target_config(config: Config, name: str) -> TargetConfig:
    if name.startswith("s3://"):
        return TargetConfig.made(name, "s3", name)
    tcfg = config.target(name)
    if tcfg.type != "s3":
        raise ConfigError(f"targets.{name}: ferry mirror writes to s3 targets, not {tcfg.type!r}")
    return tcfg


def check_cluster_options(args: argparse.Namespace) -> None:
    """What ``--cluster`` cannot honour is refused before anything is read or written."""
    if args.cluster_config and not args.cluster:
        raise InputError("--cluster-config goes with --cluster htcondor|slurm|pbs|sge|lsf")
    if not args.cluster:
        return
    if args.dry_run:
        raise InputError("--dry-run reads the target from here and writes nothing: run it without --cluster")
    if args.cluster.startswith(("local", "tcp://", "tls://", "ws")) and args.cluster_config:
        raise InputError(f"--cluster-config is for a batch system, not --cluster {args.cluster}")


def run(args: argparse.Namespace, config: Config) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise InputError("--jobs must be at least 1")
    check_cluster_options(args)
    tcfg = target_config(config, args.target)
    if args.cluster and budgeted(tcfg):
        # Each worker's S3 client would spend the whole budget: the mirror has no shared
        # limiter (the bulk runner's ClusterLimiter holds per record, not per file).
        raise ConfigError(
            f"targets.{tcfg.name}: a request budget (requests_per_minute = {tcfg.requests_per_minute}, "
            f"requests_per_hour = {tcfg.requests_per_hour}) is not shared by the workers of ferry mirror "
            "--cluster: run it without --cluster, or leave the budget to S3"
        )
    confirm_production(tcfg, yes=args.yes, dry_run=args.dry_run)
    start_forkserver(args.cluster)  # local workers' imports overlap the source's resolve
    result = asyncio.run(_run(args, config, tcfg))
    return report(result, dry_run=args.dry_run)


async def _run(args: argparse.Namespace, config: Config, tcfg: TargetConfig) -> MirrorResult:
    limits = config.limits
    name, ident = split_spec(args.source)
    transport = Transport.create(
        config.source.protocol,
        https_base=config.source.portal,
        limits=limits,
        verify_tls=config.source.verify_tls,
    )
    source = open_source(name, SourceDeps(config=config, limits=limits, transport=transport))
    target = make_target(tcfg, limits)
    assert isinstance(target, S3Target)  # target_config checked the type
    stats = StatsWriter(args.stats_dir)
    opts = MirrorOptions(
        only=tuple(args.only),
        dry_run=args.dry_run,
        jobs=args.jobs or limits.uploads,
        retries=limits.retries,
        source_spec=args.source,
    )
    event = stats.open("run", reason=f"mirror {args.source} {args.target}", target=tcfg.name)
    record_id = ident if name == "cernopendata" else args.source
    try:
        if args.cluster:
            result = await _run_cluster(args, config, tcfg, source, transport, target, opts, stats, record_id)
        else:
            mirror = Mirror(source, transport.fetcher_for, target, opts, stats=stats, url_for=transport.url_for)
            result = await mirror.run(record_id)
        event.close("dry-run" if opts.dry_run else ("ok" if result.ok else "failed"))
        return result
    except BaseException as exc:
        event.close("failed", error=exc)
        raise
    finally:
        await target.aclose()
        await source.close()
        await transport.close()
        stats.close()


async def _run_cluster(
    args: argparse.Namespace,
    config: Config,
    tcfg: TargetConfig,
    source: Source,
    transport: Transport,
    target: S3Target,
    opts: MirrorOptions,
    stats: StatsWriter,
    record_id: str,
) -> MirrorResult:
    """The same mirror with every file a Dask task; resolve, lock and latest/ stay here."""
    # Imported here: Dask is an optional extra, `ferry mirror` without --cluster needs none.
    try:
        from pipeline.runners.dask import WorkerRows, connect
        from pipeline.runners.dask_mirror import ClusterFiles, MirrorSpec
    except ImportError as exc:
        raise ConfigError("--cluster needs Dask distributed: pip install 'dataferry[cluster]'") from exc
    spec = MirrorSpec(config, tcfg, config.limits, stats.run_id, window=opts.window, retries=opts.retries)
    rows = WorkerRows(args.stats_dir, stats.run_id)
    try:
        async with connect(args.cluster, threads=opts.jobs, config_file=args.cluster_config) as client:
            files = ClusterFiles(client, spec, target, rows)
            mirror = Mirror(
                source, transport.fetcher_for, target, opts, stats=stats, url_for=transport.url_for, files_step=files
            )
            return await mirror.run(record_id)
    finally:
        rows.close()


def report(result: MirrorResult, *, dry_run: bool) -> int:
    if dry_run:
        for step in result.plan:
            print(f"  {step}")
        print(f"dry run: record {result.record_id}: {len(result.plan)} step(s); nothing written")
        return 0
    for key, why in sorted(result.failed.items()):
        print(f"ferry: error: record {result.record_id}, file {key}: {why}", file=sys.stderr)
    latest = (
        "latest/ unchanged" if result.failed else f"latest/: {len(result.copied)} copied, {len(result.removed)} removed"
    )
    verdict = "ok" if result.ok else f"{len(result.failed)} file(s) failed"
    print(
        f"mirror of record {result.record_id}: {verdict}: {len(result.sent)} streamed ({result.bytes_sent} bytes), "
        f"{len(result.reused)} copied from latest/, {len(result.skipped)} already there; {latest}"
    )
    return 0 if result.ok else 1
