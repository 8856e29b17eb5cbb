"""`ferry bulk`: many records, prioritised, pipelined, resumable."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from download.sources.cache import ORDERS, CacheBuilder, MasterCache, OrderDecision, PackedEntries, order_recids
from ferry.cli.filters import filter_from
from ferry.cli.numbers import check_writable_file, int_at_least, positive_float
from ferry.core.config import Config, Limits
from ferry.core.errors import InputError
from ferry.core.model import Record
from ferry.progress import BulkProgress, display_options, human_bytes
from pipeline.bulk import BulkReport, BulkRunner, remove_partials
from pipeline.context import RecordResult
from pipeline.recids import read_recids
from pipeline.runners.forkserver import start_forkserver
from pipeline.runtime import open_run, with_jobs

from .bulk_cluster import add_cluster_arguments, run_cluster
from .upload import add_run_arguments, check_run_arguments, options_from, print_results

DESCRIPTION = """\
Upload many records: every selected recid goes through download (verified) -> zip (when
the record has many files) -> metadata transform and validation -> upload (every file's
md5 checked on the target) -> publish (if asked). Records flow concurrently, so one
record uploads while others download; every stage is bounded (records in flight,
downloads, zip workers, uploads, bytes in flight, the target's request rate) and at most
limits.staging_bytes are downloaded ahead of the uploads.

Records are resolved once into the master cache (--cache, default
DEST/.ferry/master-cache.json; missing recids are resolved through the portal API or
--records and added), then ordered: by default collision data, then simulated, then
unclassified, then records without metadata.

Progress is kept in a crash-safe ledger (DEST/.ferry/ledger-TARGET.sqlite). After a crash,
kill -9 or Ctrl-C, run the same command again: records done are checked on the target
(the truth) and skipped, interrupted ones continue, and no record gets two drafts.
The first Ctrl-C (or SIGTERM) stops starting records and finishes those in flight (or
cancels them at once while the target is unavailable); a second one cancels them. A run
also stops by itself after --deadline, or when the target stays down (limits.breaker_trips
circuit-breaker openings in a row, limits.breaker_cool_down seconds each); every
unfinished record is named, and running the same command again resumes.

Exit status: 0 when every selected record is verified on the target (or already was);
1 when some record failed (each named on stderr with the stage and files); 2 for bad
usage, configuration or input; 130 when interrupted.
"""

EPILOG = """\
examples:
  ferry bulk --recids delphi.txt --target nrp-test --dry-run
  ferry bulk --recids delphi.txt --target nrp-test --stats-dir stats
  ferry bulk --all --cache master-cache.json --target nrp-test --order size-asc
  ferry bulk --recids delphi.txt --target nrp-test --cluster local:4   (Dask, see docs/cluster.md)
  ferry bulk --recids delphi.txt --target nrp-test --exclude '*.log' --retries 8

recid list: one recid per line; '#' starts a comment; bad lines are reported by line
number and the other records still run.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "bulk",
        parents=[common],
        help="upload many records from a recid list or the master cache",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pick = parser.add_mutually_exclusive_group(required=True)
    pick.add_argument("--recids", metavar="FILE", help="recid list file (one per line, '#' comments)")
    pick.add_argument("--all", action="store_true", help="every record of the master cache (or of --records)")
    parser.add_argument("--cache", metavar="FILE", help="master cache (default DEST/.ferry/master-cache.json)")
    parser.add_argument("--order", choices=ORDERS, default="priority", help="processing order (default: priority)")
    parser.add_argument(
        "--records-in-flight", type=int_at_least(1), metavar="N", help="records at once (limits.records_in_flight)"
    )
    parser.add_argument(
        "--staging-gb", type=positive_float, metavar="GB", help="staging budget in GB (limits.staging_bytes)"
    )
    parser.add_argument(
        "--deadline",
        type=positive_float,
        metavar="SECONDS",
        help="stop after this long: start nothing more, cancel what runs, name every unfinished record "
        "(run again to resume); exit 1",
    )
    add_run_arguments(parser)
    add_cluster_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    check_run_arguments(args)
    check_writable_file("--cache", args.cache)
    if args.cluster and filter_from(args):
        raise InputError("--include/--exclude are not supported with --cluster yet (the workers resolve records)")
    if args.cluster and args.stream:
        raise InputError("--stream is not supported with --cluster yet: run it without --cluster")
    limits = with_jobs(config.limits, downloads=args.jobs, uploads=args.uploads)
    if args.records_in_flight is not None:
        if args.records_in_flight < 1:
            raise InputError("--records-in-flight must be at least 1")
        limits = dataclasses.replace(limits, records_in_flight=args.records_in_flight)
    if args.staging_gb is not None:
        if args.staging_gb <= 0:
            raise InputError("--staging-gb must be positive")
        limits = dataclasses.replace(limits, staging_bytes=int(args.staging_gb * 1e9))
    recids, bad_lines = _selection(args)
    for err in bad_lines:
        print(f"ferry: error: {err}", file=sys.stderr)
    start_forkserver(args.cluster)  # local workers' imports overlap the run's opening
    report = asyncio.run(_run(args, config, limits, recids))
    freed = remove_partials(Path(args.dest), report)
    if freed:
        print(f"ferry: removed the partial files of the unfinished records ({human_bytes(freed)})", file=sys.stderr)
    code = print_results(list(report.results.values()))
    _print_summary(report)
    _print_unfinished(report)
    if report.interrupted:
        return 130
    return 1 if (code or bad_lines or report.not_started or report.unfinished or report.stopped) else 0


def _selection(args: argparse.Namespace) -> tuple[list[str], list[InputError]]:
    if args.recids:
        parsed = read_recids(args.recids)
        if not parsed.recids and parsed.errors:
            raise InputError(f"recid list {args.recids} has no usable recid ({len(parsed.errors)} bad line(s))")
        return parsed.recids, list(parsed.errors)
    return [], []  # --all: taken from the cache / records files once loaded


async def _run(args: argparse.Namespace, config: Config, limits: Limits, recids: list[str]) -> BulkReport:
    opts = dataclasses.replace(options_from(args), summary=True)
    progress = BulkProgress(stream=sys.stderr, **display_options(args))
    # The cache and the records files are read (and refused when bad) before the run opens
    # its ledger: a refused input leaves nothing behind.
    cache, builder = _load_cache(args, limits)
    async with open_run(config, opts, progress=progress, on_plan=print, limits=limits) as ferry_run:
        order, entries = await _plan(args, cache, builder, recids, ferry_run.source.resolve)

        keep = filter_from(args)  # the cache keeps whole records; the run moves only the kept files

        async def resolve(recid: str) -> Record:
            return keep.record(entries.record(recid))

        def on_result(result: RecordResult) -> None:
            progress.record_done(ok=result.status != "failed")

        progress.add_records(len(order))
        if args.cluster:
            async with progress:
                return await run_cluster(args, config, limits, ferry_run, order, entries.record, progress)
        runner = BulkRunner(ferry_run.ctx, resolve, on_result=on_result, deadline=args.deadline)
        async with progress:
            return await runner.run(order)


def _load_cache(args: argparse.Namespace, limits: Limits) -> tuple[MasterCache, CacheBuilder]:
    """The master cache with the --records files added (InputError when either is bad)."""
    cache_path = Path(args.cache) if args.cache else Path(args.dest) / ".ferry" / "master-cache.json"
    cache = MasterCache.load(cache_path, missing_ok=args.cache is None or not args.all)
    builder = CacheBuilder(cache, jobs=limits.downloads)
    for path in args.records or ():
        builder.add_records_file(path)
    return cache, builder


async def _plan(
    args: argparse.Namespace,
    cache: MasterCache,
    builder: CacheBuilder,
    recids: list[str],
    resolve: Callable[[str], Awaitable[Record]],
) -> tuple[list[OrderDecision], PackedEntries]:
    """Bring the master cache up to date, save it, order the recids; returns the order and
    the chosen entries packed for the run (the cache itself is not kept: see PackedEntries)."""
    if args.all:
        recids = cache.recids()
    else:
        await builder.add_recids(recids, resolve)
    if not args.dry_run:
        await asyncio.to_thread(builder.save)
    order = order_recids(recids, cache, args.order)
    return order, PackedEntries(cache, recids)


def _print_unfinished(report: BulkReport) -> None:
    """Every record this run left unfinished, by name, and how to resume (stderr)."""
    why = report.stopped or ("interrupted" if report.interrupted else None)
    if why is None or not (report.unfinished or report.not_started):
        return
    for recid in report.unfinished:
        print(f"record {recid}: not finished ({why})", file=sys.stderr)
    if report.not_started:
        print(f"not started ({why}): {' '.join(report.not_started)}", file=sys.stderr)
    print(
        f"ferry: bulk stopped: {why}; {len(report.unfinished)} record(s) unfinished, "
        f"{len(report.not_started)} not started; run the same command again to resume",
        file=sys.stderr,
    )


def _print_summary(report: BulkReport) -> None:
    selected = len(report.results) + len(report.not_started)
    moved = sum(r.bytes_uploaded for r in report.results.values())
    parts = [f"{report.count(s)} {s}" for s in ("ok", "skipped", "failed", "dry-run") if report.count(s)]
    if report.not_started:
        parts.append(f"{len(report.not_started)} not started")
    print(
        f"bulk: {len(report.results)} of {selected} record(s) processed: {', '.join(parts) or 'nothing to do'}; "
        f"{human_bytes(moved)} uploaded"
    )
