"""`ferry sandbox`: run the local stand-ins (XRootD + portal API over generated data) until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import textwrap
from pathlib import Path

from ferry.core.atomic import atomic_write_bytes
from ferry.core.config import Config
from ferry.core.errors import InputError
from ferry.progress import human_bytes
from sandbox.datagen import DataGenError, Scale
from sandbox.s3 import BUCKET, S3_PUSH_TARGET, S3_TARGET, S3Sandbox, S3SandboxError
from sandbox.s3 import available as s3_available
from sandbox.stack import DEFAULT_RECIDS, DEFAULT_SCALE, SANDBOX_TARGET, Sandbox, SandboxError, config_toml
from sandbox.xrootd import XRootDError

# Rate limits of the interactive sandbox repository: high, so trying things is not a wait
# (tests and benchmarks set their own).
SANDBOX_REPOSITORY_OPTIONS = {"rate_per_minute": 6000, "rate_per_hour": 100_000}

DESCRIPTION = """\
Start, on 127.0.0.1, a real XRootD server (Debian xrootd, adler32 checksums) over a
generated tree that mirrors the /eos/opendata/... paths of chosen DELPHI records, and a
CERN Open Data portal API stand-in serving those records rewritten to the local URIs,
sizes and checksums (plus /eos/opendata/... over HTTP, the HTTPS mirror path), a sandbox
InvenioRDM/NRP repository, a Zenodo stand-in and an S3 server (moto, in memory). File
contents are synthetic and deterministic; sizes are the real ones times --scale, kept
between --min-size and --max-size. Prints the URLs, a ferry.toml snippet and example
commands, then runs until Ctrl-C / SIGTERM and stops everything it started.
"""

EPILOG = """\
examples:
  ferry sandbox                                  # default records, temp workdir
  ferry sandbox --with-cases --workdir /tmp/sb   # plus the awkward test-case records
  ferry sandbox --recids 80509 81045 --scale 0.1 --ready-file /tmp/sb.json
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "sandbox",
        parents=[common],
        help="run local XRootD + portal stand-ins over generated data (for the demo and tests)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        type=Path,
        help="where the data tree, records.json and the xrootd log go (default: a temp dir, removed at exit; "
        "must be enterable by the unprivileged xrootd user when run as root)",
    )
    parser.add_argument(
        "--recids",
        metavar="RECID",
        nargs="+",
        default=None,
        help=f"DELPHI records to mirror, space or comma separated (default: {' '.join(DEFAULT_RECIDS)})",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=DEFAULT_SCALE.factor,
        help=f"size factor applied to the real file sizes (default: {DEFAULT_SCALE.factor})",
    )
    parser.add_argument(
        "--min-size",
        type=int,
        default=DEFAULT_SCALE.minimum,
        metavar="BYTES",
        help=f"smallest generated file (default: {DEFAULT_SCALE.minimum})",
    )
    parser.add_argument(
        "--max-size",
        type=int,
        default=DEFAULT_SCALE.maximum,
        metavar="BYTES",
        help=f"largest generated file (default: {DEFAULT_SCALE.maximum})",
    )
    parser.add_argument(
        "--with-cases",
        action="store_true",
        help="also serve the generated test-case records 990001.. (unpadded/sha1/alder32 checksums, "
        "file index, colliding names, bad checksum, missing file, path escape, no files, big, many)",
    )
    parser.add_argument("--portal-port", type=int, default=0, metavar="PORT", help="portal port (default: free)")
    parser.add_argument(
        "--no-repository", action="store_true", help="do not start the sandbox InvenioRDM/NRP repository"
    )
    parser.add_argument(
        "--repository-port", type=int, default=0, metavar="PORT", help="repository port (default: free)"
    )
    parser.add_argument("--no-zenodo", action="store_true", help="do not start the Zenodo stand-in")
    parser.add_argument("--no-s3", action="store_true", help="do not start the S3 server (moto)")
    parser.add_argument("--s3-port", type=int, default=0, metavar="PORT", help="S3 server port (default: free)")
    parser.add_argument("--xrootd-port", type=int, default=None, metavar="PORT", help="xrootd port (default: free)")
    parser.add_argument(
        "--ready-file",
        metavar="PATH",
        type=Path,
        help="write the URLs and paths as JSON to PATH once everything is up (for scripts)",
    )
    parser.set_defaults(func=run)


def parse_recids(values: list[str] | None) -> tuple[str, ...]:
    if not values:
        return DEFAULT_RECIDS
    out = [v.strip() for raw in values for v in raw.replace(",", " ").split()]
    bad = [v for v in out if not v.isdigit()]
    if bad:
        raise InputError(f"--recids: not a record id: {', '.join(bad)}", field="--recids")
    return tuple(dict.fromkeys(out))


def run(args: argparse.Namespace, config: Config) -> int:
    recids = parse_recids(args.recids)
    if not args.scale > 0 or args.min_size < 0 or args.max_size < args.min_size:
        raise InputError("--scale must be > 0 and 0 <= --min-size <= --max-size", field="--scale")
    sandbox = Sandbox(
        args.workdir,
        recids=recids,
        scale=Scale(args.scale, args.min_size, args.max_size),
        with_cases=args.with_cases,
        portal_port=args.portal_port,
        xrootd_port=args.xrootd_port,
        with_repository=not args.no_repository,
        repository_port=args.repository_port,
        repository_options=SANDBOX_REPOSITORY_OPTIONS,
        with_zenodo=not args.no_zenodo,
        zenodo_options=SANDBOX_REPOSITORY_OPTIONS,
    )
    with_s3 = not args.no_s3
    if with_s3 and not s3_available():
        print("ferry sandbox: no S3 server: moto[server] is not installed (make setup installs it)", file=sys.stderr)
        with_s3 = False
    try:
        return asyncio.run(_serve(sandbox, args.ready_file, s3_port=args.s3_port if with_s3 else None))
    except (SandboxError, DataGenError, S3SandboxError) as exc:
        raise InputError(str(exc)) from exc
    except (XRootDError, OSError) as exc:
        print(f"ferry sandbox: could not start: {exc}", file=sys.stderr)
        return 1


async def _serve(sandbox: Sandbox, ready_file: Path | None, *, s3_port: int | None = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    s3: S3Sandbox | None = None
    try:
        async with sandbox:
            if s3_port is not None:
                s3 = S3Sandbox(sandbox.workdir / "s3", port=s3_port)
                await asyncio.to_thread(s3.start)
            print(banner(sandbox, s3), flush=True)
            if ready_file is not None:
                info = ready_info(sandbox) | (s3.info() if s3 is not None else {})
                # Written whole or not at all: a script polls for the file and reads it at once.
                await asyncio.to_thread(atomic_write_bytes, ready_file, json.dumps(info, indent=1).encode())
            await stop.wait()
            print("\nferry sandbox: stopping", file=sys.stderr, flush=True)
    finally:
        if s3 is not None:
            await asyncio.to_thread(s3.stop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if ready_file is not None:
            await asyncio.to_thread(ready_file.unlink, True)
    return 0


def ready_info(sb: Sandbox) -> dict[str, object]:
    return {
        "xrootd_url": sb.xrootd_url,
        "portal_url": sb.portal_url,
        "data_root": str(sb.data_root),
        "records_file": str(sb.records_file),
        "recids": [str(r["recid"]) for r in sb.records],
        "cases": sb.cases,
        "repository_url": sb.repository_url if sb.repository is not None else None,
        "token_file": str(sb.token_file) if sb.repository is not None else None,
        "zenodo_url": sb.zenodo.url if sb.zenodo is not None else None,
        "zenodo_token_file": str(sb.zenodo_token_file) if sb.zenodo is not None else None,
    }


def banner(sb: Sandbox, s3: S3Sandbox | None = None) -> str:
    total = sum(int(f["size"]) for r in sb.records for f in r.get("files", []))
    recids = [str(r["recid"]) for r in sb.records]
    first = " ".join(recids[:3])
    repo = ""
    if sb.repository is not None:
        repo = f"\n  repository:  {sb.repository_url}   (InvenioRDM/NRP sandbox; token in {sb.token_file})"
    if sb.zenodo is not None:
        repo += (
            f"\n  zenodo:      {sb.zenodo.url}/api   (Zenodo deposit + records API; token in {sb.zenodo_token_file})"
        )
    toml = config_toml(sb)
    if s3 is not None:
        repo += f"\n  S3:          {s3.endpoint_url}   (moto, in memory; bucket s3://{BUCKET})"
        toml += "\n" + "\n".join(s3.toml())
    cases = ""
    if sb.cases:
        cases = "\ntest cases (recid): " + ", ".join(f"{k}={v}" for k, v in sb.cases.items())
    return (
        textwrap.dedent(
            f"""\
        ferry sandbox is up ({len(recids)} records, {human_bytes(total)} of generated data)
          XRootD:      {sb.xrootd_url}   (serving {sb.data_root})
          portal API:  {sb.portal_url}/api/records/<recid>   (HTTP mirror: {sb.portal_url}/eos/opendata/...)
          records:     {sb.records_file}
          recids:      {" ".join(recids)}"""
        )
        + repo
        + cases
        + textwrap.dedent(
            f"""

        ferry.toml (save it as ./ferry.toml):
        {{toml}}
        try, in another shell:
          ferry download {first} --portal {sb.portal_url} --dest ./data
          ferry download {first} --records {sb.records_file} --dest ./data
          ferry download {first} --portal {sb.portal_url} --protocol https --dest ./data
          xrdfs {sb.xrootd_url} ls -l /eos/opendata{{upload}}

        Ctrl-C stops the sandbox."""
        )
    ).format(toml=textwrap.indent(toml, "  "), upload=_upload_examples(sb, first) + _s3_examples(sb, s3))


def _upload_examples(sb: Sandbox, first: str) -> str:
    if sb.repository is None:
        return ""
    recid = first.split()[0] if first else ""
    return (
        f"\n  ferry upload {recid} --target {SANDBOX_TARGET} --dest ./data --dry-run"
        f"\n  ferry upload {recid} --target {SANDBOX_TARGET} --dest ./data --stats-dir ./stats"
    )


def _s3_examples(sb: Sandbox, s3: S3Sandbox | None) -> str:
    if s3 is None:
        return ""
    lines = [f"\n  ferry push ./some-folder --target {S3_PUSH_TARGET} --dry-run"]
    if sb.zenodo is not None:
        lines.append(f"\n  ferry mirror zenodo:concept:ID {S3_TARGET} --dry-run   (ID: pushed to the Zenodo stand-in)")
    return "".join(lines)
