"""Benchmark: uploads into the sandbox repository, ferry vs ``curl -T``, in the same run.

(About 520 lines: one script a user runs and reads top to bottom; its process and
measuring helpers are already in benchlib and benchproc.)

    flock /tmp/ferry-bench.lock .venv/bin/python bench/bench_upload.py [--repeat 3] [--keep]

Data: one record with a 1 GiB file, one with 500 x 2 MiB (deterministic pseudo-random
bytes from sandbox.datagen), served by the sandbox XRootD and downloaded once with
``ferry download`` (not timed), so every contender reads the same verified local files
from a warm page cache. Every trial gets a FRESH sandbox repository process (loopback,
rate limits off, checksum_delay_ms=0) and a draft created before the clock starts.

Contenders (interleaved, ``--repeat`` rounds, medians reported):

- ``big-L``: 1 GiB as one L transfer. ferry: ``InvenioTarget.put_file`` (init, content
  PUT, commit, read-back md5 check) with ``multipart_threshold`` above 1 GiB. curl: one
  process doing the same four requests over one connection (``--next``), content by
  ``curl -T FILE -H 'Content-Type: application/octet-stream'``.
- ``big-M``: 1 GiB as an M transfer, 50 MiB parts, 4 in flight (ferry's defaults).
  curl: init (curl), the 21 parts (pre-split part files, split not timed) by
  ``xargs -P 4 curl -T``, commit (curl), then polling the entry every 20 ms until the
  server's background md5 is there (ferry polls too: it must see the md5 to verify).
- ``small``: 500 x 2 MiB, L transfers, 4 at once (ferry's ``limits.uploads``). ferry:
  ``put_file`` under a 4-slot semaphore. curl: ``xargs -P 4``, one curl process per file
  doing init, content PUT, commit, GET (``--next``, one connection).
- ``e2e-big`` / ``e2e-small``: the whole ``ferry upload RECID`` command (resolve, local
  files verified by the manifest, transform, find-or-create the draft, upload, verify the
  record) with default settings, plus for the 500 files ``zip_threshold``/``max_files``
  raised so that every file goes up on its own. Wall time of the process, from exec.

The ferry put_file contenders run in a subprocess (``worker`` mode of this script) so
their CPU and RSS are measured apart from the harness. Requests per file are counted
from the server's own request log. Prints a Markdown section for docs/benchmarks.md and
writes the raw numbers as JSON (``--json``).

Why one script of about 510 lines: the contenders (ferry's worker mode, curl's L and M
transfers, the end-to-end runs), their trial loop and the report are read side by side,
so that each pair measures the same thing; the shared plumbing is in benchlib.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    EXACT,
    FERRY,
    GENEROUS,
    PY,
    ROOT,
    GiB,
    MiB,
    RepoProcess,
    bench_record,
    loadavg3,
    machine,
    machine_cpu,
    machine_line,
    measure,
    median,
    proc_cpu,
    sync,
    tail,
    workdir,
)

BIG_RECID, SMALL_RECID = "970001", "970002"
SMALL_COUNT, SMALL_SIZE = 500, 2 * MiB
PART = 50 * MiB
UPLOADS = 4  # ferry's default limits.uploads; curl gets the same parallelism
OCTET = "application/octet-stream"
CONTENDERS = ("big-L", "big-M", "small", "e2e-big", "e2e-small")
HERE = Path(__file__).resolve()


# --- worker mode: ferry's InvenioTarget.put_file, timed in its own process ----------------


async def _worker(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import logging

    # BENCH_LOG=DEBUG shows every request with its duration (time since start in ms).
    logging.basicConfig(level=os.environ.get("BENCH_LOG", "WARNING"), format="%(relativeCreated)7.0f %(message)s")
    from download.manifest import load_manifest
    from download.sources.cernopendata import RecordsFileSource
    from ferry.core.checksums import Checksum
    from ferry.core.config import load_config
    from metadata.base import get_profile, transform_and_validate
    from pipeline.target_wiring import make_target

    if os.environ.get("BENCH_CHUNK"):  # experiments: the read size of upload bodies
        import upload.targets.http

        defaults = upload.targets.http.file_range.__kwdefaults__ or {}
        defaults["chunk"] = int(os.environ["BENCH_CHUNK"])
        upload.targets.http.file_range.__kwdefaults__ = defaults
    config = load_config(args.config)
    tcfg = config.target("sandbox")
    record = await RecordsFileSource([args.records]).resolve(args.recid)
    record_dir = Path(args.dest) / args.recid
    manifest = load_manifest(record_dir, args.recid)
    keys = sorted(f.key for f in record.files)
    profile = get_profile(tcfg.profile)
    body = transform_and_validate(profile, record.metadata)
    target = make_target(tcfg, config.limits)
    try:
        remote = await target.create(args.recid, body)
        before = target.requests_sent  # type: ignore[attr-defined]
        slots = asyncio.Semaphore(args.uploads)

        async def one(key: str) -> None:
            entry = manifest.entries[key]
            async with slots:
                md5 = Checksum("md5", entry.checksums["md5"])
                await target.put_file(remote, key, record_dir / key, entry.size, md5)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(k) for k in keys))
        seconds = time.perf_counter() - t0
        sent = target.requests_sent - before  # type: ignore[attr-defined]
    finally:
        await target.aclose()
    total = sum(manifest.entries[k].size for k in keys)
    return {"seconds": seconds, "bytes": total, "files": len(keys), "requests": sent}


# --- curl contenders ----------------------------------------------------------------------


def _auth(token: str) -> list[str]:
    return ["-H", f"Authorization: Bearer {token}"]


def _files_link(repo: RepoProcess, records: Path, recid: str) -> str:
    """Create the draft (not timed) through ferry's own client; the curl side fills it."""
    sys.path.insert(0, str(ROOT))
    from download.sources.cernopendata import RecordsFileSource
    from ferry.core.config import Secret, TargetConfig
    from metadata.base import get_profile, transform_and_validate
    from upload.targets.invenio import InvenioTarget

    async def create() -> str:
        tcfg = TargetConfig(name="sandbox", type="invenio", url=repo.url, profile="nrp-particles", model="particles")
        target = InvenioTarget(tcfg)
        target.http._token = Secret(repo.token)  # harness only: no token file needed
        try:
            record = await RecordsFileSource([records]).resolve(recid)
            profile = get_profile(tcfg.profile)
            rec = await target.create(recid, transform_and_validate(profile, record.metadata))
            return rec.links["files"]
        finally:
            await target.aclose()

    return asyncio.run(create())


def _curl_l_cmd(token: str, files: str, key: str, path: Path, size: int) -> list[str]:
    """One curl process: init, content PUT (-T), commit, read back, over one connection."""
    entry = f"{files}/{key}"
    auth = _auth(token)
    json_h = ["-H", "Content-Type: application/json"]
    return [
        "curl", "-sS", "-f", "-o", "/dev/null",
        *auth, *json_h, "-X", "POST", "--data-binary", json.dumps([{"key": key, "size": size}]), files,
        "--next", "-sS", "-f", "-o", "/dev/null",
        *auth, "-H", "Content-Type: application/octet-stream", "-T", str(path), f"{entry}/content",
        "--next", "-sS", "-f", "-o", "/dev/null", *auth, "-X", "POST", f"{entry}/commit",
        "--next", "-sS", "-f", "-o", "/dev/null", *auth, entry,
    ]  # fmt: skip


def curl_big_l(repo: RepoProcess, files: str, path: Path) -> float:
    cmd = _curl_l_cmd(repo.token, files, path.name, path, path.stat().st_size)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def curl_small(repo: RepoProcess, files: str, paths: list[Path]) -> float:
    """xargs -P 4: one curl per file (init, PUT, commit, GET), as ferry's 4 upload slots."""
    lines = []
    for p in paths:
        lines.append(shlex.join(_curl_l_cmd(repo.token, files, p.name, p, p.stat().st_size)))
    script = Path(repo.data).parent / f"{repo.data.name}-curl.txt"
    script.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    # Each line is one complete curl command line; `sh -c` runs it (tokens are in argv only).
    with open(script) as stdin:
        subprocess.run(["xargs", "-P", str(UPLOADS), "-d", "\n", "-n", "1", "sh", "-c"], stdin=stdin, check=True)
    seconds = time.perf_counter() - t0
    script.unlink()
    return seconds


def _http_json(method: str, url: str, token: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def curl_big_m(repo: RepoProcess, files: str, path: Path, parts_dir: Path) -> float:
    size = path.stat().st_size
    count = -(-size // PART)
    key = path.name
    entry = f"{files}/{key}"
    init = [
        "curl", "-sS", "-f", *_auth(repo.token), "-H", "Content-Type: application/json", "-X", "POST",
        "--data-binary", json.dumps([{"key": key, "size": size, "transfer": {"type": "M", "parts": count,
                                                                             "part_size": PART}}]), files,
    ]  # fmt: skip
    t0 = time.perf_counter()
    answer = json.loads(subprocess.run(init, check=True, capture_output=True).stdout)
    links = next(e for e in answer["entries"] if e["key"] == key)["links"]["parts"]
    lines = []
    for part in links:
        src = parts_dir / f"part{int(part['part']) - 1:04d}"
        put = ["curl", "-sS", "-f", "-o", "/dev/null", *_auth(repo.token), "-H", f"Content-Type: {OCTET}"]
        lines.append(shlex.join([*put, "-T", str(src), part["url"]]))
    proc = subprocess.run(
        ["xargs", "-P", str(UPLOADS), "-d", "\n", "-n", "1", "sh", "-c"],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
    )
    assert proc.returncode == 0
    subprocess.run(
        ["curl", "-sS", "-f", "-o", "/dev/null", *_auth(repo.token), "-X", "POST", f"{entry}/commit"], check=True
    )
    while True:  # the md5 is computed in the background after commit; wait until it is there
        body = _http_json("GET", entry, repo.token)
        if str(body.get("checksum") or "").startswith("md5:"):
            break
        time.sleep(0.02)
    return time.perf_counter() - t0


# --- ferry contenders ---------------------------------------------------------------------


def ferry_put(config: Path, records: Path, dest: Path, recid: str) -> tuple[float, dict[str, Any], Any]:
    cmd = [
        PY, str(HERE), "worker", "--config", str(config), "--records", str(records),
        "--dest", str(dest), "--recid", recid, "--uploads", str(UPLOADS),
    ]  # fmt: skip
    m = measure(cmd)
    if m.rc != 0:
        raise RuntimeError(f"worker failed ({m.rc}):\n{tail(m.stderr)}")
    result = json.loads(m.stdout.strip().splitlines()[-1])
    return result["seconds"], result, m


def ferry_e2e(config: Path, records: Path, dest: Path, recid: str, stats: Path) -> Any:
    # A fresh ledger per trial: each trial talks to a fresh repository.
    cmd = [
        FERRY, "--config", str(config), "upload", recid, "--target", "sandbox", "--records", str(records),
        "--dest", str(dest), "--stats-dir", str(stats), "--ledger", str(stats / "ledger.sqlite"),
    ]  # fmt: skip
    m = measure(cmd)
    if m.rc != 0:
        raise RuntimeError(f"ferry upload failed ({m.rc}):\n{tail(m.stderr)}")
    return m


# --- orchestration ------------------------------------------------------------------------


def write_cfg(path: Path, repo: RepoProcess, portal: str, *, big_l: bool = False, many: bool = False) -> Path:
    from benchlib import write_config

    target: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if big_l:
        target["multipart_threshold"] = 2 * GiB  # the 1 GiB file as one L transfer
    if many:
        target["max_files_per_record"] = 1000
        limits["zip_threshold"] = 1000
    return write_config(path, portal=portal, repo=repo, target=target, limits=limits)


def run_trial(
    name: str, who: str, wd: Path, trial: int, sb_portal: str, records: Path, dest: Path, parts: Path
) -> dict[str, Any]:
    repo_dir = wd / f"repo-{name}-{who}-{trial}"
    # big-L is one 1 GiB content PUT, which NRP mode refuses above 50 MiB since the
    # sandbox caps it as NRP does (issue 15): off here, so the figures stay comparable.
    knobs = dict(GENEROUS, max_files=1000, max_single_put=0)
    sync()
    with RepoProcess(repo_dir, knobs) as repo:
        cfg = write_cfg(wd / f"ferry-{name}-{who}-{trial}.toml", repo, sb_portal, big_l=name == "big-L",
                        many=name in ("small", "e2e-small"))  # fmt: skip
        srv0 = proc_cpu(repo.proc.pid if repo.proc else None)  # after start-up
        busy0, harness0 = machine_cpu(), _self_cpu()
        big = dest / BIG_RECID / "f00000.dat"
        small = sorted((dest / SMALL_RECID).glob("f*.dat"))
        recid = BIG_RECID if name in ("big-L", "big-M", "e2e-big") else SMALL_RECID
        total = big.stat().st_size if recid == BIG_RECID else sum(p.stat().st_size for p in small)
        nfiles = 1 if recid == BIG_RECID else len(small)
        row: dict[str, Any] = {"name": name, "who": who, "trial": trial, "bytes": total, "files": nfiles}
        if who == "ferry" and name.startswith("e2e"):
            m = ferry_e2e(cfg, records, dest, recid, wd / f"stats-{name}-{trial}")
            row.update(seconds=m.wall, requests=repo.request_count(), rss_mb=m.maxrss_mb, tree_mb=m.tree_peak_mb)
            row["cpu"] = m.cpu
        elif who == "ferry":
            seconds, res, m = ferry_put(cfg, records, dest, recid)
            row.update(seconds=seconds, requests=res["requests"], rss_mb=m.maxrss_mb, tree_mb=m.tree_peak_mb)
            row["cpu"] = m.cpu  # the whole worker process, interpreter start and draft creation included
        else:
            files = _files_link(repo, records, recid)
            before = repo.request_count()
            cpu0 = _children_cpu()
            if name == "big-L":
                seconds = curl_big_l(repo, files, big)
            elif name == "big-M":
                seconds = curl_big_m(repo, files, big, parts)
            else:
                seconds = curl_small(repo, files, small)
            row.update(seconds=seconds, requests=repo.request_count() - before, cpu=_children_cpu() - cpu0)
        row["cpu_server"] = proc_cpu(repo.proc.pid if repo.proc else None) - srv0  # the trial, draft creation too
        # CPU the machine spent on other processes meanwhile (other helpers; ~0 when quiet).
        row["cpu_other"] = machine_cpu() - busy0 - row["cpu"] - row["cpu_server"] - (_self_cpu() - harness0)
        state = _state(repo)
        row["verified_on_server"] = state
    row["mb_s"] = row["bytes"] / row["seconds"] / 1e6
    print(
        f"{name:9s} {who:5s} #{trial}: {row['seconds']:.2f} s, {row['mb_s']:.0f} MB/s, "
        f"{row['requests']} requests, CPU {row['cpu']:.2f} s (server {row['cpu_server']:.2f} s, other "
        f"{row['cpu_other']:.2f} s), server: {state}",
        file=sys.stderr,
    )
    return row


def _children_cpu() -> float:
    """User + system CPU seconds of this harness's reaped children (the curl processes)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _state(repo: RepoProcess) -> str:
    """How many files the server holds completed with an md5 (a sanity check of each trial)."""
    with urllib.request.urlopen(f"{repo.url}/_sandbox/state") as resp:
        state = json.loads(resp.read())
    done = sum(
        1
        for entity in state["entities"]
        for f in entity["draft_files"].values()
        if f["status"] == "completed" and str(f.get("checksum") or "").startswith("md5:")
    )
    return f"{len(state['entities'])} record(s), {done} completed md5 file(s)"


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode")
    w = sub.add_parser("worker")
    for flag in ("--config", "--records", "--dest", "--recid"):
        w.add_argument(flag, required=True)
    w.add_argument("--uploads", type=int, default=UPLOADS)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big-mib", type=int, default=1024, help="size of the big file (smoke runs: smaller)")
    ap.add_argument("--small-count", type=int, default=SMALL_COUNT, help="number of 2 MiB files")
    ap.add_argument("--only", default=",".join(CONTENDERS))
    ap.add_argument("--json", default="/tmp/ferry-bench-upload.json")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (/tmp/ferry-bench-upload-*)")
    return ap.parse_args()


def _download_once(wd: Path, portal_url: str, records: Path) -> tuple[Path, Path]:
    """``ferry download`` the bench records (not timed), split the big file into the M
    transfer's parts for curl, and read everything once so every contender reads from
    the page cache. Returns the download folder and the parts folder."""
    dest = wd / "data"
    cfg0 = wd / "download.toml"
    cfg0.write_text(f'[source.cernopendata]\nportal = "{portal_url}"\n')
    setup = subprocess.run(
        [FERRY, "--config", str(cfg0), "download", "--records", str(records), "--dest", str(dest)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if setup.returncode != 0:
        raise RuntimeError(f"ferry download (setup) failed:\n{tail(setup.stderr)}")
    parts = wd / "parts"
    parts.mkdir()
    subprocess.run(
        ["split", "-b", str(PART), "-a", "4", "-d", str(dest / BIG_RECID / "f00000.dat"), str(parts / "part")],
        check=True,
    )
    for p in dest.rglob("*.dat"):  # warm: everyone reads from the page cache
        with open(p, "rb", buffering=0) as fh:
            while fh.read(8 * MiB):
                pass
    return dest, parts


def _run_trials(
    args: argparse.Namespace, wd: Path, portal_url: str, records: Path, dest: Path, parts: Path
) -> list[dict[str, Any]]:
    """``--repeat`` rounds of every wanted contender, ferry and curl alternating who goes first."""
    rows = []
    wanted = args.only.split(",")
    for trial in range(1, args.repeat + 1):
        for name in wanted:
            whos = ("ferry",) if name.startswith("e2e") else ("ferry", "curl")
            if trial % 2 == 0:
                whos = whos[::-1]  # alternate who goes first
            for who in whos:
                rows.append(run_trial(name, who, wd, trial, portal_url, records, dest, parts))
    return rows


def main() -> int:
    args = _parse_args()
    if args.mode == "worker":
        print(json.dumps(asyncio.run(_worker(args))))
        return 0

    from sandbox.stack import Sandbox, run_in_thread

    facts = machine()
    facts["load_before"] = loadavg3()
    wd = workdir("upload")
    try:
        recs = [
            bench_record(BIG_RECID, [args.big_mib * MiB]),
            bench_record(SMALL_RECID, [SMALL_SIZE] * args.small_count),
        ]
        print(f"work dir {wd}; generating {1 + args.small_count} files...", file=sys.stderr)
        with run_in_thread(Sandbox(wd / "src", records=recs, scale=EXACT)) as sb:
            records = sb.records_file
            dest, parts = _download_once(wd, sb.portal_url, records)
            shutil.rmtree(sb.data_root / "eos", ignore_errors=True)  # source copy no longer needed
            rows = _run_trials(args, wd, sb.portal_url, records, dest, parts)
        facts["load_after"] = loadavg3()
        Path(args.json).write_text(json.dumps({"machine": facts, "rows": rows}, indent=1))
        print(report(facts, rows, args))
    finally:
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    return 0


def report(facts: dict[str, Any], rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def med(name: str, who: str, field: str) -> float:
        return median([r[field] for r in rows if r["name"] == name and r["who"] == who])

    out = [
        f"Command: `flock /tmp/ferry-bench.lock .venv/bin/python bench/bench_upload.py {' '.join(sys.argv[1:])}`  ",
        f"Machine: {machine_line(facts)}  ",
        f"Load average (1, 5, 15 min) before: {facts.get('load_before')}; after: {facts.get('load_after')}  ",
        f"Medians of {args.repeat} interleaved trials, each against a fresh sandbox repository process.",
        "",
        "| transfer | ferry s | ferry MB/s | curl s | curl MB/s | ferry/curl bytes/s | requests/file ferry | "
        "requests/file curl | CPU s ferry / curl | CPU s server (ferry / curl trials) | ferry peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("big-L", "big-M", "small", "e2e-big", "e2e-small"):
        if not any(r["name"] == name for r in rows):
            continue
        fs, fr = med(name, "ferry", "seconds"), med(name, "ferry", "mb_s")
        files = next(r["files"] for r in rows if r["name"] == name)
        freq = med(name, "ferry", "requests") / files
        rss = max(r["rss_mb"] for r in rows if r["name"] == name and r["who"] == "ferry")
        peer = {"e2e-big": "big-M", "e2e-small": "small"}.get(name, name)
        cs, cr = med(peer, "curl", "seconds"), med(peer, "curl", "mb_s")
        creq = med(peer, "curl", "requests") / files
        label = name if peer == name else f"{name} (vs curl {peer})"
        fcpu, ccpu = med(name, "ferry", "cpu"), med(peer, "curl", "cpu")
        fsrv, csrv = med(name, "ferry", "cpu_server"), med(peer, "curl", "cpu_server")
        out.append(
            f"| {label} | {fs:.2f} | {fr:.0f} | {cs:.2f} | {cr:.0f} | **{fr / cr:.2f}** | {freq:.1f} | {creq:.1f} | "
            f"{fcpu:.2f} / {ccpu:.2f} | {fsrv:.2f} / {csrv:.2f} | {rss:.0f} |"
        )
    out += ["", "All trials, seconds (ferry / curl) and per-pair ratio of bytes/s:", ""]
    for name in ("big-L", "big-M", "small"):
        fs_ = [r["seconds"] for r in rows if r["name"] == name and r["who"] == "ferry"]
        cs_ = [r["seconds"] for r in rows if r["name"] == name and r["who"] == "curl"]
        if fs_ and cs_:
            pairs = ", ".join(f"{f:.2f} / {c:.2f} ({c / f:.2f})" for f, c in zip(fs_, cs_, strict=False))
            other = ", ".join(
                f"{r['cpu_other']:.1f}" for r in rows if r["name"] == name and r["who"] in ("ferry", "curl")
            )
            out.append(f"- {name}: {pairs}; CPU s of other processes per trial: {other}")
    for name in ("e2e-big", "e2e-small"):
        fs_ = [r["seconds"] for r in rows if r["name"] == name]
        if fs_:
            other = ", ".join(f"{r['cpu_other']:.1f}" for r in rows if r["name"] == name)
            out.append(f"- {name}: {', '.join(f'{f:.2f}' for f in fs_)}; CPU s of other processes: {other}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
