"""Benchmark: zipping a record (stored) vs ``cp -r`` of the same data, in the same run.

    .venv/bin/python bench/bench_zip.py [--dir /tmp/bench_zip] [--repeat 3] [--sets small,large]

Sets: ``small`` = 1,000 x 1 MiB, ``large`` = 2 x 1 GiB (random bytes, generated once).
Cache: WARM for both. Before every timed run the sources are read once (so both read from
the page cache), and ``sync`` flushes earlier runs' dirty pages so writeback of one run does
not slow the next. Neither cp nor the zip stage fsyncs (the zip stage only fsyncs with
``--delete-originals``). The zip time is the whole ``zip_record`` stage: decide, write the
bundle, re-read it right behind the writer to check every entry's CRC32, bundle manifest,
state saved (no md5 of the bundle: since 2026-11-21 the upload computes it while sending);
the worker process pool is started before timing, as in the pipeline. Prints a Markdown
table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from download.manifest import ManifestEntry, load_manifest, manifest_path
from upload.zip.policy import ZipPolicy
from upload.zip.zipper import zip_executor, zip_record

MiB = 1024 * 1024
SETS = {"small": (1000, MiB), "large": (2, 1024 * MiB)}


def generate(rec: Path, count: int, size: int) -> None:
    """Random-looking files (a random block, varied per chunk) with a download manifest."""
    if manifest_path(rec).exists():
        return
    rec.mkdir(parents=True, exist_ok=True)
    block = os.urandom(16 * MiB)
    manifest = load_manifest(rec, rec.name)
    for i in range(count):
        key = f"data/file_{i:05d}.bin"
        path = rec / key
        path.parent.mkdir(parents=True, exist_ok=True)
        md5, adler, left, n = hashlib.md5(), 1, size, 0
        with open(path, "wb") as fh:
            while left > 0:
                part = min(left, len(block))
                chunk = (i * 7919 + n).to_bytes(8, "little") + block[8:part]
                fh.write(chunk)
                md5.update(chunk)
                adler = zlib.adler32(chunk, adler)
                left -= part
                n += 1
        st = path.stat()
        manifest.put(
            ManifestEntry(key, st.st_size, st.st_mtime_ns, {"md5": md5.hexdigest(), "adler32": f"{adler:08x}"}, "x")
        )
    manifest.save()


def warm(rec: Path) -> None:
    """Read every source once so both contenders start from the same warm page cache."""
    for path in rec.rglob("*"):
        if path.is_file() and ".ferry" not in path.parts:
            with open(path, "rb", buffering=0) as fh:
                while fh.read(8 * MiB):
                    pass
    subprocess.run(["sync"], check=True)


def reset(rec: Path) -> None:
    for path in rec.glob(f"{rec.name}_bundle*"):
        path.unlink()
    manifest = load_manifest(rec, rec.name)
    for key in [k for k, e in manifest.entries.items() if e.source_uri is None]:
        manifest.drop(key)
    manifest.extra.pop("zip", None)
    manifest.save()


def settle(rec: Path) -> None:
    """Remove the last run's bundles, flush dirty pages, warm the sources."""
    reset(rec)
    subprocess.run(["sync"], check=True)
    warm(rec)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _proc_cpu(pid: int) -> float:
    """utime + stime of a live process (the zip worker), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_cp(rec: Path, out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``cp -r``."""
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(["sync"], check=True)
    warm(rec)
    c0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(["cp", "-r", str(rec), str(out)], check=True)
    dt, cpu = time.perf_counter() - t0, _children_cpu() - c0
    shutil.rmtree(out)
    return dt, cpu


async def time_zip(rec: Path, pool: object, worker: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of worker + this process) of the zip stage."""
    settle(rec)
    c0, w0, t0 = time.process_time(), _proc_cpu(worker), time.perf_counter()
    result = await zip_record(rec, rec.name, policy=ZipPolicy(force=True), executor=pool)  # type: ignore[arg-type]
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0 + _proc_cpu(worker) - w0
    assert result.zipped and result.bundles and result.worker_pids == {worker}, result
    return dt, cpu


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/bench_zip")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sets", default="small,large")
    args = ap.parse_args()
    root = Path(args.dir)
    pool = zip_executor(1)
    worker = await asyncio.get_running_loop().run_in_executor(pool, os.getpid)  # started before timing
    rows = []
    for name in args.sets.split(","):
        count, size = SETS[name]
        rec = root / f"{name}"
        generate(rec, count, size)
        total = count * size
        cps, zips = [], []
        for _ in range(args.repeat):  # interleaved, so drift and neighbours' load hit both alike
            cps.append(time_cp(rec, root / f"{name}_cp"))
            zips.append(await time_zip(rec, pool, worker))
        rows.append((name, count, size, total, cps, zips))
        print(f"{name}: cp (wall, cpu) {_r(cps)}; zip {_r(zips)}", file=sys.stderr)
        reset(rec)
    pool.shutdown()
    print(
        "| set | cp -r wall median (best) | zip wall median (best) | zip/cp throughput median (best) | CPU s cp / zip |"
    )
    print("|---|---|---|---|---|")
    for _name, count, size, total, cps, zips in rows:
        label = f"{count} x {size // MiB} MiB" if size < 1024 * MiB else f"{count} x {size // (1024 * MiB)} GiB"
        cw, zw = [w for w, _ in cps], [w for w, _ in zips]
        cm, zm, cb, zb = statistics.median(cw), statistics.median(zw), min(cw), min(zw)
        print(
            f"| {label} | {cm:.2f} s = {total / cm / MiB:.0f} MiB/s ({total / cb / MiB:.0f}) "
            f"| {zm:.2f} s = {total / zm / MiB:.0f} MiB/s ({total / zb / MiB:.0f}) "
            f"| {cm / zm:.2f}x ({cb / zb:.2f}x) "
            f"| {statistics.median(c for _, c in cps):.2f} / {statistics.median(c for _, c in zips):.2f} |"
        )


def _r(pairs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(round(a, 2), round(b, 2)) for a, b in pairs]


if __name__ == "__main__":
    asyncio.run(main())
