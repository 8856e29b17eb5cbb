"""Upload tuning found by bench/bench_upload.py: read-back polling and body chunk size."""

from __future__ import annotations

import hashlib
from pathlib import Path

from upload.targets.http import CHUNK, file_range
from upload.targets.invenio_files import checksum_poll_cap

GB = 10**9


def test_poll_cap_grows_with_size_within_bounds() -> None:
    caps = [checksum_poll_cap(n) for n in (0, 50 * 2**20, 2**30, 4 * GB, 10 * GB, 100 * GB)]
    assert caps == sorted(caps)  # never shorter for a bigger file
    assert caps[0] == 0.1 and caps[-1] == 2.0  # floor and ceiling
    # A 1 GiB file (~1.5 s of md5 on the sandbox) is read back at least every 0.3 s,
    # not at the old fixed 2 s ceiling.
    assert checksum_poll_cap(2**30) < 0.3


async def test_file_range_streams_bounded_chunks(tmp_path: Path) -> None:
    # Memory per upload stream is about two chunks: a chunk must stay small.
    data = bytes(range(256)) * (5 * 2**20 // 256 + 3)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    offset, count = 1000, len(data) - 2000
    sizes, md5 = [], hashlib.md5()
    async for chunk in file_range(path, offset, count)():
        sizes.append(len(chunk))
        md5.update(chunk)
    assert max(sizes) <= CHUNK <= 4 * 2**20
    assert sum(sizes) == count and md5.hexdigest() == hashlib.md5(data[offset : offset + count]).hexdigest()
