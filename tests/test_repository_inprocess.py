"""The in-process API of the sandbox repository (start_repository) and its request log."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from sandbox.repository import start_repository

OCTET = {"Content-Type": "application/octet-stream"}


async def test_start_repository_in_process_and_request_log(tmp_path: Path) -> None:
    running = await start_repository(tmp_path / "repo", tokens=["t1"], rate_per_minute=1000, latency_ms=50)
    try:
        assert running.url.startswith("http://127.0.0.1:") and running.token == "t1"
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer t1"}) as session:
            async with session.post(running.url + "/api/records", json={"metadata": {"recid": 5}}) as resp:
                assert resp.status == 201
                draft = await resp.json()
            assert draft["errors"]  # stock RDM records know no `recid`: reported, not refused
            keys = [{"key": f"f{i}"} for i in range(4)]
            async with session.post(draft["links"]["files"], json=keys) as resp:
                entries = (await resp.json())["entries"]

            async def put(entry: dict[str, object]) -> int:
                links = entry["links"]
                assert isinstance(links, dict)
                async with session.put(links["content"], data=b"x" * 1000, headers=OCTET) as resp:
                    return resp.status

            assert await asyncio.gather(*(put(e) for e in entries)) == [200] * 4
        running.configure(error_rate=0.25)
        assert running.repo.options.error_rate == 0.25
        assert running.state()["drafts"] == 1
    finally:
        await running.stop()
    rows = [json.loads(line) for line in running.request_log.read_text().splitlines()]
    puts = [r for r in rows if r["method"] == "PUT"]
    assert len(puts) == 4 and all(r["request_bytes"] == 1000 for r in puts)
    # the 50 ms latency keeps the four parallel PUTs in flight together
    assert max(r["in_flight"] for r in puts) >= 2
    assert max(r["bytes_in_flight"] for r in puts) >= 2000
