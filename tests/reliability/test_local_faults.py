"""Local faults (issue 16, section 4): a ``.part`` with holes, a verified file corrupted later.

A kill while chunks of one file land out of order leaves a ``.part`` longer than what was
written in order (the gap reads back as zeros). The hole is made here by the real
download code: the fetcher's reads are let through except one, held as if in flight at the
kill, and the download task is then cancelled (no cleanup of the file: as after kill -9).
The file is listed WITHOUT any checksum: only the server's own adler32 can verify it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import zlib
from pathlib import Path

from download.base import ChunkSink
from download.disk import part_path
from download.engine import Downloader
from download.manifest import load_manifest
from download.part_mark import mark_path, read_mark
from download.transport import Transport
from ferry.core.config import Limits
from ferry.core.model import FileEntry, Record
from tests.fixtures_xrootd import SandboxSource

CHUNK = 4 * 1024 * 1024  # the default chunk size: the sidecar is rewritten once per chunk


class _HoldOne:
    """A sink passing every chunk through but the one at ``hold``, which never arrives."""

    def __init__(self, inner: ChunkSink, hold: int, landed: list[int]) -> None:
        self._inner, self._hold, self._landed = inner, hold, landed

    async def reserve(self, nbytes: int) -> None:
        await self._inner.reserve(nbytes)

    def release(self, nbytes: int) -> None:
        self._inner.release(nbytes)

    async def put(self, offset: int, data: bytes, *, reserved: int) -> None:
        if offset == self._hold:
            await asyncio.Event().wait()  # in flight when the process dies
        await self._inner.put(offset, data, reserved=reserved)
        self._landed.append(offset)


class _HoldingFetcher:
    scheme = "root"

    def __init__(self, inner: object, hold: int, landed: list[int]) -> None:
        self._inner, self._hold, self._landed = inner, hold, landed

    async def fetch(self, url: str, sink: ChunkSink, *, start: int, expected_size: int | None) -> int:
        size: int = await self._inner.fetch(  # type: ignore[attr-defined]
            url, _HoldOne(sink, self._hold, self._landed), start=start, expected_size=expected_size
        )
        return size

    async def source_checksum(self, url: str) -> str | None:
        text: str | None = await self._inner.source_checksum(url)  # type: ignore[attr-defined]
        return text

    async def close(self) -> None:
        return None


def _big(sandbox_source: SandboxSource) -> tuple[Record, bytes]:
    (entry,) = [f for f in sandbox_source.record("big")["files"] if f["uri"].endswith("big.dat")]
    served = (sandbox_source.root / entry["uri"].split("//", 2)[2].lstrip("/")).read_bytes()
    assert len(served) > 2 * CHUNK + 1  # three chunks: one can land after a hole
    no_checksum = FileEntry(key="big.dat", uri=entry["uri"], size=len(served))  # listed without any checksum
    return Record(recid="holes-1", metadata={"recid": "holes-1"}, files=(no_checksum,)), served


async def test_a_part_with_a_hole_resumes_only_from_the_prefix_written(
    sandbox_source: SandboxSource, tmp_path: Path
) -> None:
    record, served = _big(sandbox_source)
    limits = Limits(chunk_size=CHUNK, chunks_in_flight=8, retries=1, backoff_base=0.01, backoff_max=0.02)
    final = tmp_path / record.recid / "big.dat"
    part = part_path(final)

    landed: list[int] = []
    transport = Transport.create("root", limits=limits)
    transport.fetchers["root"] = _HoldingFetcher(transport.fetchers["root"], CHUNK, landed)  # type: ignore[assignment]
    async with Downloader(transport, limits=limits) as dl:
        task = asyncio.create_task(dl.download_record(record, tmp_path))
        for _ in range(2000):
            if sorted(landed) == [0, 2 * CHUNK]:
                break
            await asyncio.sleep(0.01)
        assert sorted(landed) == [0, 2 * CHUNK], landed
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # The state a kill leaves: the .part as long as the file, a hole of zeros at [CHUNK, 2 CHUNK).
    assert part.stat().st_size == len(served) and not final.exists()
    assert part.read_bytes()[CHUNK : CHUNK + 16] == bytes(16) != served[CHUNK : CHUNK + 16]
    assert read_mark(part) == CHUNK  # only the first chunk was written in order

    async with Downloader(Transport.create("root", limits=limits), limits=limits) as dl:
        result = await dl.download_record(record, tmp_path)
    assert result.ok, result.error_lines()
    (done,) = result.files
    # Resumed from the written prefix, not from the .part's length (which would not verify
    # and be fetched again from byte 0: "refetched", the whole file moved).
    assert done.action == "resumed" and done.bytes_transferred == len(served) - CHUNK
    assert final.read_bytes() == served
    assert done.checksums["adler32"] == f"{zlib.adler32(served):08x}"
    assert done.checksums["md5"] == hashlib.md5(served).hexdigest()
    (entry,) = load_manifest(final.parent).entries.values()
    assert entry.source_checksum == f"adler32:{zlib.adler32(served):08x}"  # the server's own
    assert not part.exists() and not mark_path(part).exists()


async def test_a_part_without_sidecar_is_verified_and_refetched_when_it_lies(
    sandbox_source: SandboxSource, tmp_path: Path
) -> None:
    """A ``.part`` an older version left (no sidecar), as long as the file, zeros inside:
    its length is believed only on probation; the file, listed without a checksum, fails
    the server's adler32, is fetched again from byte 0, and only the right bytes are kept."""
    record, served = _big(sandbox_source)
    limits = Limits(retries=1, backoff_base=0.01, backoff_max=0.02)
    final = tmp_path / record.recid / "big.dat"
    final.parent.mkdir(parents=True)
    holey = bytearray(served)
    holey[CHUNK : 2 * CHUNK] = bytes(CHUNK)
    part_path(final).write_bytes(bytes(holey))
    async with Downloader(Transport.create("root", limits=limits), limits=limits) as dl:
        result = await dl.download_record(record, tmp_path)
    assert result.ok, result.error_lines()
    (done,) = result.files
    assert done.action == "refetched" and final.read_bytes() == served
    assert not part_path(final).exists() and not mark_path(part_path(final)).exists()
