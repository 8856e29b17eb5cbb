"""`ferry demo`: the main job on the embedded default, end to end, on 127.0.0.1 only."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import urllib.request
from pathlib import Path

from ferry.cli import main as ferry_main
from ferry.core.config import Config
from ferry.core.errors import InputError
from pipeline.ledger import Ledger
from pipeline.push import LEDGER_KEY, default_ledger
from sandbox.s3 import S3_TARGET, S3Sandbox
from sandbox.stack import DEFAULT_RECIDS, SANDBOX_TARGET, ZENODO_TARGET, Sandbox, config_toml, run_in_thread

from .sandbox import SANDBOX_REPOSITORY_OPTIONS

DESCRIPTION = """\
Run the main job on the local sandbox and show its results: start an XRootD server over
generated copies of real DELPHI records, a CERN Open Data portal stand-in and a sandbox
InvenioRDM/NRP repository (all on 127.0.0.1); upload the first record alone with
`ferry upload`, then `ferry bulk` every sample record through download (verified
adler32) -> zip (when the policy says so) -> metadata transform -> upload (md5 verified
on the target) -> publish; then run the bulk again to show that nothing moves twice;
push a small folder into a Zenodo stand-in as a published record and mirror that Zenodo
record into a local S3 server (moto) with `ferry mirror`, twice (the second moves 0
bytes); print the stats summary, and write the figures of the runs.
Everything stops when the demo ends; its files stay in --workdir.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "demo",
        parents=[common],
        help="run the whole pipeline on the local sandbox and write stats and figures",
        description=DESCRIPTION,
        epilog="examples:\n  ferry demo\n  ferry demo --workdir /tmp/demo --recids 80509 81045",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", metavar="DIR", default="demo-out", help="where everything goes (./demo-out)")
    parser.add_argument("--recids", nargs="+", metavar="RECID", default=list(DEFAULT_RECIDS), help="DELPHI records")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures (no analysis packages needed)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    workdir = Path(args.workdir).resolve()
    if workdir.exists():
        # The demo starts clean each time: a new sandbox has new ports and a new repository.
        if not (workdir / "ferry.toml").exists() and any(workdir.iterdir()):
            raise InputError(f"--workdir {workdir} exists and is not a demo folder; choose another")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    sandbox = Sandbox(
        workdir / "sandbox",
        recids=tuple(args.recids),
        with_repository=True,
        repository_options=SANDBOX_REPOSITORY_OPTIONS,
        with_zenodo=True,
        zenodo_options=SANDBOX_REPOSITORY_OPTIONS,
    )
    with run_in_thread(sandbox) as sb, S3Sandbox(workdir / "s3") as s3:
        cfg = workdir / "ferry.toml"
        cfg.write_text(config_toml(sb, publish=True) + "\n" + "\n".join(s3.toml()))
        recids = workdir / "recids.txt"
        recids.write_text("".join(f"{r['recid']}\n" for r in sb.records))
        stats, dest = workdir / "stats", workdir / "data"
        say(
            f"sandbox up: XRootD {sb.xrootd_url}, portal {sb.portal_url}, repository {sb.repository_url}, "
            f"Zenodo {sb.zenodo.url if sb.zenodo else '-'}, S3 {s3.endpoint_url}"
        )
        bulk = ["--config", str(cfg), "bulk", "--recids", str(recids), "--target", SANDBOX_TARGET]
        bulk += ["--dest", str(dest), "--stats-dir", str(stats)]

        one = str(sb.records[0]["recid"])
        say(f"1/6 ferry upload {one}: one record, end to end, published")
        single = ["--config", str(cfg), "upload", one, "--target", SANDBOX_TARGET]
        first = ferry_main([*single, "--dest", str(dest), "--stats-dir", str(stats)])
        say(f"2/6 ferry bulk: {len(sb.records)} DELPHI records -> sandbox repository ({one} is already there)")
        second = ferry_main(bulk)
        say("3/6 the same bulk again: everything is already verified on the target")
        third = ferry_main(bulk)
        mirrored = _zenodo_to_s3(cfg, workdir, sb)
        say("6/6 stats")
        code = ferry_main(["stats", "summary", str(stats)])
        if not args.no_figures:
            code = code or ferry_main(["stats", "figures", str(stats), "-o", str(workdir / "figs")])
    say(
        f"done: downloads in {dest}, stats in {stats}" + ("" if args.no_figures else f", figures in {workdir / 'figs'}")
    )
    return first or second or third or mirrored or code


def _zenodo_to_s3(cfg: Path, workdir: Path, sb: Sandbox) -> int:
    """A folder -> a published record on the Zenodo stand-in -> its concept mirrored into S3."""
    folder = workdir / "zenodo-folder"
    folder.mkdir()
    (folder / "README.md").write_text("DELPHI demo: per-record event counts, as a Zenodo record.\n")
    (folder / "counts.csv").write_text(
        "recid,events\n" + "".join(f"{r['recid']},{1000 + i}\n" for i, r in enumerate(sb.records))
    )
    (folder / "sample.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    say(f"4/6 ferry push {folder.name} --target {ZENODO_TARGET} --publish: a folder as a published Zenodo record")
    meta = ["--title", "DELPHI demo counts", "--creators", "Doe, Jane", "--description", "ferry demo"]
    push = ["--config", str(cfg), "push", str(folder), "--target", ZENODO_TARGET, "--publish", *meta]
    code = ferry_main([*push, "--upload-type", "dataset"])
    if code:
        return code
    with Ledger.open(default_ledger(folder, ZENODO_TARGET), readonly=True) as ledger:
        row = ledger.get(LEDGER_KEY)
    assert sb.zenodo is not None and row is not None and row.remote_id
    with urllib.request.urlopen(f"{sb.zenodo.url}/api/records/{row.remote_id}", timeout=30) as answer:
        concept = json.load(answer)["conceptrecid"]
    spec = f"zenodo:concept:{concept}"
    say(f"5/6 ferry mirror {spec} {S3_TARGET}: streamed into S3 (<record_id>/ + latest/), then again")
    mirror = ["--config", str(cfg), "mirror", spec, S3_TARGET]
    return ferry_main(mirror) or ferry_main(mirror)


def say(text: str) -> None:
    print(f"\n== ferry demo: {text}", flush=True)
    sys.stdout.flush()
