"""The byte budget of S3 uploads (upload/targets/s3_budget.py): bytes held in parts are
bounded for all streams of a run together, counted in the code path (never timed).

Several streams go through one S3Target at once against a real server (moto and SeaweedFS
on 127.0.0.1). A counting wrapper around the source streams and the client's upload_part
tracks the bytes read from the sources and not yet answered for by the server: they never
pass the budget, although the streams' parts in flight alone would allow 8x as much."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ferry.core.checksums import Checksum
from ferry.core.config import Limits
from ferry.core.errors import ConfigError
from tests.fixtures_s3 import S3Server
from tests.test_s3_target import objects, s3_config, uploads
from upload.targets import make_target
from upload.targets.s3 import S3Target
from upload.targets.s3_budget import ByteBudget
from upload.targets.s3_upload import _body_and_md5

MiB = 1024 * 1024
PART = 5 * MiB  # s3_config's part_size


class Held:
    """Bytes read from the sources minus the bytes of parts done with (answered, failed or
    cancelled), per file."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.by_file: dict[str, int] = {}
        self.most = 0
        self.over: list[tuple[int, int]] = []  # (held, budget used) whenever held > used

    @property
    def now(self) -> int:
        return sum(self.by_file.values())

    def read(self, key: str, n: int) -> None:
        self.by_file[key] = self.by_file.get(key, 0) + n
        self.most = max(self.most, self.now)
        if self.now > self.budget.used:  # a part read before its bytes were reserved
            self.over.append((self.now, self.budget.used))

    def answered(self, object_key: str, n: int) -> None:
        key = object_key.split("/")[-2]  # pfx/<record>/<key>/content
        self.by_file[key] -= n

    def dropped(self, key: str, n: int) -> None:
        self.by_file[key] -= n  # a failed stream: the part it was filling is let go


def counted(
    key: str, data: bytes, held: Held, *, chunk: int = 1 * MiB, fail_at: int | None = None
) -> Callable[[], Any]:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(data), chunk):
            if fail_at is not None and i >= fail_at:
                held.dropped(key, fail_at % PART)
                raise ConnectionResetError("source cut")
            piece = data[i : i + chunk]
            held.read(key, len(piece))
            yield piece

    return gen


async def counting_target(target: S3Target) -> Held:
    held = Held(target.budget)
    client = await target.client()
    real = client.upload_part

    async def upload_part(*args: Any, **kwargs: Any) -> str:
        try:
            return await real(*args, **kwargs)
        finally:  # answered, failed or cancelled: the upload is done with these bytes
            held.answered(args[1], args[4].getbuffer().nbytes)  # (bucket, key, upload_id, number, body)

    client.upload_part = upload_part  # type: ignore[method-assign]
    return held


def md5(data: bytes) -> Checksum:
    return Checksum("md5", hashlib.md5(data).hexdigest())


@pytest.fixture
def make(s3_env: S3Server, s3_bucket: str) -> Callable[..., S3Target]:
    def build(**options: Any) -> S3Target:
        target = make_target(s3_config(s3_env, s3_bucket, **options), Limits(), token=None, limiter=None)
        assert isinstance(target, S3Target)
        return target

    return build


async def test_streams_share_one_byte_budget(make: Callable[..., S3Target], s3_env: S3Server, s3_bucket: str) -> None:
    # 5 MiB parts, 4 in flight per upload, 4 uploads at once: 80 MiB without a budget.
    target = make(bytes_in_flight=12 * MiB, parts_in_flight=4)
    try:
        held = await counting_target(target)
        blobs = {f"f{i}.bin": os.urandom(23 * MiB) for i in range(4)}
        rec = await target.create("700", {})
        got = await asyncio.gather(
            *(target.put_stream(rec, k, counted(k, b, held), len(b), md5(b)) for k, b in blobs.items())
        )
        assert all(f.matches(len(blobs[f.key]), md5(blobs[f.key])) for f in got)
        stored = objects(s3_env, s3_bucket)
        assert {k: stored[f"pfx/700/{k}/content"] for k in blobs} == {k: 23 * MiB for k in blobs}
        assert held.over == []  # every byte read was reserved first
        assert held.most <= target.budget.limit
        assert target.budget.peak == 10 * MiB  # two 5 MiB parts fit in 12 MiB, a third never did
        assert target.budget.used == 0 and held.now == 0
    finally:
        await target.aclose()


async def test_a_failed_stream_gives_its_bytes_back(
    make: Callable[..., S3Target], s3_env: S3Server, s3_bucket: str
) -> None:
    target = make(bytes_in_flight=10 * MiB, parts_in_flight=2)
    try:
        held = await counting_target(target)
        good, bad = os.urandom(17 * MiB), os.urandom(17 * MiB)
        rec = await target.create("701", {})
        results = await asyncio.gather(
            target.put_stream(rec, "bad.bin", counted("bad.bin", bad, held, fail_at=12 * MiB), len(bad), md5(bad)),
            target.put_stream(rec, "good.bin", counted("good.bin", good, held), len(good), md5(good)),
            return_exceptions=True,
        )
        assert isinstance(results[0], BaseException) and not isinstance(results[1], BaseException)
        assert target.budget.used == 0 and target.budget.peak <= 10 * MiB and held.over == []
        assert list(objects(s3_env, s3_bucket)) == ["pfx/701/good.bin/content"]
        assert uploads(s3_env, s3_bucket) == []  # the broken stream's upload was aborted
    finally:
        await target.aclose()


async def test_a_part_larger_than_the_budget_passes_alone() -> None:
    budget = ByteBudget(4)
    await budget.acquire(10)  # alone: let through, or a huge object could never be sent
    waiting = asyncio.create_task(budget.acquire(1))
    await asyncio.sleep(0)
    assert not waiting.done() and budget.used == 10
    budget.release(10)
    await waiting
    assert budget.used == 1 and budget.peak == 10
    with pytest.raises(RuntimeError):
        budget.release(2)


def test_bytes_in_flight_must_be_positive(s3_env: S3Server, s3_bucket: str) -> None:
    with pytest.raises(ConfigError, match=r"targets\.s3test\.bytes_in_flight"):
        make_target(s3_config(s3_env, s3_bucket, bytes_in_flight=0), Limits(), token=None, limiter=None)


def test_a_part_body_holds_one_copy_of_its_bytes() -> None:
    # aiohttp looks at a BytesIO body through getbuffer(); a BytesIO sharing bytes that
    # something else still holds copies them whole right there, on the event loop (the
    # BytesIO botocore wraps a bytes body in did: ~0.2 s per 24 MiB part, and one more
    # part's worth of memory per request in flight).
    size = 8 * 1024 * 1024
    data = os.urandom(size)
    pieces = [memoryview(data)[i : i + 1024 * 1024] for i in range(0, size, 1024 * 1024)]
    tracemalloc.start()
    try:
        body, digest = _body_and_md5(pieces)
        with body.getbuffer() as view:
            assert view.nbytes == size and bytes(view[-8:]) == data[-8:]
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digest == hashlib.md5(data).digest()
    assert peak < size * 1.25, f"{peak} bytes traced for a {size}-byte part: its bytes were copied twice"
