"""The "bare fetch" of bench_floors.py: every object under a prefix through ferry's own
S3Client (aiobotocore), ``IN_FLIGHT`` at a time, largest first, bytes counted and dropped:
no hashing, no writing. A process of its own, importing only the client, so its wall time
(start-up included) is the least a download built on that client can take.

    .venv/bin/python bench/bare_fetch.py BUCKET PREFIX IN_FLIGHT
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from upload.targets.s3_client import S3Client, S3Settings


async def bare_fetch(bucket: str, prefix: str, in_flight: int) -> None:
    client = await S3Client.open(S3Settings())
    try:
        objects = sorted([o async for o in client.list_objects(bucket, prefix)], key=lambda o: -o.size)
        gate = asyncio.Semaphore(in_flight)

        async def one(key: str) -> int:
            async with gate:
                n = 0
                async for data in client.read(bucket, key):
                    n += len(data)
                return n

        got = sum(await asyncio.gather(*(one(o.key) for o in objects)))
        if got != sum(o.size for o in objects):
            raise SystemExit(f"fetched {got} bytes, listed {sum(o.size for o in objects)}")
    finally:
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(bare_fetch(sys.argv[1], sys.argv[2], int(sys.argv[3])))
