"""`ferry download`: fetch records (CERN Open Data, Zenodo, a folder), verified, resumable, into DEST/<recid>/."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path

from download.base import Source
from download.engine import Downloader, RecordResult, download_records, retry_policy
from download.sources import SourceDeps, open_source, split_spec
from download.sources.cernopendata import PortalSource, RecordsFileSource
from download.transport import PROTOCOLS, Transport
from ferry.cli.filters import add_filter_flags, filter_from, filtered
from ferry.cli.numbers import check_writable_dir, int_at_least
from ferry.core.config import Config, Limits
from ferry.core.errors import InputError
from ferry.core.model import Record
from ferry.progress import Progress, display_options, human_bytes
from stats.events import StatsWriter

DESCRIPTION = """\
Download CERN Open Data records and verify every file against the source's size and
checksum (adler32, or sha1 where the record gives it) while it streams in; md5 is
computed in the same pass for uploads (--no-md5 leaves it to the upload, which computes
it while sending: faster downloads, the same checks against the source).

Files land in DEST/<recid>/<basename> (the sub-path after the common prefix when basenames
repeat inside a record). Bytes go to <name>.part first and are renamed only once verified,
so a file under its final name is always a verified one. An interrupted run resumes: a
.part is continued after its prefix is re-hashed, and if the finished file does not verify
the whole file is fetched again. DEST/<recid>/.ferry/ holds the manifest (size, mtime,
adler32, md5 of each verified file) and the source record JSON; files whose size and
mtime match the manifest are not read again (--verify-existing re-hashes them), so a
re-run of a complete download moves and writes nothing.

Records come from the portal's record API (--portal, default from the config's
[source.cernopendata] portal) or from local JSON files (--records: the portal's fixture
format, a JSON array of records, or a master cache); in such files, index files
(type index.json/index.txt) are fetched and expanded. Without RECIDs, --records
downloads every record in the files.

Other sources are named by a spec instead of a recid: zenodo:ID (a published Zenodo
record; [source.zenodo] url), zenodo:concept:ID (the latest version of a concept),
dir:PATH or a path starting with /, ./, ../ or ~ (a folder's files as one record, named
after the folder). Their files land in DEST/<record id>/<key> like a CERN record's.

Exit status: 0 when every file asked for was verified; 1 when some record or file failed
(each named on its own line on stderr; the other records still complete); 2 for bad usage
or input.
"""

EPILOG = """\
examples:
  ferry download 80509 81045 --dest data
  ferry download 80509 --protocol https --jobs 4 --stats-dir stats
  ferry download --records records.json --dry-run
  ferry download zenodo:123456 zenodo:concept:123455 --dest data
  ferry download ./results --dest backup
  ferry download 80509 --include '*.root' --exclude 'test*' --retries 8

dry run: resolves the records (reading index files if needed) and prints what would be
fetched, resumed, checked or skipped; it writes nothing at all, except stats events when
--stats-dir is given explicitly.

on demand files (on tape at CERN) are tried like the others; if the server cannot deliver
them the error says they are on tape and must be staged through the portal first.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "download",
        parents=[common],
        help="download records from CERN Open Data, verified and resumable",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "recids",
        nargs="*",
        metavar="SPEC",
        help="CERN recids, zenodo:ID, zenodo:concept:ID, dir:PATH or a path (default with --records: all in the files)",
    )
    parser.add_argument("--portal", metavar="URL", help="portal base URL for the record API (default: from config)")
    parser.add_argument(
        "--records",
        metavar="FILE.json",
        action="append",
        help="read records from this JSON file instead of the API (repeatable)",
    )
    parser.add_argument("--dest", metavar="DIR", default="data", help="download folder (default: ./data)")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="root: the record's root:// URIs over XRootD (default); https: the same paths over HTTPS",
    )
    parser.add_argument(
        "--https-base",
        metavar="URL",
        help="where /eos/opendata/... is served over HTTPS (default: the portal URL)",
    )
    parser.add_argument(
        "--jobs", type=int_at_least(1), metavar="N", help="files downloaded at once (default: limits.downloads)"
    )
    parser.add_argument("--stats-dir", metavar="DIR", help="append stats events (JSONL, then CSV) to DIR")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan; download and write nothing, except stats events when --stats-dir is given",
    )
    parser.add_argument(
        "--verify-existing",
        action="store_true",
        help="re-hash files already downloaded even when the manifest vouches for them",
    )
    parser.add_argument(
        "--no-md5",
        action="store_true",
        help="verify the source checksum only; leave md5 to the upload (faster; default: md5 in the same pass)",
    )
    add_filter_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    if args.portal and args.records:
        raise InputError(
            "--portal and --records exclude each other: with --records the records come from the files "
            "and the portal is never asked (--https-base says where files are served over HTTPS)"
        )
    check_writable_dir("--dest", args.dest)
    check_writable_dir("--stats-dir", args.stats_dir)
    if args.jobs is not None and args.jobs < 1:
        raise InputError("--jobs must be at least 1")
    keep = filter_from(args)
    limits = config.limits
    if args.jobs is not None:
        limits = dataclasses.replace(limits, downloads=args.jobs)
    portal = (args.portal or config.source.portal).rstrip("/")
    protocol = args.protocol or config.source.protocol
    transport = Transport.create(
        protocol, https_base=args.https_base or portal, limits=limits, verify_tls=config.source.verify_tls
    )
    source: Source
    if args.records:
        source = RecordsFileSource(args.records, read_index=transport.read_index)
        recids = args.recids or source.recids
    else:
        if not args.recids:
            raise InputError("give at least one RECID, or --records FILE.json")
        source = PortalSource(
            portal, read_index=transport.read_index, policy=retry_policy(limits), verify_tls=config.source.verify_tls
        )
        recids = args.recids
    recids = list(dict.fromkeys(str(r).strip() for r in recids))
    if args.recids:  # specs named on the command line (recids read from --records files are CERN's)
        source, recids = by_spec(source, recids, SourceDeps(config=config, limits=limits, transport=transport))
    source = filtered(source, keep)
    stats = StatsWriter(args.stats_dir)
    try:
        results = asyncio.run(_run(args, limits, transport, source, recids, stats))
    finally:
        stats.close()
    return report(results, dry_run=args.dry_run)


async def _run(
    args: argparse.Namespace,
    limits: Limits,
    transport: Transport,
    source: Source,
    recids: list[str],
    stats: StatsWriter,
) -> list[RecordResult]:
    progress = Progress(stream=sys.stderr, **display_options(args))
    run_event = stats.open("run", None, reason=f"download {len(recids)} record(s)")
    downloader = Downloader(transport, limits=limits, stats=stats, progress=progress, md5=not args.no_md5)
    try:
        async with progress:
            results = await download_records(
                downloader,
                source,
                recids,
                Path(args.dest),
                dry_run=args.dry_run,
                verify_existing=args.verify_existing,
            )
    finally:
        await source.close()
        await downloader.close()
    failed = sum(not r.ok for r in results)
    run_event.close("failed" if failed else ("dry-run" if args.dry_run else "ok"), file_count=len(recids))
    return results


class SpecSource:
    """Resolves each spec with the source its registry name opens (``download.sources``)."""

    def __init__(self, sources: Mapping[str, Source]) -> None:
        self.sources = dict(sources)

    async def resolve(self, recid: str) -> Record:
        name, ident = split_spec(recid)
        return await self.sources[name].resolve(ident)

    async def close(self) -> None:
        for source in self.sources.values():
            await source.close()


def by_spec(cern: Source, specs: list[str], deps: SourceDeps) -> tuple[Source, list[str]]:
    """The source for ``specs`` (bad ones refused, naming them, before anything starts) and
    the specs as the engine names them until resolved: a folder by its absolute path, since
    a relative one may climb out of DEST."""
    names = {spec: split_spec(spec) for spec in specs}
    if all(name == "cernopendata" for name, _ in names.values()):
        return cern, specs  # CERN recids only: exactly as before
    sources: dict[str, Source] = {"cernopendata": cern}
    for name, _ in names.values():
        if name not in sources:
            sources[name] = open_source(name, deps)
    shown = [f"dir:{Path(i).expanduser().resolve()}" if n == "dir" else s for s, (n, i) in names.items()]
    return SpecSource(sources), shown


def report(results: list[RecordResult], *, dry_run: bool) -> int:
    """Print the plan or the outcome per record; failures one per line on stderr."""
    out = sys.stdout
    for r in results:
        if r.error is None and not r.files:
            # Author lists, documentation...: the record is its metadata (upload/bulk carry it).
            print(f"record {r.recid}: no files to download (the source lists none: a metadata-only record)", file=out)
        elif r.error is None and dry_run:
            size = sum(f.size or 0 for f in r.files)
            print(f"record {r.recid}: {len(r.files)} files, {human_bytes(size)} -> {r.record_dir}", file=out)
            for f in r.files:
                print(f"  {f.action:<24} {f.size if f.size is not None else '?':>14}  {f.key}", file=out)
        elif r.error is None:
            fetched = sum(f.status == "ok" for f in r.files)
            kept = sum(f.status == "skipped" for f in r.files)
            failed = len(r.failures)
            state = "verified" if not failed else f"{failed} FAILED,"
            print(
                f"record {r.recid}: {len(r.files)} files {state} ({fetched} downloaded, {kept} already verified), "
                f"{human_bytes(r.bytes_transferred)} moved -> {r.record_dir}",
                file=out,
            )
    lines = [line for r in results for line in r.error_lines()]
    for line in lines:
        print(f"ferry: error: {line}", file=sys.stderr)
    bad = [r for r in results if not r.ok]
    total = sum(r.bytes_transferred for r in results)
    verb = "planned" if dry_run else "downloaded"
    print(
        f"{verb} {len(results) - len(bad)} of {len(results)} records"
        + ("" if dry_run else f", {human_bytes(total)} moved")
        + (f"; {len(bad)} record(s) failed" if bad else ""),
        file=out,
    )
    return 1 if bad else 0
