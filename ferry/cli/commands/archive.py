"""`ferry archive`: versioned datasets in an archive (djarchive's commands, done right).

    ferry archive upload NAME REV DIR --to ARCHIVE [--jobs N] [--dry-run]
    ferry archive datasets --from ARCHIVE [--all]
    ferry archive revisions [NAME] --from ARCHIVE [--all]
    ferry archive download NAME REV DIR --from ARCHIVE [--jobs N] [--verify-existing] [--sync]

ARCHIVE: a configured target name, s3://bucket[/prefix], file:///path or a folder path.
Layout: ARCHIVE/NAME/REV/<path> and ARCHIVE/NAME/REV/djarchive-manifest.csv (uploaded
last: a revision without it is incomplete). A configured S3 target needs
layout = "archive" (s3:// URLs get it); one in another layout is refused.

A revision is immutable once complete, so re-running a download that ended verified
asks the archive nothing while DIR's files still match ferry's local state (size,
mtime, inode); any difference, or --verify-existing, runs the full download.

A download does not wait for the disk: a fetched file that no sync has covered yet (one
runs every 30 s) may still be only in the page cache, so it is trusted only until the
machine reboots (the first run after it hashes it again). --sync waits until every file
is on disk.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from archive.manifest import shown
from archive.names import archive_key, revision_id
from archive.rerun import DownloadResult, complete_rerun
from ferry.core.config import Config

if TYPE_CHECKING:
    from archive.upload import UploadResult

# The targets (aiobotocore, aiohttp: ~0.25 s), asyncio, the progress display and the stats
# writer are imported where a command needs them: the re-run of a complete download needs none.

EXAMPLE = """examples:
  ferry archive upload my-set 001 ./my-set --to /mnt/archive      # manifest written first if missing
  ferry archive revisions my-set --from /mnt/archive --all          # my-set,001 / my-set,002,incomplete
  ferry archive download my-set 001 ./copy --from s3://bucket/datasets
"""


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "archive",
        parents=[common],
        help="versioned datasets in an archive: upload, datasets, revisions, download",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    up = actions.add_parser(
        "upload", parents=[common], help="upload DIR as revision REV of NAME", epilog=EXAMPLE, formatter_class=fmt
    )
    up.add_argument("name", metavar="NAME")
    up.add_argument("rev", metavar="REV")
    up.add_argument("dir", metavar="DIR")
    up.add_argument("--to", required=True, metavar="ARCHIVE", dest="archive")
    up.add_argument("--jobs", type=_jobs, default=4, metavar="N", help="files sent at once (default 4)")
    up.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be sent; write nothing, except stats events when --stats-dir is given",
    )
    up.add_argument("--stats-dir", metavar="DIR", help="append stats events (JSONL/CSV) here")
    up.set_defaults(func=run_upload)

    ds = actions.add_parser("datasets", parents=[common], help="list the datasets of an archive")
    ds.add_argument("--from", required=True, metavar="ARCHIVE", dest="archive")
    ds.add_argument("--all", action="store_true", help="also datasets with only incomplete revisions")
    ds.set_defaults(func=run_datasets)

    rv = actions.add_parser("revisions", parents=[common], help="list revisions (NAME,REV), complete ones unless --all")
    rv.add_argument("name", nargs="?", metavar="NAME")
    rv.add_argument("--from", required=True, metavar="ARCHIVE", dest="archive")
    rv.add_argument("--all", action="store_true", help="also incomplete revisions (marked ',incomplete')")
    rv.set_defaults(func=run_revisions)

    dl = actions.add_parser(
        "download", parents=[common], help="download revision REV of NAME into DIR", epilog=EXAMPLE, formatter_class=fmt
    )
    dl.add_argument("name", metavar="NAME")
    dl.add_argument("rev", metavar="REV")
    dl.add_argument("dir", metavar="DIR")
    dl.add_argument("--from", required=True, metavar="ARCHIVE", dest="archive")
    dl.add_argument("--jobs", type=_jobs, default=4, metavar="N", help="files fetched at once (default 4)")
    dl.add_argument(
        "--verify-existing",
        action="store_true",
        help="hash local files again instead of trusting the state (the archive is asked even when complete)",
    )
    dl.add_argument(
        "--sync",
        action="store_true",
        help="wait until every fetched file is on disk before returning (default: files no sync has covered"
        " yet, one runs every 30 s, are trusted only until the machine reboots; the first run after it hashes"
        " them again)",
    )
    dl.add_argument("--stats-dir", metavar="DIR", help="append stats events (JSONL/CSV) here")
    dl.set_defaults(func=run_download)


def run_upload(args: argparse.Namespace, config: Config) -> int:
    import asyncio

    from archive.store import open_archive
    from archive.upload import upload_revision
    from ferry.progress import Progress, display_options
    from stats.events import StatsWriter

    async def main() -> UploadResult:
        target = open_archive(args.archive, config)
        progress = Progress(stream=sys.stderr, label="archive upload", **display_options(args))
        try:
            with StatsWriter(args.stats_dir) as stats:  # a dry run writes only the stats asked for
                async with progress:
                    return await upload_revision(
                        target,
                        args.name,
                        args.rev,
                        Path(args.dir),
                        jobs=args.jobs,
                        dry_run=args.dry_run,
                        progress=progress,
                        stats=stats if args.stats_dir else None,  # rows nobody reads cost the loop
                    )
        finally:
            await target.aclose()

    r = asyncio.run(main())
    prefix = "(dry run) " if r.dry_run else ""
    if r.manifest_written:
        verb = "would write" if r.dry_run else "wrote"
        print(f"{prefix}{verb} {Path(args.dir) / 'djarchive-manifest.csv'} ({r.files} files)")
    if r.already_complete:
        print(f"{r.revision}: already complete in {args.archive} with the same manifest; nothing sent")
        return 0
    for key in r.removed:
        print(f"{prefix}removed {shown(key)} (left by an earlier try, not in the manifest)")
    for key, why in sorted(r.failed.items()):
        print(f"ferry archive: {r.revision}: file {shown(key)}: {why}", file=sys.stderr)
    verb = "would send" if r.dry_run else "sent"
    state = "" if r.dry_run else ("; revision incomplete, run again" if r.failed else "; manifest sent: complete")
    print(f"{prefix}{r.revision}: {r.files} files, {verb} {len(r.sent)}, {r.skipped} already there{state}")
    return 1 if r.failed else 0


def run_datasets(args: argparse.Namespace, config: Config) -> int:
    import asyncio

    for name in asyncio.run(_datasets(args, config)):
        print(name)
    return 0


async def _datasets(args: argparse.Namespace, config: Config) -> list[str]:
    from archive.store import open_archive, revisions

    target = open_archive(args.archive, config)
    try:
        revs = await revisions(target, args.archive)
    finally:
        await target.aclose()
    return sorted({r.name for r in revs if r.complete or args.all})


def run_revisions(args: argparse.Namespace, config: Config) -> int:
    import asyncio

    from archive.store import open_archive, revisions

    async def main() -> list[str]:
        target = open_archive(args.archive, config)
        try:
            revs = await revisions(target, args.archive, args.name)
        finally:
            await target.aclose()
        return [r.line for r in revs if r.complete or args.all]

    for line in asyncio.run(main()):
        print(line)
    return 0


def run_download(args: argparse.Namespace, config: Config) -> int:
    key = archive_key(args.archive, config)
    root = Path(args.dir)
    # A complete, verified download of an immutable revision whose files still match the
    # state needs nothing from the archive (archive.rerun); --verify-existing asks to hash
    # again, and stats events describe transfers, so both take the full path.
    r = None
    if not (args.verify_existing or args.stats_dir):
        r = complete_rerun(root, key, revision_id(args.name, args.rev))
    if r is None:
        r = _download(args, config, key)
    return _report_download(args, r)


def _download(args: argparse.Namespace, config: Config, key: str) -> DownloadResult:
    import asyncio

    from archive.download import download_revision
    from archive.store import open_archive
    from ferry.progress import Progress, display_options
    from stats.events import StatsWriter

    async def main() -> DownloadResult:
        target = open_archive(args.archive, config)
        progress = Progress(stream=sys.stderr, label="archive download", **display_options(args))
        try:
            with StatsWriter(args.stats_dir) as stats:
                async with progress:
                    return await download_revision(
                        target,
                        args.name,
                        args.rev,
                        Path(args.dir),
                        jobs=args.jobs,
                        verify_existing=args.verify_existing,
                        progress=progress,
                        stats=stats if args.stats_dir else None,  # rows nobody reads cost the loop
                        archive_key=key,
                        sync=args.sync,
                    )
        finally:
            await target.aclose()

    return asyncio.run(main())


def _report_download(args: argparse.Namespace, r: DownloadResult) -> int:
    err = sys.stderr
    for key in r.missing_in_archive:
        print(
            f"ferry archive: {r.revision}: file {shown(key)}: listed in the manifest but not in the archive", file=err
        )
    for key, why in sorted(r.failed.items()):
        print(f"ferry archive: {r.revision}: file {shown(key)}: {why}", file=err)
    for key in r.unlisted_in_archive:
        print(f"ferry archive: {r.revision}: note: {shown(key)} is in the archive but not in the manifest", file=err)
    for key in r.local_extra:
        print(f"ferry archive: note: {shown(key)} in {args.dir} is not in the manifest", file=err)
    status = "verified" if r.ok else "INCOMPLETE"
    print(f"{r.revision} -> {args.dir}: {r.files} files, fetched {len(r.fetched)}, kept {r.kept}: {status}")
    return 0 if r.ok else 1
