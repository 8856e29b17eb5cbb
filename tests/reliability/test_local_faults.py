"""Local faults (issue 16, section 4): a ``.part`` with holes, a verified file corrupted later.

The second: a file verified at download, then corrupted in place with its size and mtime
kept, is trusted by the manifest and sent; the target's checksum disagrees. That is the
local copy's fault, said so with the fix (``--verify-existing``), and not re-sent.

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
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from download.base import ChunkSink
from download.disk import part_path
from download.engine import Downloader
from download.manifest import load_manifest
from download.part_mark import mark_path, read_mark
from download.transport import Transport
from ferry.cli import main
from ferry.core.config import Limits
from ferry.core.model import FileEntry, Record
from tests.bulk_support import BASE, make_record, stats_rows, synthetic_source, target_problems, write_config
from tests.fixtures_repository import RepositoryHandle
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


def _edge_record(recid: str, sizes: list[int]) -> dict[str, Any]:
    files = [
        {"uri": f"root://eospublic.cern.ch/{BASE}/{recid}/f{j:03d}.dat", "size": s, "checksum": ""}
        for j, s in enumerate(sizes)
    ]
    return make_record(recid, files, ["Collision"])


def test_a_local_file_corrupted_after_verification_is_a_local_problem(
    tmp_path: Path, repository_factory: Callable[..., RepositoryHandle], capsys: pytest.CaptureFixture[str]
) -> None:
    recid = "975301"
    repo = repository_factory()
    with synthetic_source([_edge_record(recid, [50_000, 60_000])]) as src:
        config = write_config(tmp_path, src, repo)
        dest = tmp_path / "data"
        assert main(["--config", str(config), "download", recid, "--dest", str(dest)]) == 0
        # Corrupted in place after it was verified: one byte flipped, size and mtime kept.
        bad = dest / recid / "f000.dat"
        st = bad.stat()
        data = bytearray(bad.read_bytes())
        data[100] ^= 0xFF
        bad.write_bytes(bytes(data))
        os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
        capsys.readouterr()
        stats = tmp_path / "stats"
        upload = ["--config", str(config), "upload", recid, "--target", "sandbox", "--dest", str(dest)]
        assert main([*upload, "--stats-dir", str(stats)]) == 1
        err = capsys.readouterr().err
        line = next(ln for ln in err.splitlines() if "f000.dat" in ln and "local" in ln)
        assert f"record {recid}" in line and "changed after it was verified" in line
        assert "not the target's" in line and f"ferry download {recid} --dest {dest} --verify-existing" in line
        assert f"md5:{hashlib.md5(bytes(data)).hexdigest()}" in line  # what it is now
        assert f"md5:{src.source_md5(recid)['f000.dat']}" in line  # what was verified
        # Not re-sent: the same bytes would fail the same way.
        puts = [r for r in stats_rows(stats) if r["stage"] == "upload" and r["file"] == "f000.dat"]
        assert [r["attempts"] for r in puts if r["status"] == "failed"] == [1]

        # The fix named works: the copy is fetched again, the upload then completes.
        assert main(["--config", str(config), "download", recid, "--dest", str(dest), "--verify-existing"]) == 0
        assert main(upload) == 0, capsys.readouterr().err
        assert target_problems(repo, src, dest, [recid]) == []
