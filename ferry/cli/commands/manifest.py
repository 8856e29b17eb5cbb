"""`ferry manifest`: write DIR/djarchive-manifest.csv (size, sha256, path of every file).

    ferry manifest DIR [--output FILE] [--exclude GLOB]... [--rehash] [--include-dotfiles]

The file is djarchive's format, so its users switch without converting. Checksums of files
unchanged since the last run (same size, mtime and inode) come from DIR/.ferry/ and are
not read again; ``--rehash`` reads everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from archive.build import build_manifest
from archive.hashing import ProgressHooks
from archive.manifest import manifest_path, write_manifest
from ferry.core.config import Config
from ferry.core.tree import ScanOptions
from ferry.progress import Progress, display_options, human_bytes

T = TypeVar("T")

EXAMPLE = """example:
  ferry manifest ./my-dataset                     # writes ./my-dataset/djarchive-manifest.csv
  ferry manifest ./my-dataset --exclude '*.tmp' --exclude 'scratch/*' -o /tmp/m.csv
"""


def add_scan_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared with `ferry verify`: what the tree is."""
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out matching files or folders (a GLOB without '/' matches names, with '/' whole paths); repeatable",
    )
    parser.add_argument("--include-dotfiles", action="store_true", help="list files and folders starting with '.'")
    parser.add_argument("--rehash", action="store_true", help="hash every file again, ignoring the local state")


def scan_options(args: argparse.Namespace, root: Path, manifest_file: Path) -> ScanOptions:
    skip: set[str] = set()
    with contextlib.suppress(ValueError):  # a manifest written or read inside the tree is not part of it
        skip.add(manifest_file.resolve().relative_to(root.resolve()).as_posix())
    return ScanOptions(excludes=tuple(args.exclude), include_dotfiles=args.include_dotfiles, skip=frozenset(skip))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "manifest",
        parents=[common],
        help="write a djarchive manifest (size, sha256, path) of a folder",
        description='Write DIR/djarchive-manifest.csv: one CSV row per file, "size","sha256","path", sorted '
        "by path, no header. Dotfiles, the manifest itself and ferry's own DIR/.ferry/ are left out. Files "
        "unchanged since the last run are not read again.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", metavar="DIR")
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write the manifest here (default DIR/djarchive-manifest.csv)"
    )
    add_scan_flags(parser)
    parser.set_defaults(func=run)


def with_progress(args: argparse.Namespace, label: str, work: Callable[[ProgressHooks], T]) -> T:
    """Run blocking ``work`` in a thread while a progress line is drawn on stderr."""

    async def main() -> T:
        progress = Progress(stream=sys.stderr, label=label, **display_options(args))
        async with progress:
            return await asyncio.to_thread(work, ProgressHooks(progress))

    return asyncio.run(main())


def run(args: argparse.Namespace, config: Config) -> int:
    root = Path(args.dir)
    out = manifest_path(root, args.output)
    opts = scan_options(args, root, out)
    manifest, digest = with_progress(
        args, "manifest", lambda hooks: build_manifest(root, opts, rehash=args.rehash, hooks=hooks)
    )
    write_manifest(manifest, out)
    print(
        f"{out}: {len(manifest)} files, {human_bytes(manifest.total_size)}; hashed {digest.hashed_files} "
        f"({human_bytes(digest.hashed_bytes)}), {digest.reused_files} unchanged since the last run"
    )
    return 0
