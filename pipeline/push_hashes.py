"""`ferry push`'s md5s of the directory's files, kept in ``DIR/.ferry/push-md5.json``.

A file's md5 is remembered by its path with its size and mtime, so a re-run of an unchanged
directory reads nothing to compare it with the target. Reading runs off the event loop, a
few files at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from ferry.core.atomic import atomic_write_bytes
from ferry.core.checksums import Checksum, hash_file
from pipeline.push_select import STATE_DIR, PushFile

CACHE_NAME = "push-md5.json"
MAX_READERS = 4  # files hashed at once: more only competes for the same disk


def _stamp(f: PushFile) -> str:
    return f"{f.size}:{f.mtime_ns}"


class Md5Cache:
    """The md5s of one directory's files, read from its cache file once."""

    def __init__(self, directory: Path, *, jobs: int, dry_run: bool) -> None:
        self.path = directory / STATE_DIR / CACHE_NAME
        self.jobs = jobs
        self.dry_run = dry_run  # a dry run reads files but writes no cache
        self._entries: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._entries is None:
            try:
                self._entries = orjson.loads(self.path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                self._entries = {}
        return self._entries

    async def hashes(self, files: list[PushFile], *, read: bool = True) -> dict[str, Checksum]:
        """md5 of ``files`` from the cache (by size and mtime), else (``read``) by reading them."""
        cache = self._load()
        gate = asyncio.Semaphore(max(1, min(self.jobs, MAX_READERS)))

        async def one(f: PushFile) -> tuple[str, str | None]:
            hit = cache.get(str(f.path))
            if isinstance(hit, list) and hit[0] == _stamp(f):
                return f.key, str(hit[1])
            if not read:
                return f.key, None
            async with gate:
                value = (await asyncio.to_thread(hash_file, str(f.path), ("md5",))).hexdigests()["md5"]
            cache[str(f.path)] = [_stamp(f), value]
            return f.key, value

        pairs = await asyncio.gather(*(one(f) for f in files))
        if not self.dry_run and read and files:
            await self._write(cache)
        return {k: Checksum("md5", v) for k, v in pairs if v is not None}

    async def learned(self, files: list[PushFile], hashes: Mapping[str, Checksum]) -> None:
        """Keep the md5s computed while sending, so the next push reads nothing to compare."""
        cache = self._entries if self._entries is not None else {}
        for f in files:
            if f.key in hashes:
                cache[str(f.path)] = [_stamp(f), hashes[f.key].value]
        await self._write(cache)

    async def _write(self, cache: Mapping[str, Any]) -> None:
        await asyncio.to_thread(atomic_write_bytes, self.path, orjson.dumps(cache))
