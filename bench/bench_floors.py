"""Where the S3 goals of issues 12 and 13 meet this machine's floor, measured in one run.

    flock /tmp/ferry-bench.lock .venv/bin/python bench/bench_floors.py [--trials 3] [--small N,BYTES,...]

Three questions, each answered against the peer in the same run, on one SeaweedFS
(``weed server -s3``, started as tests/fixtures_s3.py starts it) on the same 2 cores:

1. Download (issue 13, goal >= 1.0x ``rclone copy --checksum --transfers 4``): how long
   does aiobotocore (``bench/bare_fetch.py``: ferry's own ``S3Client``, 4 objects in
   flight, largest first) take to fetch the revision's 1,002 objects when it neither hashes nor writes a
   byte? That process, start-up included ("bare fetch"), is the least any download built
   on it can take; it runs beside rclone's complete download and ferry's.
2. Mirror (issue 12, goal >= 1.0x the bare ``curl | aws s3 cp -`` pipe): ``latest/`` must
   be written by server-side copy after the version is verified, so the copy's time is
   added to any mirror. How long does SeaweedFS take to copy a 2 GiB object (one
   CopyObject; and UploadPartCopy in 2, 4 and 8 parallel parts)?
3. The digests the goals require (md5 on every S3 byte, sha256 for the manifest) on one
   core, as Python's hashlib (OpenSSL) runs them.

Prints a Markdown report for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench_archive import KiB, ferry_env, make_tree, rclone_env
from benchlib import FERRY, PY, MiB, loadavg3, machine, machine_line, measure, median, sync, workdir

from tests.fixtures_s3 import run_seaweedfs

GiB = 1024 * MiB
BARE = Path(__file__).with_name("bare_fetch.py")


async def copies(bucket: str, size: int) -> dict[str, float]:
    """A ``size``-byte object, then its server-side copies, timed (seconds)."""
    from upload.targets.s3_client import S3Client, S3Settings

    client = await S3Client.open(S3Settings(read_timeout=900))
    raw = client.raw
    src = "floors/source"
    block = 64 * MiB
    up = await raw.create_multipart_upload(Bucket=bucket, Key=src)
    parts: list[Any] = []
    for i in range(size // block):
        body = os.urandom(block)
        r = await raw.upload_part(Bucket=bucket, Key=src, UploadId=up["UploadId"], PartNumber=i + 1, Body=body)
        parts.append({"PartNumber": i + 1, "ETag": r["ETag"]})
    await raw.complete_multipart_upload(
        Bucket=bucket, Key=src, UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )
    out: dict[str, float] = {}
    try:
        start = time.perf_counter()
        await raw.copy_object(Bucket=bucket, Key="floors/copy", CopySource={"Bucket": bucket, "Key": src})
        out["CopyObject"] = time.perf_counter() - start
        for n in (2, 4, 8):
            out[f"UploadPartCopy x{n}"] = await _part_copy(raw, bucket, src, f"floors/parts{n}", size, n)
    finally:
        await client.aclose()
    return out


async def _part_copy(raw: object, bucket: str, src: str, dst: str, size: int, n: int) -> float:
    start = time.perf_counter()
    up = await raw.create_multipart_upload(Bucket=bucket, Key=dst)  # type: ignore[attr-defined]
    each = -(-size // n)

    async def part(i: int) -> dict[str, object]:
        first, last = i * each, min(size, (i + 1) * each) - 1
        r = await raw.upload_part_copy(  # type: ignore[attr-defined]
            Bucket=bucket,
            Key=dst,
            UploadId=up["UploadId"],
            PartNumber=i + 1,
            CopySource={"Bucket": bucket, "Key": src},
            CopySourceRange=f"bytes={first}-{last}",
        )
        return {"PartNumber": i + 1, "ETag": r["CopyPartResult"]["ETag"]}

    done = await asyncio.gather(*(part(i) for i in range(n)))
    await raw.complete_multipart_upload(  # type: ignore[attr-defined]
        Bucket=bucket, Key=dst, UploadId=up["UploadId"], MultipartUpload={"Parts": list(done)}
    )
    return time.perf_counter() - start


def digest_speeds() -> dict[str, float]:
    """MB/s of md5 and sha256 on one core over a 256 MiB buffer (hashlib: OpenSSL)."""
    data = os.urandom(256 * MiB)
    out = {}
    for name in ("md5", "sha256"):
        start = time.perf_counter()
        hashlib.new(name, data).digest()
        out[name] = len(data) / 1e6 / (time.perf_counter() - start)
    return out


def timed(label: str, cmd: list[str], env: dict[str, str], times: dict[str, list[float]]) -> None:
    sync()
    m = measure(cmd, env=env)
    if m.rc != 0:
        raise SystemExit(f"{label} failed (exit {m.rc}): {' '.join(cmd)}\n{m.stderr[-3000:]}")
    times.setdefault(label, []).append(m.wall)
    times.setdefault(f"{label} cpu", []).append(m.cpu)
    print(f"  {label}: {m.wall:.2f} s (cpu {m.cpu:.1f} s)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--small", default="", help="COUNT,BYTES[,COUNT,BYTES...] instead of 1000x100KiB + 2x500MiB")
    ap.add_argument("--copy-gib", type=int, default=2, help="size of the object copied server-side (GiB)")
    args = ap.parse_args()
    groups = [(1000, 100 * KiB), (2, 500 * MiB)]
    if args.small:
        nums = [int(x) for x in args.small.split(",")]
        groups = list(zip(nums[::2], nums[1::2], strict=True))
    rclone = shutil.which("rclone")
    if rclone is None:
        raise SystemExit("no rclone: `make setup` installs it (apt-get install -y rclone)")
    facts = machine()
    work = workdir("floors")
    times: dict[str, list[float]] = {}
    try:
        tree = work / "tree"
        files, total = make_tree(tree, groups)
        (work / "weed").mkdir()
        with run_seaweedfs(work / "weed") as server:
            bucket = server.make_bucket()
            fenv = ferry_env(server.env())
            renv = rclone_env(server.endpoint_url, server.admin.access_key, server.admin.secret_key)
            up = [FERRY, "-q", "archive", "upload", "set", "001", str(tree), "--to", f"s3://{bucket}/ferry"]
            subprocess.run(up, env=fenv, check=True, capture_output=True)
            excl = ["--exclude", "/djarchive-manifest.csv", "--exclude", "/.ferry/**"]
            subprocess.run([rclone, "copy", "-q", *excl, str(tree), f"weed:{bucket}/rclone"], env=renv, check=True)
            for t in range(1, args.trials + 1):
                print(f"trial {t} (load {loadavg3()})", flush=True)
                fdst, rdst = work / f"f{t}", work / f"r{t}"
                order = ["bare", "rclone", "ferry"] if t % 2 else ["ferry", "rclone", "bare"]
                for who in order:
                    if who == "bare":
                        cmd = [PY, str(BARE), bucket, "ferry/set/001/", "4"]
                        timed("bare fetch", cmd, fenv, times)
                    elif who == "rclone":
                        cmd = [
                            rclone,
                            "copy",
                            "--checksum",
                            "--transfers",
                            "4",
                            "-q",
                            f"weed:{bucket}/rclone",
                            str(rdst),
                        ]
                        timed("rclone download", cmd, renv, times)
                    else:
                        cmd = [
                            FERRY,
                            "-q",
                            "archive",
                            "download",
                            "set",
                            "001",
                            str(fdst),
                            "--from",
                            f"s3://{bucket}/ferry",
                        ]
                        timed("ferry download", [*cmd, "--jobs", "4"], fenv, times)
                shutil.rmtree(fdst)
                shutil.rmtree(rdst)
            os.environ.update(fenv)  # the copy runs in this process, on the same server
            copied = asyncio.run(copies(bucket, args.copy_gib * GiB))
        speeds = digest_speeds()
        report(facts, times, copied, speeds, files, total, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(
    facts: dict[str, object],
    times: dict[str, list[float]],
    copied: dict[str, float],
    speeds: dict[str, float],
    files: int,
    total: int,
    args: argparse.Namespace,
) -> None:
    med = {k: median(v) for k, v in times.items()}
    print()
    print(f"Machine: {machine_line(facts)}; load after the run {loadavg3()}")
    print(f"Tree: {files} files, {total / 1e6:.0f} MB; {args.trials} trials, medians")
    print()
    print("| run | wall (median) | CPU (median) | rclone time / this time |")
    print("|---|---|---|---|")
    for label in ("bare fetch", "ferry download", "rclone download"):
        ratio = med["rclone download"] / med[label]
        print(f"| {label} | {med[label]:.2f} s | {med[label + ' cpu']:.1f} s | {ratio:.2f}x |")
    print()
    for key in ("bare fetch", "ferry download", "rclone download"):
        print(f"- {key}: " + ", ".join(f"{v:.2f}" for v in times[key]) + " s")
    print()
    print(f"Server-side copy of a {args.copy_gib} GiB object on SeaweedFS:")
    for what, secs in copied.items():
        print(f"- {what}: {secs:.2f} s")
    print()
    print("One core, hashlib: " + ", ".join(f"{k} {v:.0f} MB/s" for k, v in speeds.items()))


if __name__ == "__main__":
    raise SystemExit(main())
