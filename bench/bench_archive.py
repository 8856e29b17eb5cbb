"""ferry archive on SeaweedFS vs rclone, and ferry manifest vs sha256sum (issue 13).

    flock /tmp/ferry-bench.lock .venv/bin/python bench/bench_archive.py [--trials 3] [--small N,BYTES,N,BYTES]

One revision, 1,000 x 100 KiB + 2 x 500 MiB of random bytes, on one SeaweedFS server
(``weed server -s3``, started as tests/fixtures_s3.py starts it, data in /tmp) on this
machine. Each trial, in alternating order (ferry first in odd trials, rclone first in
even ones):

- upload: ``ferry archive upload set N DIR --to s3://bucket/ferry-N --jobs 4`` from a tree
  with no manifest and no local state (so ferry hashes sha256 + md5 of every file, writes
  the manifest, sends, verifies and sends the manifest last) vs ``rclone copy --checksum
  --transfers 4 DIR weed:bucket/rclone-N`` (the manifest and ferry's state excluded);
- download of what each uploaded into a fresh folder (ferry: manifest-driven, sha256 while
  streaming; rclone: ``copy --checksum``, md5 checked by rclone);
- a re-run of each complete download (goal for ferry: < 5 % of its first download);
- ``ferry manifest DIR --rehash -o FILE`` vs ``sha256sum`` over the same files (one
  process, one core, as a user would run it; goal: ferry >= 1.5x on two cores).

The page cache holds the whole tree (1.1 GB of 23 GB) for every run of both tools, and
``sync`` runs between runs. Prints a Markdown report for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import FERRY, MiB, loadavg3, machine, machine_line, measure, median, sync, workdir

from tests.fixtures_s3 import REGION, run_seaweedfs

KiB = 1024
MANIFEST = "djarchive-manifest.csv"


def make_tree(root: Path, groups: list[tuple[int, int]]) -> tuple[int, int]:
    """Random files (incompressible, all different): ``groups`` of (count, size)."""
    rng = random.Random(13)
    files = total = 0
    for g, (count, size) in enumerate(groups):
        for i in range(count):
            path = root / f"g{g}" / f"d{i // 100:02d}" / f"f{i:05d}.dat"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as fh:
                left = size
                while left:
                    n = min(left, 8 * MiB)
                    fh.write(rng.randbytes(n))
                    left -= n
            files, total = files + 1, total + size
    return files, total


def clean_local_state(tree: Path) -> None:
    shutil.rmtree(tree / ".ferry", ignore_errors=True)
    (tree / MANIFEST).unlink(missing_ok=True)


def rclone_env(endpoint: str, access: str, secret: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    return {
        **base,
        "RCLONE_CONFIG": os.devnull,  # no user config: the remote is defined below only
        "RCLONE_CONFIG_WEED_TYPE": "s3",
        "RCLONE_CONFIG_WEED_PROVIDER": "SeaweedFS",
        "RCLONE_CONFIG_WEED_ACCESS_KEY_ID": access,
        "RCLONE_CONFIG_WEED_SECRET_ACCESS_KEY": secret,
        "RCLONE_CONFIG_WEED_ENDPOINT": endpoint,
        "RCLONE_CONFIG_WEED_REGION": REGION,
    }


def ferry_env(env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {
        **base,
        **env,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def run(label: str, cmd: list[str], env: dict[str, str] | None = None) -> float:
    sync()
    m = measure(cmd, env=env)
    if m.rc != 0:
        raise SystemExit(f"{label} failed (exit {m.rc}): {' '.join(cmd)}\n{m.stdout[-2000:]}\n{m.stderr[-3000:]}")
    print(f"  {label}: {m.wall:.2f} s (cpu {m.cpu:.1f} s, peak rss {m.maxrss_mb:.0f} MB)", flush=True)
    return m.wall


@dataclass
class _Bench:
    """One bench run's fixed parts, and the wall times of every run by what was run."""

    work: Path
    tree: Path
    bucket: str
    fenv: dict[str, str]
    renv: dict[str, str]
    rclone: str
    jobs: int
    times: dict[str, list[float]] = field(default_factory=dict)
    warm: bool = False  # also an upload with the manifest and local state of the cold one

    def add(self, key: str, value: float) -> None:
        self.times.setdefault(key, []).append(value)

    @property
    def ferry(self) -> list[str]:
        return [FERRY, "-q"]

    @property
    def rc_flags(self) -> list[str]:
        return ["--checksum", "--transfers", str(self.jobs), "-q"]


def _uploads(b: _Bench, t: int, order: list[str]) -> None:
    for who in order:
        if who == "ferry":
            clean_local_state(b.tree)
            cmd = [*b.ferry, "archive", "upload", "set", "001", str(b.tree), "--to", f"s3://{b.bucket}/ferry-{t}"]
            b.add("ferry upload", run("ferry upload", [*cmd, "--jobs", str(b.jobs)], b.fenv))
            if b.warm:
                # The same tree into a fresh prefix, its manifest and local state kept from
                # the cold upload: what the upload costs when no file must be hashed.
                cmd = [*b.ferry, "archive", "upload", "set", "001", str(b.tree), "--to", f"s3://{b.bucket}/warm-{t}"]
                b.add("ferry upload warm", run("ferry upload warm", [*cmd, "--jobs", str(b.jobs)], b.fenv))
        else:
            excl = ["--exclude", f"/{MANIFEST}", "--exclude", "/.ferry/**"]
            cmd = [b.rclone, "copy", *b.rc_flags, *excl, str(b.tree), f"weed:{b.bucket}/rclone-{t}"]
            b.add("rclone upload", run("rclone upload", cmd, b.renv))


def _downloads(b: _Bench, t: int, order: list[str]) -> None:
    """Each tool's download of what it uploaded, then a re-run of the complete download."""
    fdst, rdst = b.work / f"ferry-dst-{t}", b.work / f"rclone-dst-{t}"
    for who in order:
        if who == "ferry":
            cmd = [*b.ferry, "archive", "download", "set", "001", str(fdst), "--from", f"s3://{b.bucket}/ferry-{t}"]
            b.add("ferry download", run("ferry download", [*cmd, "--jobs", str(b.jobs)], b.fenv))
            b.add("ferry re-run", run("ferry download re-run", [*cmd, "--jobs", str(b.jobs)], b.fenv))
        else:
            cmd = [b.rclone, "copy", *b.rc_flags, f"weed:{b.bucket}/rclone-{t}", str(rdst)]
            b.add("rclone download", run("rclone download", cmd, b.renv))
            b.add("rclone re-run", run("rclone download re-run", cmd, b.renv))
    shutil.rmtree(fdst)
    shutil.rmtree(rdst)


def _hashing(b: _Bench, order: list[str]) -> None:
    """``ferry manifest --rehash`` vs ``sha256sum`` over the same files."""
    listing = b.work / "files.txt"
    with listing.open("w") as fh:
        for p in sorted(b.tree.rglob("*.dat")):
            fh.write(f"{p}\0")
    for who in order:
        if who == "ferry":
            cmd = [*b.ferry, "manifest", str(b.tree), "--rehash", "-o", str(b.work / "m.csv")]
            b.add("ferry manifest", run("ferry manifest", cmd))
        else:
            cmd = ["sh", "-c", f"xargs -0 sha256sum < {listing} > {b.work / 'sums.txt'}"]
            b.add("sha256sum", run("sha256sum", cmd))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=4, help="ferry --jobs and rclone --transfers (default 4)")
    ap.add_argument("--warm", action="store_true", help="also an upload that hashes nothing (state kept)")
    ap.add_argument("--small", default="", help="COUNT,BYTES[,COUNT,BYTES...] instead of 1000x100KiB + 2x500MiB")
    args = ap.parse_args()
    groups = [(1000, 100 * KiB), (2, 500 * MiB)]
    if args.small:
        nums = [int(x) for x in args.small.split(",")]
        groups = list(zip(nums[::2], nums[1::2], strict=True))
    facts = machine()
    work = workdir("archive")
    rclone = shutil.which("rclone")
    if rclone is None:
        raise SystemExit("no rclone: `make setup` installs it (apt-get install -y rclone)")
    version = subprocess.run([rclone, "version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    try:
        tree = work / "tree"
        files, total = make_tree(tree, groups)
        print(f"tree: {files} files, {total / 1e6:.0f} MB in {tree}", flush=True)
        (work / "weed").mkdir()
        with run_seaweedfs(work / "weed") as server:
            renv = rclone_env(server.endpoint_url, server.admin.access_key, server.admin.secret_key)
            b = _Bench(
                work, tree, server.make_bucket(), ferry_env(server.env()), renv, rclone, args.jobs, warm=args.warm
            )
            for t in range(1, args.trials + 1):
                print(f"trial {t} (load {loadavg3()})", flush=True)
                order = ["ferry", "rclone"] if t % 2 else ["rclone", "ferry"]
                _uploads(b, t, order)
                _downloads(b, t, order)
                _hashing(b, order)
        report(facts, b.times, files, total, version, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(
    facts: dict[str, object],
    times: dict[str, list[float]],
    files: int,
    total: int,
    version: str,
    args: argparse.Namespace,
) -> None:
    med = {k: median(v) for k, v in times.items()}
    mb = total / 1e6

    def row(what: str, ours: str, peer: str, goal: str) -> str:
        a, b = med[ours], med[peer]
        speed = f"{mb / a:.0f} / {mb / b:.0f} MB/s"
        return f"| {what} | {a:.2f} s | {b:.2f} s | {speed} | {b / a:.2f}x | {goal} |"

    print()
    print(f"Machine: {machine_line(facts)}; load after the run {loadavg3()}; peer: {version}")
    print(f"Tree: {files} files, {mb:.0f} MB; {args.trials} trials, medians; --jobs/--transfers {args.jobs}")
    print()
    print("| run | ferry | peer | ferry / peer throughput | peer time / ferry time | goal |")
    print("|---|---|---|---|---|---|")
    print(row("upload (ferry: hash + manifest + send + verify)", "ferry upload", "rclone upload", ">= 1.0x"))
    if "ferry upload warm" in med:
        print(row("upload, nothing hashed (manifest + state kept)", "ferry upload warm", "rclone upload", ""))
    print(row("download", "ferry download", "rclone download", ">= 1.0x"))
    print(row("manifest vs sha256sum", "ferry manifest", "sha256sum", ">= 1.5x"))
    rerun = med["ferry re-run"] / med["ferry download"] * 100
    print(
        f"| re-run of a complete download | {med['ferry re-run']:.2f} s | {med['rclone re-run']:.2f} s (rclone) "
        f"| | {rerun:.1f} % of ferry's first download | < 5 % |"
    )
    print()
    for key, values in times.items():
        print(f"- {key}: " + ", ".join(f"{v:.2f}" for v in values) + " s")


if __name__ == "__main__":
    raise SystemExit(main())
