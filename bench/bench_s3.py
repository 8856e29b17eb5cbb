"""ferry's S3 transfers against SeaweedFS vs the AWS CLI and rclone, same run (issue 12).

    flock /tmp/ferry-bench.lock .venv/bin/python bench/bench_s3.py [--trials 3] [--quick]

One SeaweedFS server (``weed server -s3``, started as tests/fixtures_s3.py starts it, data
in /tmp) and one Zenodo stand-in (``python -m sandbox.zenodo``, its own process) on
127.0.0.1. Each trial, in alternating order (ferry first in odd trials), into a fresh
prefix per tool and trial (nothing is skipped):

- push of 200 x 5 MiB and of 1 x 2 GiB (``--quick``: 20 x 5 MiB, 1 x 256 MiB):
  ``ferry push DIR --target weed --jobs J`` (plain layout; ``DIR/.ferry`` removed first,
  so ferry hashes what needs hashing: its md5 is checked against the server's for every
  object) vs ``aws s3 cp --recursive DIR s3://...`` (awscli defaults: 8 MiB parts, 10
  requests at once; no check beyond its per-part Content-MD5) and ``rclone copy
  --transfers J`` (rclone defaults: single PUT below 200 MiB, 5 MiB parts x 4 above;
  rclone compares md5 with the ETag of single PUTs);
- mirror of one 2 GiB file (``--quick``: 256 MiB) of a published Zenodo-stand-in record:
  ``ferry mirror zenodo:RECID weed`` (streamed, no local disk, md5 checked before the
  object is completed, then ``latest/`` by a server-side copy, its manifest and the lock)
  vs the seed's method, ``curl -sSf URL | aws s3 cp - s3://.../RECID/KEY/content
  --expected-size N`` then ``aws s3 cp`` of that object to ``latest/`` (server-side), and
  vs the pipe alone ("curl|aws").
  Peak RSS of every run: ``/usr/bin/time -v`` and a /proc poll of the process tree.

Every contender's objects are counted and sized on the server after its run. The source
files are read once before the first trial (warm page cache for everyone); ``sync`` runs
between runs. Prints a Markdown report for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_archive import ferry_env, rclone_env
from bench_push import METADATA, ZenodoProcess, warm
from benchlib import FERRY, GiB, MiB, loadavg3, machine, machine_line, measure, median, sync, workdir

from tests.fixtures_s3 import S3Server, run_seaweedfs

RSS_GOAL_MB = 300


def make_files(directory: Path, count: int, size: int, seed: int) -> None:
    """Incompressible pseudo-random files, all different."""
    directory.mkdir(parents=True)
    rng = random.Random(seed)
    for i in range(count):
        with (directory / f"part{i:04d}.bin").open("wb") as fh:
            left = size
            while left:
                n = min(left, 8 * MiB)
                fh.write(rng.randbytes(n))
                left -= n


@dataclass
class Row:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)  # MB, the larger of time -v and the tree poll


@dataclass
class Bench:
    work: Path
    server: S3Server
    bucket: str
    jobs: int
    fenv: dict[str, str]
    renv: dict[str, str]
    aenv: dict[str, str]
    rows: dict[str, Row] = field(default_factory=dict)
    warm: bool = False  # also a ferry push with DIR/.ferry kept from the cold one

    def config(self, prefix: str, zenodo_url: str = "", layout: str = "plain") -> Path:
        path = self.work / f"ferry-{prefix.replace('/', '-')}.toml"
        source = f'[source.zenodo]\nurl = "{zenodo_url}"\n\n' if zenodo_url else ""
        path.write_text(
            f"{source}[targets.weed]\n"
            f'type = "s3"\nurl = "s3://{self.bucket}/{prefix}"\nlayout = "{layout}"\n'
            f'endpoint_url = "{self.server.endpoint_url}"\n'
        )
        return path

    def run(self, label: str, cmd: list[str], env: dict[str, str], check: Callable[[], str]) -> None:
        sync()
        m = measure(cmd, env=env)
        if m.rc != 0:
            raise SystemExit(f"{label} failed (exit {m.rc}): {' '.join(cmd)}\n{m.stdout[-2000:]}\n{m.stderr[-3000:]}")
        rss = max(m.maxrss_mb, m.tree_peak_mb)
        row = self.rows.setdefault(label, Row())
        row.wall.append(m.wall)
        row.cpu.append(m.cpu)
        row.rss.append(rss)
        print(f"  {label}: {m.wall:.2f} s (cpu {m.cpu:.1f} s, peak rss {rss:.0f} MB) {check()}", flush=True)

    def stored(self, prefix: str, files: int, size: int) -> Callable[[], str]:
        """A check run after the contender: every object there, each of its size."""

        def check() -> str:
            client = self.server.sync_client()
            sizes: list[int] = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix + "/"):
                sizes += [o["Size"] for o in page.get("Contents") or []]
            if len(sizes) != files or any(s != size for s in sizes):
                raise SystemExit(f"{prefix}: {len(sizes)} objects ({sorted(set(sizes))}), not {files} x {size}")
            return f"[{files} objects of {size} B on the server]"

        return check


def push_trial(b: Bench, name: str, tree: Path, files: int, size: int, t: int, order: list[str]) -> None:
    for who in order:
        prefix = f"{name}-{who}-{t}"
        dst = f"s3://{b.bucket}/{prefix}"
        check = b.stored(prefix, files, size)
        if who == "ferry":
            shutil.rmtree(tree / ".ferry", ignore_errors=True)
            cmd = [FERRY, "-q", "--config", str(b.config(prefix)), "push", str(tree), "--target", "weed"]
            b.run(f"{name} ferry", [*cmd, "--jobs", str(b.jobs), "--exclude", ".ferry/**"], b.fenv, check)
            if b.warm:
                # The same push into a fresh prefix with the md5s the cold run left in
                # DIR/.ferry: what the push costs when no file must be read to know its md5.
                wprefix = f"{name}-ferrywarm-{t}"
                cmd = [FERRY, "-q", "--config", str(b.config(wprefix)), "push", str(tree), "--target", "weed"]
                wcheck = b.stored(wprefix, files, size)
                b.run(f"{name} ferry-warm", [*cmd, "--jobs", str(b.jobs), "--exclude", ".ferry/**"], b.fenv, wcheck)
            shutil.rmtree(tree / ".ferry", ignore_errors=True)
        elif who == "aws":
            endpoint = ["--endpoint-url", b.server.endpoint_url]
            b.run(
                f"{name} aws", ["aws", "s3", "cp", "--recursive", "--quiet", *endpoint, str(tree), dst], b.aenv, check
            )
        else:
            cmd = ["rclone", "copy", "-q", "--transfers", str(b.jobs), str(tree), f"weed:{b.bucket}/{prefix}"]
            b.run(f"{name} rclone", cmd, b.renv, check)


def publish(zen: ZenodoProcess, path: Path) -> tuple[str, str]:
    """A published stand-in record holding ``path``: (record id, content URL)."""
    auth = ["-H", f"Authorization: Bearer {zen.token}"]
    create = ["curl", "-sSf", *auth, "-H", "Content-Type: application/json", "-X", "POST"]
    create += ["--data-binary", json.dumps({"metadata": METADATA}), f"{zen.url}/api/deposit/depositions"]
    dep = json.loads(subprocess.run(create, check=True, capture_output=True).stdout)
    put = ["curl", "-sSf", "-o", "/dev/null", *auth, "-T", str(path), f"{dep['links']['bucket']}/{path.name}"]
    subprocess.run(put, check=True)
    pub = ["curl", "-sSf", *auth, "-X", "POST", dep["links"]["publish"]]
    rec = json.loads(subprocess.run(pub, check=True, capture_output=True).stdout)
    recid = str(rec["id"])
    with urllib.request.urlopen(f"{zen.url}/api/records/{recid}", timeout=60) as resp:
        files = json.loads(resp.read())["files"]
    return recid, str(files[0]["links"]["self"])


def mirror_trial(b: Bench, zen: ZenodoProcess, recid: str, url: str, size: int, t: int, order: list[str]) -> None:
    for who in order:
        prefix = f"mirror-{who}-{t}"
        if who == "ferry":
            # The mirror's layout: <prefix>/<recid>/<key>/content, then latest/ (copied server-side).
            check = b.stored(f"{prefix}/{recid}", 1, size)
            config = b.config(prefix, zen.url, layout="versioned")
            b.run(
                "mirror ferry",
                [FERRY, "-q", "--config", str(config), "mirror", f"zenodo:{recid}", "weed"],
                b.fenv,
                check,
            )
        else:
            # The seed's method: the pipe into <record_id>/<key>/content, then latest/ by a
            # server-side copy (its README: "always refreshed via a server-side S3-to-S3
            # copy"); "curl|aws" is the pipe alone.
            check = b.stored(f"{prefix}/{recid}", 1, size)
            endpoint = f"--quiet --endpoint-url {b.server.endpoint_url}"
            dst = f"s3://{b.bucket}/{prefix}/{recid}/big.bin/content"
            pipe = f"curl -sSf '{url}' | aws s3 cp - {dst} {endpoint} --expected-size {size}"
            label = "mirror curl|aws" if who == "aws" else "mirror seed"
            if who == "seed":
                pipe += f" && aws s3 cp {dst} s3://{b.bucket}/{prefix}/latest/big.bin/content {endpoint}"
            b.run(label, ["bash", "-c", f"set -o pipefail; {pipe}"], b.aenv, check)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=8, help="ferry --jobs and rclone --transfers (default 8)")
    ap.add_argument("--quick", action="store_true", help="20 x 5 MiB, 256 MiB and a 256 MiB mirror, 1 trial")
    ap.add_argument("--warm", action="store_true", help="also a ferry push with the md5s the cold one left")
    ap.add_argument("--no-mirror", action="store_true", help="the pushes only")
    args = ap.parse_args()
    count, big = (20, 256 * MiB) if args.quick else (200, 2 * GiB)
    trials = 1 if args.quick else args.trials
    facts = machine()
    load_before = loadavg3()
    work = workdir("s3")
    try:
        small, large = work / "small", work / "large"
        make_files(small, count, 5 * MiB, 12)
        make_files(large, 1, big, 13)
        warm(small)
        warm(large)
        print(f"data: {count} x 5 MiB, 1 x {big // MiB} MiB in {work} (load {load_before})", flush=True)
        (work / "weed").mkdir()
        with run_seaweedfs(work / "weed") as server, ZenodoProcess(work / "zenodo") as zen:
            renv = rclone_env(server.endpoint_url, server.admin.access_key, server.admin.secret_key)
            aenv = ferry_env(server.env())
            b = Bench(
                work, server, server.make_bucket(), args.jobs, ferry_env(server.env()), renv, aenv, warm=args.warm
            )
            recid, url = publish(zen, large / "part0000.bin")
            print(f"zenodo record {recid}: {url}", flush=True)
            for t in range(1, trials + 1):
                order = ["ferry", "aws", "rclone"] if t % 2 else ["rclone", "aws", "ferry"]
                print(f"trial {t} (load {loadavg3()})", flush=True)
                push_trial(b, "small", small, count, 5 * MiB, t, order)
                push_trial(b, "large", large, 1, big, t, order)
                if not args.no_mirror:
                    mirror_trial(b, zen, recid, url, big, t, [o.replace("rclone", "seed") for o in order])
        report(facts, b.rows, count, big, trials, args.jobs, load_before)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(
    facts: dict[str, object], rows: dict[str, Row], count: int, big: int, trials: int, jobs: int, load0: str
) -> None:
    rclone = subprocess.run(["rclone", "version"], capture_output=True, text=True).stdout.split("\n")[0]
    aws = subprocess.run(["aws", "--version"], capture_output=True, text=True)
    med = {k: (median(r.wall), median(r.cpu), max(r.rss)) for k, r in rows.items()}
    sizes = {"small": count * 5 * MiB, "large": big, "mirror": big}
    print()
    print(f"Machine: {machine_line(facts)}; load before {load0}, after {loadavg3()}")
    print(f"Peers: {(aws.stdout or aws.stderr).strip()}; {rclone}. {trials} trial(s), medians; jobs/transfers {jobs}")
    print()
    print("| set | contender | wall median | MB/s | CPU s | peak RSS (max) | peer time / ferry time |")
    print("|---|---|---|---|---|---|---|")
    for key, (wall, cpu, rss) in med.items():
        kind = key.split()[0]
        ferry = med[f"{kind} ferry"][0]
        ratio = "" if key.endswith("ferry") else f"{wall / ferry:.2f}x"
        if key.endswith("ferry-warm"):  # compared with the peers, as the cold run is
            ratio = ", ".join(f"{p} {med[f'{kind} {p}'][0] / wall:.2f}x" for p in ("aws", "rclone"))
        mb = sizes[kind] / 1e6
        print(
            f"| {kind} | {key.split(' ', 1)[1]} | {wall:.2f} s | {mb / wall:.0f} | {cpu:.1f} | {rss:.0f} MB | {ratio} |"
        )
    print()
    worst = max(v[2] for k, v in med.items() if k.endswith("ferry"))
    print(f"ferry peak RSS (all runs): {worst:.0f} MB (goal < {RSS_GOAL_MB} MB)")
    for key, row in rows.items():
        walls = ", ".join(f"{w:.2f}" for w in row.wall)
        print(f"- {key}: wall {walls} s; rss " + ", ".join(f"{r:.0f}" for r in row.rss) + " MB")


if __name__ == "__main__":
    raise SystemExit(main())
