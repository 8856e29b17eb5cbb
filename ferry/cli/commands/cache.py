"""`ferry cache`: build and inspect the master cache (recid -> record, files, flags).

ferry cache build [--portal URL] [--experiment NAME] [--query Q] [--recids FILE]
                  [--records FILE.json ...] [--protocol root|https] [--https-base URL]
                  [--refresh] -o FILE
ferry cache show FILE [RECID]
ferry cache stats FILE
ferry cache order FILE [--order priority|size-asc|size-desc|recid|file] [--recids FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

import aiohttp
import orjson

from download.sources.cache import (
    ORDERS,
    CacheBuilder,
    MasterCache,
    entry_size,
    order_recids,
)
from download.sources.cernopendata import make_resolver
from ferry.core.config import Config
from ferry.core.errors import InputError
from ferry.progress import human_bytes
from pipeline.recids import RecidList, read_recids

if TYPE_CHECKING:
    from download.transport import Transport

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "cache",
        parents=[common],
        help="build and inspect the master cache (recid -> record, files, status flags)",
        description="The master cache is a JSON object keyed by recid: the source record, its resolved "
        "file list (URI, key, size, checksum) and status flags. Bulk runs read it with --cache.",
        epilog="examples:\n  ferry cache build --experiment DELPHI -o cache.json\n  ferry cache stats cache.json\n"
        "  ferry cache order cache.json --order size-asc",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run)
    actions = parser.add_subparsers(dest="cache_command", metavar="ACTION", required=True)

    build = actions.add_parser(
        "build",
        parents=[common],
        help="create or update a master cache",
        description="Create the master cache, or update it in place when -o names an existing cache: new "
        "recids are added, changed records refreshed, status flags of unchanged files kept. Sources can be "
        "combined. A record that cannot be resolved is reported and kept as an error entry; the others go on.",
        epilog="examples:\n"
        "  ferry cache build --experiment DELPHI -o delphi.json\n"
        "  ferry cache build --records fixtures/*.json -o cache.json\n"
        "  ferry cache build --recids recids.txt -o cache.json\n"
        "  ferry cache build --records all.json --recids subset.txt -o subset.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("-o", "--output", required=True, metavar="FILE", help="the cache file (updated if it exists)")
    build.add_argument("--portal", metavar="URL", help="portal base URL (default: [source.cernopendata] portal)")
    build.add_argument(
        "--experiment",
        action="append",
        default=[],
        metavar="NAME",
        help="add every record of this experiment from portal search (repeatable)",
    )
    build.add_argument("--query", metavar="Q", help="add every hit of this portal search query (field:value AND ...)")
    build.add_argument(
        "--recids",
        metavar="FILE",
        help="recid list (one a line, # comments); resolved through the portal API, or, with --records, "
        "selects which records of those files to cache",
    )
    build.add_argument(
        "--records",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE.json",
        help="JSON array(s) of records (the portal's fixture format) or another master cache",
    )
    build.add_argument(
        "--protocol",
        choices=("root", "https"),
        help="read the file indexes of --records over XRootD (default) or HTTPS",
    )
    build.add_argument("--https-base", metavar="URL", help="where /eos/opendata/... is served over HTTPS")
    build.add_argument("--refresh", action="store_true", help="re-resolve recids already in the cache")
    build.add_argument("--jobs", type=int, default=8, metavar="N", help="concurrent portal requests (default 8)")
    build.add_argument("--page-size", type=int, default=200, metavar="N", help="search page size (default 200)")

    show = actions.add_parser("show", parents=[common], help="list the cached records, or print one entry as JSON")
    show.add_argument("file", metavar="FILE")
    show.add_argument("recid", nargs="?", metavar="RECID")

    stats = actions.add_parser("stats", parents=[common], help="totals: records, files, bytes, categories, errors")
    stats.add_argument("file", metavar="FILE")
    stats.add_argument("--json", action="store_true", help="print JSON")

    order = actions.add_parser(
        "order",
        parents=[common],
        help="print the processing order a bulk run would use, with the reason for each record",
    )
    order.add_argument("file", metavar="FILE")
    order.add_argument("--order", choices=ORDERS, default="priority", help="ordering (default: priority)")
    order.add_argument("--recids", metavar="FILE", help="only these recids (and, for --order file, their order)")


def _report_recid_list(parsed: RecidList) -> None:
    for warning in parsed.warnings:
        print(f"ferry: warning: {warning}", file=sys.stderr)
    for error in parsed.errors:
        print(f"ferry: error: {error}", file=sys.stderr)


def run(args: argparse.Namespace, config: Config) -> int:
    actions = {"build": run_build, "show": run_show, "stats": run_stats, "order": run_order}
    return actions[args.cache_command](args, config)


def run_build(args: argparse.Namespace, config: Config) -> int:
    if not (args.experiment or args.query or args.recids or args.records):
        raise InputError("nothing to build from: give --experiment, --query, --recids and/or --records")
    if args.jobs < 1 or args.page_size < 1:
        raise InputError("--jobs and --page-size must be positive")
    cache = MasterCache.load(args.output)
    existed = len(cache) > 0
    portal = (args.portal or config.source.portal).rstrip("/")
    transport = _index_transport(args, config, portal) if args.records else None
    builder = CacheBuilder(cache, jobs=args.jobs, read_index=transport.read_index if transport else None)

    recids: RecidList | None = None
    if args.recids:
        recids = read_recids(args.recids)
        _report_recid_list(recids)
    if args.records:
        _add_records_files(builder, args.records, recids, args.jobs)
    if transport is not None:
        asyncio.run(_expand_indexes(builder, transport))

    queries = [f"experiment:{name}" for name in args.experiment] + ([args.query] if args.query else [])
    needs_portal = bool(queries) or (recids is not None and not args.records)
    if needs_portal:
        asyncio.run(_build_online(builder, portal, queries, recids, args))

    cache.save(args.output)
    _print_build_report(builder, args.output, existed)
    failed = recids is not None and not recids.ok
    return EXIT_FAILED if failed or builder.report.errors else EXIT_OK


def _index_transport(args: argparse.Namespace, config: Config, portal: str) -> Transport:
    """How index files listed by --records records are read: as download/upload/bulk read them."""
    from download.transport import Transport

    protocol = args.protocol or config.source.protocol
    https_base = args.https_base or portal
    return Transport.create(protocol, https_base=https_base, limits=config.limits, verify_tls=config.source.verify_tls)


async def _expand_indexes(builder: CacheBuilder, transport: Transport) -> None:
    try:
        if builder.deferred:
            await builder.expand_deferred()
    finally:
        await transport.close()


def _add_records_files(builder: CacheBuilder, paths: list[str], recids: RecidList | None, jobs: int) -> None:
    """Every record of the files, or (with a recid list) only the listed ones."""
    if recids is None:
        for path in paths:
            builder.add_records_file(path)
        return
    # Read the files into a scratch cache, then keep only the listed recids (indexes are
    # fetched for those only).
    scratch = CacheBuilder(MasterCache(), jobs=jobs, read_index=builder.read_index)
    for path in paths:
        scratch.add_records_file(path)
    for recid in recids.recids:
        entry = scratch.cache.get(recid)
        if recid in scratch.deferred:
            builder.deferred[recid] = scratch.deferred[recid]
        elif entry is None:
            builder.report.errors[recid] = f"not found in {', '.join(paths)}"
            builder.cache.set_error(recid, f"not found in {', '.join(paths)}")
        elif recid in scratch.report.errors:
            builder.report.errors[recid] = scratch.report.errors[recid]
            builder.cache.set_error(recid, scratch.report.errors[recid])
        else:
            builder.add_record(scratch.cache.record(recid))


def _print_build_report(builder: CacheBuilder, output: str, existed: bool) -> None:
    report = builder.report
    for recid, error in sorted(report.errors.items()):
        print(f"ferry: error: record {recid}: {error}", file=sys.stderr)
    for warning in report.warnings:
        print(f"ferry: warning: {warning}", file=sys.stderr)
    s = builder.cache.stats()
    print(
        f"{'updated' if existed else 'wrote'} {output}: {s.records} records, {s.files} files, "
        f"{human_bytes(s.bytes)} ({len(report.added)} added, {len(report.refreshed)} refreshed, "
        f"{len(report.unchanged)} unchanged, {len(report.skipped)} already cached; {len(report.errors)} errors"
        f"{f', {report.queries} search requests' if report.queries else ''})"
    )


async def _build_online(
    builder: CacheBuilder, portal: str, queries: list[str], recids: RecidList | None, args: argparse.Namespace
) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for query in queries:
            await builder.add_search(session, portal, query, page_size=args.page_size)
        if recids is not None and not args.records:
            resolve = make_resolver(portal, session)
            await builder.add_recids(recids.recids, resolve, refresh=args.refresh)


def run_show(args: argparse.Namespace, config: Config) -> int:
    cache = MasterCache.load(args.file, missing_ok=False)
    if args.recid:
        entry = cache.get(args.recid.strip())
        if entry is None:
            raise InputError(f"not in {args.file}", recid=args.recid)
        sys.stdout.write(orjson.dumps(entry, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    print(f"{'recid':>10}  {'category':<12} {'files':>6} {'bytes':>10}  flags")
    for recid in cache.recids():
        entry = cache.entries[recid]
        files = entry.get("files") or []
        flags = [
            name
            for name, on in (
                ("done", entry.get("done")),
                ("checked", entry.get("checked")),
                ("downloaded", files and all(f.get("downloaded") for f in files)),
            )
            if on
        ]
        if entry.get("error"):
            flags.append(f"error: {entry['error']}")
        size = human_bytes(entry_size(entry), missing="?")
        print(f"{recid:>10}  {entry.get('category', '?'):<12} {len(files):>6} {size:>10}  {', '.join(flags)}")
    return EXIT_OK


def run_stats(args: argparse.Namespace, config: Config) -> int:
    s = MasterCache.load(args.file, missing_ok=False).stats()
    if args.json:
        sys.stdout.write(orjson.dumps(s.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    print(f"records:          {s.records}")
    print(f"files:            {s.files} ({s.downloaded_files} downloaded)")
    print(f"bytes:            {s.bytes} ({human_bytes(s.bytes)})")
    print(f"done:             {s.done}")
    print(f"without files:    {s.without_files}")
    print(f"with errors:      {s.with_errors}")
    print("categories:       " + ", ".join(f"{k} {v}" for k, v in s.categories.items()))
    return EXIT_OK


def run_order(args: argparse.Namespace, config: Config) -> int:
    cache = MasterCache.load(args.file, missing_ok=False)
    code = EXIT_OK
    if args.recids:
        parsed = read_recids(args.recids)
        _report_recid_list(parsed)
        code = EXIT_OK if parsed.ok else EXIT_FAILED
        recids = parsed.recids
    else:
        recids = cache.recids()
    for d in order_recids(recids, cache, args.order):
        size = human_bytes(d.size, missing="?")
        print(f"{d.position + 1:>6}  {d.recid:>10}  {d.category:<12} {size:>10}  {d.reason}")
    return code
