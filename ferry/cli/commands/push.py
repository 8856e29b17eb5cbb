"""`ferry push DIR --target NAME`: a local directory into one record of a target."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from ferry.cli.filters import add_filter_flags, filter_from
from ferry.core.config import Config
from ferry.core.errors import InputError
from ferry.progress import BulkProgress, display_options
from pipeline.ledger import Ledger
from pipeline.push import Pusher, PushOptions, PushResult, creators_from, default_ledger, marker_suffix
from pipeline.target_wiring import confirm_production, make_target
from stats.events import StatsWriter

DESCRIPTION = """\
Upload the files of a directory into one record of a target (a Zenodo deposition, an
InvenioRDM/NRP draft): every file (--select all, sub-paths as keys where the target has
them), the files a cartloader catalog.yaml names (--select catalog: the basics first,
then basemaps, then optional files), or the named files (--select files --files ...).

Into --deposition ID (published: a new version is made), else into the record this
directory was pushed into before, else a new draft (which needs --title, --creators,
--description and --upload-type, or --metadata FILE.json; checked before any request).
Metadata flags override only their fields; the document is sent only when it changed.
A file already there with the same name, size and md5 is skipped (--restart sends it
again); a different one is replaced. Every file is verified by the target's md5.
--marker writes DIR/<name>.<type>.done once the core files are verified; --publish
publishes when every file is verified. --dry-run prints the plan and writes nothing.

Exit status: 0 when every selected file is verified on the target; 1 with one line per
failed file; 2 for bad usage or input (nothing is sent then).
"""


EPILOG = """\
examples:
  ferry push out/ --target zen --dry-run
  ferry push out/ --target zen --title "Cart release 3" --creators "Doe, Jane" --upload-type dataset
  ferry push out/ --target zen --select catalog --deposition 123456 --publish --marker
  ferry push out/ --target nrp --select files --files a.h5 b.h5
  ferry push out/ --target zen --exclude '*.tmp' --exclude 'scratch/*' --retries 8
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "push",
        parents=[common],
        help="upload a directory into one record of a target (Zenodo, InvenioRDM)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--target", required=True, metavar="NAME", help="a [targets.NAME] of the config file")
    p.add_argument("--select", choices=("all", "catalog", "files"), default="all")
    p.add_argument("--catalog", metavar="FILE", help="catalog.yaml (default DIR/catalog.yaml)")
    p.add_argument("--files", nargs="+", default=[], metavar="FILE", help="with --select files")
    p.add_argument("--deposition", metavar="ID", help="the record to upload into (published: a new version)")
    p.add_argument("--title")
    p.add_argument("--creators", nargs="+", default=[], metavar='"Family, Given"')
    p.add_argument("--description")
    p.add_argument("--upload-type", metavar="T", help="dataset, software, publication, ...")
    p.add_argument("--metadata", metavar="FILE.json", help="metadata fields (the flags override them)")
    p.add_argument("--restart", action="store_true", help="send every selected file again")
    p.add_argument("--publish", action="store_true", help="publish once every file is verified")
    p.add_argument("--marker", action="store_true", help="write DIR/<name>.<type>.done after the core files")
    p.add_argument("--flatten", action="store_true", help="send sub-path files under their base name")
    p.add_argument("--jobs", type=int, default=4, metavar="N", help="files sent at once (default 4)")
    p.add_argument("--stats-dir", metavar="DIR")
    add_filter_flags(p, "the selected files")
    p.add_argument("--yes", action="store_true", help="allow writing to a target marked production = true")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan; write nothing, except stats events when --stats-dir is given",
    )
    p.set_defaults(func=run)


def options_from(args: argparse.Namespace) -> PushOptions:
    if args.jobs < 1:
        raise InputError("--jobs must be at least 1")
    fields: dict[str, object] = {
        "title": args.title,
        "description": args.description,
        "upload_type": args.upload_type,
    }
    if args.creators:
        fields["creators"] = creators_from(args.creators)
    if args.files and args.select != "files":
        raise InputError("--files goes with --select files")
    keep = filter_from(args)
    return PushOptions(
        directory=Path(args.directory),
        select=args.select,
        catalog=Path(args.catalog) if args.catalog else None,
        files=tuple(args.files),
        deposition=args.deposition,
        fields={k: v for k, v in fields.items() if v},
        metadata_file=Path(args.metadata) if args.metadata else None,
        restart=args.restart,
        publish=args.publish,
        marker=args.marker,
        flatten=args.flatten,
        jobs=args.jobs,
        dry_run=args.dry_run,
        keep=keep.keeps if keep else None,
        keep_text=keep.describe(),
    )


def run(args: argparse.Namespace, config: Config) -> int:
    opts = options_from(args)
    tcfg = config.target(args.target)
    confirm_production(tcfg, yes=args.yes, dry_run=opts.dry_run)
    result = asyncio.run(_run(opts, config, args))
    return report(result, opts)


async def _run(opts: PushOptions, config: Config, args: argparse.Namespace) -> PushResult:
    tcfg = config.target(args.target)
    token = tcfg.token()
    stats = StatsWriter(args.stats_dir, redact=(token.reveal(),) if token else ())
    target = make_target(tcfg, config.limits, token=token)
    ledger = None
    path = default_ledger(opts.directory, tcfg.name)
    fresh = not path.exists() and not path.parent.exists()
    refused = False
    if not opts.dry_run:
        path.parent.mkdir(parents=True, exist_ok=True)
        ledger = Ledger.open(path, target=tcfg.name)
    run_event = stats.open("run", reason=f"push {opts.directory} --select {opts.select}", target=tcfg.name)
    try:
        # The upload flow of the run display (a bar on a terminal, else a line every
        # --progress-interval seconds; nothing with -q).
        progress = BulkProgress(stream=sys.stderr, label="push", **display_options(args))
        pusher = Pusher(
            target,
            opts,
            stats=stats,
            ledger=ledger,
            marker_suffix=marker_suffix(tcfg.type),
            profile=tcfg.profile,
            shown=progress,
            # The plan is a dry run's whole output; on a real run it is a line per file,
            # which -q ("errors only") leaves out.
            on_plan=print if opts.dry_run or not getattr(args, "quiet", False) else _silent,
        )
        async with progress:
            result = await pusher.run()
        run_event.close("dry-run" if opts.dry_run else ("ok" if result.ok else "failed"))
        return result
    except BaseException as exc:
        refused = isinstance(exc, InputError)
        run_event.close("failed", error=exc)
        raise
    finally:
        await target.aclose()
        if ledger is not None:
            ledger.close()
            if fresh and refused:
                _forget(path)
        stats.close()


def _silent(_line: str) -> None:
    return None


def _forget(path: Path) -> None:
    """Remove the state folder a refused push made (bad input writes nothing, DIR included).

    Only when this run made the folder: the refusal (a bad catalog, a missing file, a
    sub-path) comes before any request, so the new ledger holds nothing worth keeping."""
    for extra in ("", "-wal", "-shm", "-journal", ".lock"):
        path.with_name(path.name + extra).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else was put there meanwhile: leave it
        path.parent.rmdir()


def report(result: PushResult, opts: PushOptions) -> int:
    where = f" into {result.record_id}" if result.record_id else ""
    if opts.dry_run:
        print(f"dry run: nothing written{where}")
        return 0
    for key, why in sorted(result.failed.items()):
        print(f"ferry: error: file {key}: {why}", file=sys.stderr)
    state = ", published" if result.published else ""
    marker = f", marker {result.marker}" if result.marker else ""
    verdict = "ok" if result.ok else f"{len(result.failed)} file(s) failed"
    print(f"push{where}: {verdict}: {len(result.sent)} sent, {len(result.skipped)} already there{state}{marker}")
    return 0 if result.ok else 1
