"""`ferry verify`: compare a folder with its djarchive manifest.

    ferry verify DIR [--manifest FILE] [--json] [--exclude GLOB]... [--include-dotfiles] [--rehash]

Names every missing, extra (untracked) and mismatching (size or sha256) file; exit 1 when
there is any, 0 when the folder is exactly what the manifest says, 2 for bad input (no
manifest, an unreadable one, a symbolic link leaving DIR).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from archive.build import verify_tree
from archive.manifest import manifest_path, read_manifest
from ferry.cli.commands.manifest import add_scan_flags, scan_options, with_progress
from ferry.core.config import Config

EXAMPLE = """example:
  ferry verify ./my-dataset                       # against ./my-dataset/djarchive-manifest.csv
  ferry verify ./copy --manifest ./my-dataset/djarchive-manifest.csv --json
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "verify",
        parents=[common],
        help="check a folder against its djarchive manifest (missing, extra, mismatching files)",
        description="Check DIR against its djarchive manifest: every listed file present with its size and "
        "sha256, and no file the manifest does not list. Exit 1 naming each problem.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", metavar="DIR")
    parser.add_argument(
        "--manifest", metavar="FILE", help="the manifest to check against (default DIR/djarchive-manifest.csv)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    add_scan_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    root = Path(args.dir)
    mfile = manifest_path(root, args.manifest)
    manifest = read_manifest(mfile)
    opts = scan_options(args, root, mfile)
    report = with_progress(
        args, "verify", lambda hooks: verify_tree(root, manifest, opts, rehash=args.rehash, hooks=hooks)
    )
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for line in report.lines():
            print(f"ferry verify: {line}", file=sys.stderr)
        problems = len(report.missing) + len(report.extra) + len(report.mismatched)
        status = "OK" if report.ok else f"{problems} problem(s)"
        print(
            f"{root}: {report.checked} files in the manifest, {len(report.missing)} missing, "
            f"{len(report.extra)} extra, {len(report.mismatched)} mismatching: {status}"
        )
    return 0 if report.ok else 1
