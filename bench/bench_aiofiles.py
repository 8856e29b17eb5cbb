"""aiofiles vs the thread-pool writes the pipeline uses, for one streamed file.

    flock /tmp/ferry-bench.lock .venv/bin/python bench/bench_aiofiles.py [--mib 1024] [--repeat 3] [--dir DIR]

Both write the same chunks (4 MiB, the download chunk size) to a new file and fsync it;
``threads`` hands each write to ``asyncio.to_thread`` (what download/sink.py and the
local target do), ``aiofiles`` awaits ``aiofiles.open(...).write``. The question is
whether aiofiles earns its place as a dependency (README: aiofiles).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

CHUNK = 4 * 1024 * 1024


async def with_threads(path: Path, chunks: int, data: bytes) -> None:
    fh = await asyncio.to_thread(open, path, "wb")
    try:
        for _ in range(chunks):
            await asyncio.to_thread(fh.write, data)
        await asyncio.to_thread(os.fsync, fh.fileno())
    finally:
        fh.close()


async def with_aiofiles(path: Path, chunks: int, data: bytes) -> None:
    import aiofiles

    async with aiofiles.open(path, "wb") as fh:
        for _ in range(chunks):
            await fh.write(data)
        await fh.flush()
        await asyncio.to_thread(os.fsync, fh.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    chunks = args.mib * 1024 * 1024 // CHUNK
    data = os.urandom(CHUNK)
    times: dict[str, list[float]] = {"threads": [], "aiofiles": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for _ in range(args.repeat):
            for name, fn in (("threads", with_threads), ("aiofiles", with_aiofiles)):
                path = Path(tmp) / f"{name}.bin"
                t0 = time.perf_counter()
                asyncio.run(fn(path, chunks, data))
                times[name].append(time.perf_counter() - t0)
                path.unlink()
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:9s} median {median:.3f} s  {args.mib / median:.0f} MiB/s",
            f"(runs: {', '.join(f'{v:.3f}' for v in values)})",
        )
    print(f"aiofiles / threads: {statistics.median(times['aiofiles']) / statistics.median(times['threads']):.2f}")


if __name__ == "__main__":
    main()
