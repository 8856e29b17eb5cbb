"""Benchmark: ``ferry push DIR --target <Zenodo stand-in>`` vs ``curl -T`` bucket PUTs, same run.

    .venv/bin/python bench/run.py --only push              # under the bench lock
    flock /tmp/ferry-bench.lock .venv/bin/python bench/bench_push.py [--repeat 3] [--count 100] [--mib 10]

Data: ``--count`` files of ``--mib`` MiB each (default 100 x 10 MiB, pseudo-random bytes,
written once and read once before the first trial so every contender reads a warm page
cache). Every trial gets a FRESH Zenodo stand-in process (``python -m sandbox.zenodo``,
loopback, rate limits off) so no trial sees another's depositions; trials interleave and
who goes first alternates.

Contenders (the clock runs from the process start to the last answer):

- ``curl``: the issue's peer. One ``curl`` POST creates the deposition (with the metadata a
  publish needs), then ``xargs -P 8`` runs one ``curl -T FILE {bucket}/{key}`` per file.
  It does not verify anything: the bucket's md5 is in each answer, and curl discards it.
- ``ferry-cold``: ``ferry push DIR --target zen --jobs 8`` with the metadata flags, on a
  directory ferry has never seen (``DIR/.ferry`` removed): it creates the deposition,
  sends the metadata and PUTs every file, hashing each (md5) while it is sent (one read),
  and compares the server's md5 with its own. Only a file the target already holds is
  hashed before any request (to decide skip or replace); here there is none. This is the
  first push of a release, the case that matters.
- ``ferry-warm``: the same, with only the push ledger removed (its md5 cache kept, the files
  unchanged): the upload path alone, the hashing already done by an earlier push.

Requests are counted in the stand-in's own request log; "per file" is (all requests -
the constant per deposition) / files, the constant being what is not a bucket PUT.
Each trial is checked on the server: one deposition holding every file with the md5 of
the local bytes. CPU: the client's (``/usr/bin/time -v`` for ferry, rusage of curl
children) and the server's (/proc), plus "other" (the machine's busy time minus those:
work of other processes on the shared machine during the trial).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    FERRY,
    MiB,
    RepoProcess,
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

PARALLEL = 8  # the peer: 8 curl PUTs in flight; ferry gets --jobs 8
CONTENDERS = ("curl", "ferry-cold", "ferry-warm")
METADATA = {
    "title": "Benchmark push",
    "creators": [{"name": "Doe, Jane"}],
    "description": "bench/bench_push.py",
    "upload_type": "dataset",
}
FERRY_META = ["--title", "Benchmark push", "--creators", "Doe, Jane", "--description", "bench/bench_push.py"]
FERRY_META += ["--upload-type", "dataset"]
UNLIMITED = {"rate_per_minute": 10**9, "rate_per_hour": 10**10}


@dataclass
class ZenodoProcess(RepoProcess):
    """``python -m sandbox.zenodo`` on loopback as its own process (its CPU is not ours),
    rate limits off; leaving ``with`` removes its data folder (as every ``RepoProcess``)."""

    knobs: dict[str, Any] = field(default_factory=lambda: dict(UNLIMITED))
    module: str = "sandbox.zenodo"

    def admin(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}/_sandbox/{path}", timeout=30) as resp:
            return json.loads(resp.read())


def make_files(directory: Path, count: int, size: int) -> dict[str, str]:
    """``count`` files of ``size`` pseudo-random bytes; returns key -> md5."""
    directory.mkdir(parents=True)
    rng = random.Random(20261121)
    md5s = {}
    for i in range(count):
        data = rng.randbytes(size)
        key = f"part{i:04d}.bin"
        (directory / key).write_bytes(data)
        md5s[key] = hashlib.md5(data, usedforsecurity=False).hexdigest()
    return md5s


def warm(directory: Path) -> None:
    for p in sorted(directory.iterdir()):
        if p.is_file():
            with open(p, "rb", buffering=0) as fh:
                while fh.read(8 * MiB):
                    pass


def write_config(path: Path, zen: ZenodoProcess) -> Path:
    token = path.with_suffix(".token")
    token.write_text(zen.token)
    os.chmod(token, 0o600)
    path.write_text(
        "[targets.zen]\n"
        'type = "zenodo"\n'
        f'url = "{zen.url}"\n'
        f'token_file = "{token}"\n'
        "requests_per_minute = 100000000\n"
        "requests_per_hour = 1000000000\n"
    )
    return path


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_curl(zen: ZenodoProcess, directory: Path, wd: Path) -> tuple[float, float]:
    """Create the deposition (one curl), then one ``curl -T`` per file, 8 at once."""
    auth = ["-H", f"Authorization: Bearer {zen.token}"]
    create = ["curl", "-sS", "-f", *auth, "-H", "Content-Type: application/json", "-X", "POST"]
    create += ["--data-binary", json.dumps({"metadata": METADATA}), f"{zen.url}/api/deposit/depositions"]
    keys = sorted(p.name for p in directory.iterdir() if p.is_file())
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    answer = json.loads(subprocess.run(create, check=True, capture_output=True).stdout)
    bucket = answer["links"]["bucket"]
    lines = [
        shlex.join(["curl", "-sS", "-f", "-o", "/dev/null", *auth, "-T", str(directory / k), f"{bucket}/{k}"])
        for k in keys
    ]
    # Each line is one whole curl command (the token only in argv of our own children).
    subprocess.run(
        ["xargs", "-P", str(PARALLEL), "-d", "\n", "-n", "1", "sh", "-c"],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
    )
    return time.perf_counter() - t0, _children_cpu() - cpu0


def run_ferry(zen: ZenodoProcess, directory: Path, wd: Path, name: str, trial: int) -> Any:
    state = directory / ".ferry"
    if name == "ferry-cold":
        shutil.rmtree(state, ignore_errors=True)
    else:  # keep the md5 cache, drop the ledger: a new deposition, files already hashed
        for p in state.glob("push-zen.sqlite*"):
            p.unlink()
        if not (state / "push-md5.json").exists():
            raise RuntimeError("ferry-warm needs the md5 cache of an earlier push (run ferry-cold first)")
    cfg = write_config(wd / f"ferry-{name}-{trial}.toml", zen)
    cmd = [FERRY, "--config", str(cfg), "-q", "push", str(directory), "--target", "zen", *FERRY_META]
    cmd += ["--jobs", str(PARALLEL)]
    m = measure(cmd)
    if m.rc != 0:
        raise RuntimeError(f"ferry push failed ({m.rc}):\n{tail(m.stderr)}")
    return m


def check(zen: ZenodoProcess, md5s: dict[str, str]) -> str:
    """One deposition holding every file with the local md5, or raise."""
    items = zen.admin("state")["items"]
    if len(items) != 1:
        raise RuntimeError(f"expected one deposition, the server holds {len(items)}")
    files = items[0]["files"]
    wrong = sorted(k for k, md5 in md5s.items() if (files.get(k) or {}).get("md5") != md5)
    if wrong or len(files) != len(md5s):
        raise RuntimeError(f"deposition differs from the directory: {len(files)} files, wrong {wrong[:5]}")
    return f"1 deposition, {len(files)} files, md5s equal"


def run_trial(name: str, wd: Path, directory: Path, md5s: dict[str, str], trial: int) -> dict[str, Any]:
    sync()
    size = sum((directory / k).stat().st_size for k in md5s)
    with ZenodoProcess(wd / f"zen-{name}-{trial}") as zen:
        pid = zen.proc.pid if zen.proc else None
        srv0, busy0 = proc_cpu(pid), machine_cpu()
        harness0 = resource.getrusage(resource.RUSAGE_SELF)
        row: dict[str, Any] = {"name": name, "trial": trial, "bytes": size, "files": len(md5s)}
        if name == "curl":
            row["seconds"], row["cpu"] = run_curl(zen, directory, wd)
            row["rss_mb"] = 0.0
        else:
            m = run_ferry(zen, directory, wd, name, trial)
            row.update(seconds=m.wall, cpu=m.cpu, rss_mb=m.maxrss_mb)
        row["cpu_server"] = proc_cpu(pid) - srv0
        h1 = resource.getrusage(resource.RUSAGE_SELF)
        harness = h1.ru_utime + h1.ru_stime - harness0.ru_utime - harness0.ru_stime
        row["cpu_other"] = machine_cpu() - busy0 - row["cpu"] - row["cpu_server"] - harness
        log = zen.admin("requests")
        row["requests"] = len(log)
        row["bucket_puts"] = sum(1 for r in log if r["method"] == "PUT" and r["path"].startswith("/api/files/"))
        row["kinds"] = _kinds(log)
        row["server"] = check(zen, md5s)
    row["mb_s"] = row["bytes"] / row["seconds"] / 1e6
    print(
        f"{name:10s} #{trial}: {row['seconds']:.2f} s, {row['mb_s']:.0f} MB/s, {row['requests']} requests "
        f"({row['bucket_puts']} bucket PUTs), CPU {row['cpu']:.2f} s (server {row['cpu_server']:.2f} s, other "
        f"{row['cpu_other']:.2f} s); server: {row['server']}",
        file=sys.stderr,
    )
    return row


def _kinds(log: list[dict[str, Any]]) -> dict[str, int]:
    """Requests by method and path shape (ids replaced), for the per-deposition constant."""
    out: dict[str, int] = {}
    for r in log:
        parts = ["{id}" if p.isdigit() else p for p in r["path"].split("/")]
        if parts[2:3] == ["files"]:  # /api/files/<bucket>/<key>
            parts = [*parts[:3], "{bucket}", "{key}"]
        kind = f"{r['method']} {'/'.join(parts)}"
        out[kind] = out.get(kind, 0) + 1
    return out


def report(facts: dict[str, Any], rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def med(name: str, key: str) -> float:
        return median([r[key] for r in rows if r["name"] == name])

    out = [
        f"Command: `{' '.join(['.venv/bin/python', 'bench/bench_push.py', *sys.argv[1:]])}` (under the bench lock)  ",
        f"Machine: {machine_line(facts)}  ",
        f"Load average (1, 5, 15 min) before: {facts['load_before']}; after: {facts['load_after']}  ",
        f"Data: {args.count} x {args.mib} MiB. Medians of {args.repeat} interleaved trials, "
        "each against a fresh Zenodo stand-in process.",
        "",
        "| contender | wall s | MB/s | vs curl (wall) | requests | per file (constant) | CPU s client | "
        "CPU s server | ferry peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    curl_s = med("curl", "seconds") if any(r["name"] == "curl" for r in rows) else float("nan")
    for name in CONTENDERS:
        if not any(r["name"] == name for r in rows):
            continue
        s, rate, req, puts = med(name, "seconds"), med(name, "mb_s"), med(name, "requests"), med(name, "bucket_puts")
        files = args.count
        rss = max(r["rss_mb"] for r in rows if r["name"] == name)
        out.append(
            f"| {name} | {s:.2f} | {rate:.0f} | **{curl_s / s:.2f}x** | {req:.0f} | {puts / files:.1f} "
            f"(+{req - puts:.0f}) | {med(name, 'cpu'):.2f} | {med(name, 'cpu_server'):.2f} | "
            f"{rss:.0f} |"
            if name != "curl"
            else f"| curl | {s:.2f} | {rate:.0f} | 1.00x | {req:.0f} | {puts / files:.1f} (+{req - puts:.0f}) | "
            f"{med(name, 'cpu'):.2f} | {med(name, 'cpu_server'):.2f} | - |"
        )
    out += ["", "Trials (wall s; other CPU s):"]
    for name in CONTENDERS:
        trials = [r for r in rows if r["name"] == name]
        if trials:
            out.append(f"- {name}: " + ", ".join(f"{r['seconds']:.2f} ({r['cpu_other']:.1f})" for r in trials))
    out += ["", "Requests by kind, last trial of each:"]
    for name in CONTENDERS:
        trials = [r for r in rows if r["name"] == name]
        if trials:
            kinds = ", ".join(f"{k}: {v}" for k, v in sorted(trials[-1]["kinds"].items()))
            out.append(f"- {name}: {kinds}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--count", type=int, default=100, help="number of files (default 100)")
    ap.add_argument("--mib", type=int, default=10, help="size of each file in MiB (default 10)")
    ap.add_argument("--only", default=",".join(CONTENDERS), help=f"comma-separated: {', '.join(CONTENDERS)}")
    ap.add_argument("--json", default="/tmp/ferry-bench-push.json", help="raw rows written here")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (/tmp/ferry-bench-push-*)")
    args = ap.parse_args()
    wanted = [n for n in args.only.split(",") if n]
    unknown = sorted(set(wanted) - set(CONTENDERS))
    if unknown:
        ap.error(f"unknown contender(s) {', '.join(unknown)}")
    if "ferry-warm" in wanted and "ferry-cold" in wanted:  # warm needs cold's md5 cache
        wanted = [n for n in wanted if n != "ferry-warm"] + ["ferry-warm"]
    facts = machine()
    facts["load_before"] = loadavg3()
    wd = workdir("push")
    try:
        directory = wd / "out"
        print(f"work dir {wd}; writing {args.count} x {args.mib} MiB...", file=sys.stderr)
        md5s = make_files(directory, args.count, args.mib * MiB)
        warm(directory)
        rows = []
        for trial in range(1, args.repeat + 1):
            # Who goes first alternates: curl first on odd trials, last on even ones.
            order = wanted if trial % 2 else [n for n in wanted if n != "curl"] + [n for n in wanted if n == "curl"]
            for name in order:
                rows.append(run_trial(name, wd, directory, md5s, trial))
        facts["load_after"] = loadavg3()
        Path(args.json).write_text(json.dumps({"machine": facts, "rows": rows}, indent=1))
        print(report(facts, rows, args))
    finally:
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
