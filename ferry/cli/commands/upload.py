"""`ferry upload`: one record, end to end, into a configured target."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from download.sources import split_spec
from download.sources.cernopendata import RecordsFileSource
from ferry.cli.filters import add_filter_flags, filter_from
from ferry.cli.numbers import check_writable_dir, check_writable_file, int_at_least
from ferry.core.config import Config, Limits
from ferry.core.errors import FerryError, InputError
from ferry.progress import BulkProgress, display_options
from pipeline.context import RecordResult
from pipeline.job import RecordJob
from pipeline.runtime import RunOptions, open_run, with_jobs

DESCRIPTION = """\
Upload one record: resolve it (portal API or --records), download and verify its files
(reusing files already verified in DEST/<recid>/), zip them when the record has many
files, transform and validate its metadata, upload every file into a draft on the target,
check every file's md5 and size on the target, and publish if asked.

Nothing is written to the target before the metadata validates. Re-running the same
command after an interruption finishes the job: the existing draft is found again (the
ledger, then a search on the target), files already there with the same md5 are kept,
others are replaced. A record already published is left alone unless --new-version.

Exit status: 0 when the record was verified on the target (or was already there);
1 when it failed (the stage and each failed file named on stderr); 2 for bad usage,
configuration or input.
"""

EPILOG = """\
examples:
  ferry upload 80509 --target nrp-test --dry-run
  ferry upload 80509 --target nrp-test --dest data --stats-dir stats --publish
  ferry upload zenodo:123456 --target nrp-test
  ferry upload ./results --target nrp-test       (a folder: dir:PATH or a path)
  ferry upload 80509 --target nrp-test --include '*.root' --retries 8   (a one-off: some files, more retries)
  ferry upload zenodo:123456 --target cpg --stream   (source -> S3 directly: nothing on local disk)

the target comes from the config file ([targets.NAME]: type, url, token_file or token_env,
profile, model, community, publish, requests_per_minute, requests_per_hour, ...).
"""


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `ferry upload` and `ferry bulk`."""
    parser.add_argument("--target", required=True, metavar="NAME", help="a [targets.NAME] of the config file")
    parser.add_argument("--dest", metavar="DIR", default="data", help="staging folder for downloads (default: ./data)")
    parser.add_argument("--stats-dir", metavar="DIR", help="append stats events (JSONL, then CSV) to DIR")
    parser.add_argument("--portal", metavar="URL", help="portal base URL for the record API (default: from config)")
    parser.add_argument(
        "--records", metavar="FILE.json", action="append", help="read records from this JSON file (repeatable)"
    )
    parser.add_argument("--protocol", choices=("root", "https"), help="download over XRootD (default) or HTTPS")
    parser.add_argument("--https-base", metavar="URL", help="where /eos/opendata/... is served over HTTPS")
    parser.add_argument(
        "--publish", action=argparse.BooleanOptionalAction, default=None, help="publish (default: the target's setting)"
    )
    parser.add_argument("--new-version", action="store_true", help="make a new version of an already published record")
    parser.add_argument("--delete-staged", action="store_true", help="delete a record's local files once verified")
    parser.add_argument("--ledger", metavar="PATH", help="progress ledger (default DEST/.ferry/ledger-TARGET.sqlite)")
    parser.add_argument(
        "--jobs", type=int_at_least(1), metavar="N", help="files downloaded at once (default: limits.downloads)"
    )
    parser.add_argument(
        "--uploads", type=int_at_least(1), metavar="N", help="files uploaded at once (default: limits.uploads)"
    )
    parser.add_argument("--yes", action="store_true", help="allow writing to a target marked production = true")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="send each file from the source straight into the target (no staging in --dest, no zip; the "
        "source must give every file's size and checksum, the target take a streaming put, e.g. s3)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (files, transfers, metadata); write nothing anywhere, except stats events "
        "when --stats-dir is given",
    )
    add_filter_flags(parser)


def check_run_arguments(args: argparse.Namespace) -> None:
    """Usage errors found before anything starts (exit 2): flags that contradict each other,
    folders and files that could not be written."""
    if args.portal and args.records:
        raise InputError(
            "--portal and --records exclude each other: with --records the records come from the files "
            "and the portal is never asked (--https-base says where files are served over HTTPS)"
        )
    check_writable_dir("--dest", args.dest)
    check_writable_dir("--stats-dir", args.stats_dir)
    check_writable_file("--ledger", args.ledger)
    filter_from(args)  # a bad pattern is refused here, before the run opens anything


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "upload",
        parents=[common],
        help="download, verify, transform and upload one record",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "recid",
        metavar="SPEC",
        help="the source record: a CERN recid, zenodo:ID, zenodo:concept:ID, dir:PATH or a path",
    )
    add_run_arguments(parser)
    parser.set_defaults(func=run)


def options_from(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        target=args.target,
        dest=Path(args.dest),
        stats_dir=args.stats_dir,
        portal=args.portal,
        records=tuple(args.records or ()),
        protocol=args.protocol,
        https_base=args.https_base,
        publish=args.publish,
        new_version=args.new_version,
        dry_run=args.dry_run,
        delete_staged=args.delete_staged,
        ledger=Path(args.ledger) if args.ledger else None,
        yes=args.yes,
        source=split_spec(args.recid)[0] if getattr(args, "recid", None) else "cernopendata",
        stream=bool(getattr(args, "stream", False)),
    )


def run(args: argparse.Namespace, config: Config) -> int:
    check_run_arguments(args)
    if args.records:
        # Read now, so that a bad file is refused before the run opens its ledger (the run
        # itself reads the files lazily, on first use).
        RecordsFileSource(args.records)
    limits = with_jobs(config.limits, downloads=args.jobs, uploads=args.uploads)
    result = asyncio.run(_run(args, config, limits))
    return print_results([result])


async def _run(args: argparse.Namespace, config: Config, limits: Limits) -> RecordResult:
    # Records counted here (done once the upload is verified); downloads and uploads each
    # get their own files, bytes and rate.
    progress = BulkProgress(stream=sys.stderr, label="upload", **display_options(args))
    async with open_run(config, options_from(args), progress=progress, on_plan=print, limits=limits) as ferry_run:
        event = ferry_run.ctx.stats.open("resolve", str(args.recid))
        try:
            record = filter_from(args).record(await ferry_run.source.resolve(split_spec(args.recid)[1]))
        except InputError as exc:
            if exc.recid is None:
                raise  # the input itself is bad (a records file's shape), not this record: exit 2
            event.close("failed", error=exc)
            return RecordResult(recid=str(args.recid), status="failed", stage="resolve", error=exc)
        except FerryError as exc:
            if exc.recid is None:
                exc.recid = str(args.recid)
            event.close("failed", error=exc)
            return RecordResult(recid=str(args.recid), status="failed", stage="resolve", error=exc)
        event.close("ok", file_count=len(record.files), bytes=record.total_size)
        progress.add_records(1)
        async with progress:
            result = await RecordJob(ferry_run.ctx, record).run()
            progress.record_done(ok=result.status != "failed")
        return result


def print_results(results: list[RecordResult]) -> int:
    """One line per record on stdout, one per failure on stderr; the exit code."""
    for r in results:
        if r.status == "ok":
            where = f" as {r.remote_id}" if r.remote_id else ""
            published = f", {r.publish.state}" if r.publish else ""
            zipped = ", zipped" if r.zip_used else ""
            print(f"record {r.recid}: ok, {r.files_text()}{where}{zipped}{published}")
        elif r.status == "skipped":
            print(f"record {r.recid}: skipped ({r.reason})")
    for r in results:
        for line in r.lines():
            print(f"ferry: error: {line}", file=sys.stderr)
    return 1 if any(r.status == "failed" for r in results) else 0
