"""`ferry zip`: run the zipping stage alone on downloaded records (build, repair or update).

    ferry zip RECID [RECID...] --dest DEST [--threshold N] [--max-bundle-size BYTES]
              [--deflate-ext .txt,.json] [--delete-originals] [--dry-run] [--force]
              [--target NAME] [--stats-dir DIR]

Limits come from the named target (files per record, bytes per file) when given, else
the defaults of an InvenioRDM target (100 files, 10 GB); flags override them.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

from ferry.cli.numbers import check_writable_dir, int_at_least
from ferry.core.config import Config
from ferry.core.errors import ConfigError, FerryError, InputError
from ferry.core.model import safe_relpath
from stats.events import StatsWriter
from upload.zip.policy import ZipPolicy, parse_ext_list
from upload.zip.zipper import ZipResult, zip_executor, zip_record

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_bytes(text: str) -> int:
    """``"5000000"``, ``"10GB"``, ``"4GiB"`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]i?)?b?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (e.g. 5000000, 10GB, 4GiB)")
    value = int(m.group(1)) * _UNITS[m.group(2) or ""]
    if not 0 < value < 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} must be a size from 1 byte to 2**63-1 bytes")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "zip",
        parents=[common],
        help="zip downloaded records into verified bundles (build, repair, update)",
        description="Zip each record folder DEST/RECID into bundles when the policy says so "
        "(more files than the threshold, or small files), or repair/update existing bundles.",
        epilog="examples:\n  ferry zip 80509 --dest data --dry-run\n  ferry zip 80509 81045 --dest data --threshold 10",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recids", nargs="+", metavar="RECID")
    parser.add_argument("--dest", default="data", help="download folder holding DEST/RECID/ (default ./data)")
    parser.add_argument(
        "--threshold", type=int_at_least(1), metavar="N", help="zip when a record has more files (default 20)"
    )
    parser.add_argument("--max-bundle-size", type=parse_bytes, metavar="BYTES", help="largest bundle (target limit)")
    parser.add_argument("--deflate-ext", metavar="EXTS", help="compress these extensions, e.g. .txt,.json")
    parser.add_argument("--target", metavar="NAME", help="take file count/size limits from this configured target")
    parser.add_argument("--force", action="store_true", help="zip even when the policy would not")
    parser.add_argument(
        "--delete-originals", action="store_true", help="delete the zipped files once their bundle is verified"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be done; change nothing (stats events only when --stats-dir is given)",
    )
    parser.add_argument("--stats-dir", metavar="DIR", help="append stats events (JSONL/CSV) here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    check_writable_dir("--dest", args.dest)
    check_writable_dir("--stats-dir", args.stats_dir)
    target = config.target(args.target) if args.target else None
    try:
        policy = ZipPolicy.from_config(
            config,
            target,
            threshold=args.threshold,
            max_bundle_size=args.max_bundle_size,
            deflate_ext=parse_ext_list(args.deflate_ext) or None,
            force=True if args.force else None,
        )
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    recids = [_recid(r) for r in args.recids]
    with StatsWriter(args.stats_dir) as stats:
        outcomes = asyncio.run(_run_all(args, config, policy, recids, stats))
    codes = []
    for recid, outcome in zip(recids, outcomes, strict=True):
        if isinstance(outcome, ZipResult):
            _print_result(outcome)
            codes.append(0)
        else:
            print(f"ferry zip: record {recid} failed: {outcome}", file=sys.stderr)
            codes.append(2 if isinstance(outcome, InputError) else 1)
    failed = [c for c in codes if c]
    if not failed:
        return 0
    return 1 if 1 in failed else 2


def _recid(text: str) -> str:
    recid = safe_relpath(text, where="RECID argument")
    if "/" in recid:
        raise InputError(f"RECID {text!r} must be a single folder name")
    return recid


async def _run_all(
    args: argparse.Namespace, config: Config, policy: ZipPolicy, recids: list[str], stats: StatsWriter
) -> list[ZipResult | FerryError]:
    dest = Path(args.dest)
    pool = zip_executor(config.limits.zip_workers)
    gate = asyncio.Semaphore(config.limits.zip_workers)

    async def one(recid: str) -> ZipResult | FerryError:
        async with gate:
            try:
                return await zip_record(
                    dest / recid,
                    recid,
                    policy=policy,
                    executor=pool,
                    delete_originals=args.delete_originals,
                    dry_run=args.dry_run,
                    stats=stats,
                )
            except FerryError as exc:  # one bad record never stops the others
                return exc

    try:
        return list(await asyncio.gather(*(one(r) for r in recids)))
    finally:
        await asyncio.to_thread(pool.shutdown)


def _print_result(r: ZipResult) -> None:
    prefix = "(dry run) " if r.dry_run else ""
    if r.zipped:
        count = len(r.upload_keys) - 1 if r.dry_run else r.archive_count
        print(f"{prefix}{r.recid}: zipped, {r.file_count} files in {count} bundle(s): {r.reason}")
    else:
        print(f"{prefix}{r.recid}: not zipped: {r.reason}")
    for line in r.actions:
        print(f"  {line}")
    for b in r.bundles:
        md5 = f"md5:{b.md5}" if b.md5 else "md5 computed when uploaded"
        print(f"  {b.key}  {b.size} bytes  {md5}  {b.entries} files")
    if r.manifest is not None:
        print(f"  {r.manifest.key}  {r.manifest.size} bytes  md5:{r.manifest.md5}")
