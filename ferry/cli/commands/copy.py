"""`ferry copy SOURCE TARGET`: any registered source into any target, through the one pipeline.

SOURCE is a spec as everywhere (``download.sources.split_spec``); TARGET a configured
target, or a folder / ``file://`` / ``s3://`` URL made into a target on the fly. The run
itself is `ferry upload`'s: the same ``RecordJob`` with the same ledger, stats, progress,
dry run and exit codes; only the naming of the two ends is this module's.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
from pathlib import Path

from download.sources import split_spec
from ferry.cli.filters import add_filter_flags, filter_from
from ferry.core.config import Config, TargetConfig
from ferry.core.errors import ConfigError, InputError
from pipeline.runtime import with_jobs
from upload.targets import TARGETS

from .upload import _run as run_record
from .upload import print_results

DESCRIPTION = """\
Copy one record from any source into any target, verified at both ends: the files are
downloaded into DEST/<record id>/ and checked against the source's sizes and checksums,
zipped when the target's policy says so, described for the target when it keeps metadata
documents (its profile; a folder or S3 keeps none), uploaded and checked again with the
best hash both sides know, then published when the target can publish and it is asked.

SOURCE: a CERN Open Data recid (the portal API, or --records FILE.json), zenodo:ID,
zenodo:concept:ID (the latest version), dir:PATH or a path starting with /, ./, ../ or ~
(a folder's files as one record named after the folder).

TARGET: a [targets.NAME] of the config file; or, when no target has that name, a folder
(a path as above, or file:///path: a local target, each record in TARGET/<record id>/)
or s3://bucket/prefix (an S3 target with the standard AWS settings), made on the fly.

A re-run finishes an interrupted copy and moves nothing twice (the ledger in
DEST/.ferry/, the target asked before writing). Exit status: 0 when the record was
verified on the target (or already was); 1 when it failed (the stage and each failed file
named on stderr); 2 for bad usage, configuration or input (a bad SOURCE or TARGET named);
130 when interrupted.
"""

EPILOG = """\
examples:
  ferry copy 80509 ./mirror                          a CERN record into a folder
  ferry copy ./results nrp-test --publish            a folder into a configured repository
  ferry copy zenodo:123456 file:///srv/mirror --dry-run
  ferry copy zenodo:concept:123455 s3://bucket/prefix --stats-dir stats
  ferry copy 80509 ./mirror --include '*.root' --exclude 'test*'   only some of its files

dry run: resolves the record and prints what would be downloaded and uploaded; writes
nothing (no download, no ledger, no target call that writes; stats only with --stats-dir).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "copy",
        parents=[common],
        help="copy one record from any source into any target, verified",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="SOURCE", help="recid, zenodo:ID, zenodo:concept:ID, dir:PATH or a path")
    parser.add_argument("target", metavar="TARGET", help="a configured target, a folder, file:///path or s3://...")
    parser.add_argument("--dest", metavar="DIR", default="data", help="staging folder for downloads (default: ./data)")
    parser.add_argument("--stats-dir", metavar="DIR", help="append stats events (JSONL, then CSV) to DIR")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; write nothing anywhere")
    parser.add_argument(
        "--publish", action=argparse.BooleanOptionalAction, default=None, help="publish (default: the target's setting)"
    )
    parser.add_argument("--new-version", action="store_true", help="make a new version of an already published record")
    parser.add_argument("--jobs", type=int, metavar="N", help="files downloaded at once (default: limits.downloads)")
    parser.add_argument("--uploads", type=int, metavar="N", help="files uploaded at once (default: limits.uploads)")
    parser.add_argument(
        "--portal", metavar="URL", help="CERN portal base URL for the record API (default: from config)"
    )
    parser.add_argument(
        "--records", metavar="FILE.json", action="append", help="read CERN records from this JSON file (repeatable)"
    )
    parser.add_argument("--protocol", choices=("root", "https"), help="CERN files over XRootD (default) or HTTPS")
    parser.add_argument("--https-base", metavar="URL", help="where /eos/opendata/... is served over HTTPS")
    parser.add_argument("--yes", action="store_true", help="allow writing to a target marked production = true")
    add_filter_flags(parser)
    parser.set_defaults(func=run)


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", "file://")) or text in (".", "..")


def target_for(config: Config, text: str) -> tuple[Config, str]:
    """The config with TARGET in it, and its name: a configured one by name, else a folder
    or an S3 location made on the fly (named after its location, so its ledger is its own)."""
    name = text.strip()
    if name in config.targets:
        return config, name
    if _looks_like_path(name):
        kind = "local"
        url = name if name.startswith("file://") else str(Path(name).expanduser().resolve())
    elif name.startswith("s3://") and "s3" in TARGETS:
        kind, url = "s3", name
    else:
        known = ", ".join(sorted(config.targets)) or "none configured"
        raise ConfigError(
            f"target {text!r} is neither a configured target ({known}) nor a folder, file:///path or s3://bucket/prefix"
        )
    digest = hashlib.sha1(url.encode()).hexdigest()[:10]
    made = TargetConfig.made(f"{kind}-{digest}", kind, url)
    return dataclasses.replace(config, targets={**config.targets, made.name: made}), made.name


def run(args: argparse.Namespace, config: Config) -> int:
    split_spec(args.source)  # a bad SOURCE is refused (exit 2, naming it) before anything starts
    filter_from(args)  # and a bad --include/--exclude
    config, args.target = target_for(config, args.target)
    # What `ferry upload` takes and `copy` leaves at its defaults.
    args.recid, args.delete_staged, args.ledger = args.source, False, None
    limits = with_jobs(config.limits, downloads=args.jobs, uploads=args.uploads)
    result = asyncio.run(run_record(args, config, limits))
    if result.stage == "resolve" and isinstance(result.error, InputError):
        # An id the source cannot take (zenodo:abc) is a bad SOURCE: exit 2, as for any input.
        result.error.recid = args.source  # named as the user wrote it, not as the source took it
        raise result.error
    return print_results([result])
