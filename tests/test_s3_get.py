"""Object reads on the S3 client's short GET path (upload/targets/s3_get.py), on real servers.

SeaweedFS checks every signature, so a read that succeeds there with the whole botocore
call taken away proves the short path signs as botocore does, odd key names included.
Failures go through moto behind the fault proxy: the short path hands every one of them
to the whole call, and only a 4xx the whole call does not repeat turns it off.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import pytest

from ferry.core.errors import TargetNotFound
from tests.fixtures_s3 import S3Proxy, S3Server
from upload.targets.s3_client import S3Client, S3Settings

KEYS = [
    "plain.bin",
    "with space/and+plus.bin",
    "ünïcode/данные.bin",
    "per%cent~tilde.bin",
    "a?b#c.bin",
    "deep/" * 20 + "x" * 100,
]


def _env(monkeypatch: pytest.MonkeyPatch, server: S3Server) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)


async def _read(client: S3Client, bucket: str, key: str, start: int = 0) -> bytes:
    return b"".join([chunk async for chunk in client.read(bucket, key, start=start, chunk=64 * 1024)])


def _no_whole_call(client: S3Client, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make botocore's get_object fail loudly, recording each key it was asked for."""
    asked: list[str] = []

    async def refused(**kw: Any) -> Any:
        asked.append(kw["Key"])
        raise AssertionError("the whole get_object was called")

    monkeypatch.setattr(client.raw, "get_object", refused)
    return asked


@pytest.fixture
async def seaweed_client(seaweed_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[S3Client]:
    _env(monkeypatch, seaweed_s3)
    client = await S3Client.open(S3Settings())
    try:
        yield client
    finally:
        await client.aclose()


async def test_reads_take_the_short_path_signed_as_botocore_signs(
    seaweed_s3: S3Server, seaweed_client: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = seaweed_s3.make_bucket()
    sync = seaweed_s3.sync_client()
    bodies = {key: os.urandom(100_000 + n) for n, key in enumerate(KEYS)}
    for key, body in bodies.items():
        sync.put_object(Bucket=bucket, Key=key, Body=body)
    asked = _no_whole_call(seaweed_client, monkeypatch)
    for key, body in bodies.items():
        assert await _read(seaweed_client, bucket, key) == body, key
        assert await _read(seaweed_client, bucket, key, start=99_999) == body[99_999:], key
    assert asked == [] and seaweed_client.short.usable(bucket)


async def test_a_missing_key_is_asked_again_by_the_whole_call_and_is_absent(
    seaweed_s3: S3Server, seaweed_client: S3Client
) -> None:
    bucket = seaweed_s3.make_bucket()
    with pytest.raises(TargetNotFound, match="nothing-here"):
        await _read(seaweed_client, bucket, "nothing-here")
    assert seaweed_client.short.usable(bucket)  # a 404 the whole call repeats says nothing of the path


@pytest.fixture
async def proxied(moto_s3: S3Server, s3_proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[S3Client]:
    _env(monkeypatch, moto_s3)
    client = await S3Client.open(S3Settings(endpoint_url=s3_proxy.endpoint_url))
    try:
        yield client
    finally:
        await client.aclose()


def _fail_first_get(status: int, code: str) -> Any:
    failed: list[str] = []

    def rule(method: str, path: str) -> tuple[int, str] | None:
        if method == "GET" and "list-type" not in path and not failed:
            failed.append(path)
            return status, code
        return None

    return rule, failed


@pytest.mark.parametrize(
    ("status", "code", "stays_on"),
    [(503, "ServiceUnavailable", True), (403, "SignatureDoesNotMatch", False)],
    ids=["5xx: the server's, the path stays on", "a 4xx the whole call does not get: the path goes off"],
)
async def test_a_failed_short_get_is_asked_again_by_the_whole_call(
    moto_s3: S3Server, s3_proxy: S3Proxy, proxied: S3Client, status: int, code: str, stays_on: bool
) -> None:
    bucket = moto_s3.make_bucket()
    moto_s3.sync_client().put_object(Bucket=bucket, Key="k", Body=b"bytes")
    rule, failed = _fail_first_get(status, code)
    s3_proxy.fail_when(rule)
    assert await _read(proxied, bucket, "k") == b"bytes"
    gets = [r for r in s3_proxy.requests if r[0] == "GET"]
    assert failed and [got for _, _, got in gets] == [status, 200], gets
    assert proxied.short.usable(bucket) == stays_on
    s3_proxy.reset()
    assert await _read(proxied, bucket, "k") == b"bytes"  # one GET either way: short, or the whole call
    assert [r[2] for r in s3_proxy.requests if r[0] == "GET"] == [200]


class _Counting:
    def __init__(self) -> None:
        self.entered = 0

    async def __aenter__(self) -> None:
        self.entered += 1

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


async def test_every_short_get_takes_a_slot_of_the_request_budget(
    moto_s3: S3Server, s3_proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, moto_s3)
    bucket = moto_s3.make_bucket()
    for n in range(3):
        moto_s3.sync_client().put_object(Bucket=bucket, Key=f"k{n}", Body=b"x" * n)
    limiter = _Counting()
    client = await S3Client.open(S3Settings(endpoint_url=s3_proxy.endpoint_url), limiter=limiter)
    try:
        for n in range(3):
            assert await _read(client, bucket, f"k{n}") == b"x" * n
    finally:
        await client.aclose()
    assert limiter.entered == len(s3_proxy.requests) == 3
