"""Run the benchmarks one after another, each under the bench lock (``make bench``).

    .venv/bin/python bench/run.py [--only zip,upload] [--list] [-- EXTRA ARGS FOR EACH]

Every benchmark is its own script with its own ``--help``; this runner only holds
``/tmp/ferry-bench.lock`` around each (so two sessions never measure at the same time)
and prints each one's report. Results go into ``docs/benchmarks.md`` by hand, with the
command and the peer measured in the same run: a figure is quoted only from a run.
"""

from __future__ import annotations

import argparse
import fcntl
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK = Path("/tmp/ferry-bench.lock")
# In the order a reader of docs/benchmarks.md meets them; the long ones last.
BENCHES = ("aiofiles", "zip", "download", "upload", "bulk", "cluster", "push", "s3", "archive")


def available() -> list[str]:
    return [name for name in BENCHES if (HERE / f"bench_{name}.py").exists()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated names (default: all); see --list")
    ap.add_argument("--list", action="store_true", help="print the benchmark names and stop")
    ap.add_argument("extra", nargs="*", help="arguments passed to every benchmark (after --)")
    args = ap.parse_args()
    names = available()
    if args.list:
        print("\n".join(names))
        return 0
    chosen = [n for n in args.only.split(",") if n] or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        print(f"bench: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        cmd = [sys.executable, str(HERE / f"bench_{name}.py"), *args.extra]
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        with LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # waits for any other benchmark on this machine
            started = time.monotonic()
            code = subprocess.call(cmd)
        print(f"== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
