"""``pipeline.mirror``: the Zenodo stand-in -> S3 (moto and SeaweedFS), bytes streamed, no disk."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from download.sources.zenodo import ZenodoSource
from download.transport import Transport
from ferry.core.config import Limits
from ferry.core.errors import AuthError, Conflict, InputError, RateLimited
from pipeline.mirror import LOCK, MANIFEST, Mirror, MirrorOptions, MirrorResult
from tests.fixtures_s3 import S3Server
from tests.fixtures_zenodo import ZenodoHandle
from tests.test_s3_target import RequestLog, logged, objects, s3_config, uploads
from tests.test_zenodo_source import _call, publish
from upload.targets import make_target
from upload.targets.s3 import S3Target
from upload.targets.s3_errors import CredentialsExpired

MiB = 1024 * 1024


@dataclass
class Rig:
    zenodo: ZenodoHandle
    server: S3Server
    bucket: str
    run: Callable[..., Any]  # async (spec, **options) -> (MirrorResult, RequestLog)

    def body(self, key: str) -> bytes:
        data: bytes = self.server.sync_client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data

    def manifest(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.body(f"pfx/latest/{MANIFEST}"))
        return doc


@pytest.fixture
async def rig(zenodo: ZenodoHandle, s3_env: S3Server, s3_bucket: str) -> AsyncIterator[Rig]:
    limits = Limits()
    transport = Transport.create("https", https_base=zenodo.url, limits=limits)
    source = ZenodoSource(zenodo.url)

    async def run(
        spec: str, *, patch: Callable[[S3Target], None] | None = None, **options: Any
    ) -> tuple[MirrorResult, RequestLog]:
        target = make_target(s3_config(s3_env, s3_bucket), limits, token=None, limiter=None)
        assert isinstance(target, S3Target)
        log = await logged(target)
        if patch is not None:
            patch(target)
        try:
            opts = MirrorOptions(**{"source_spec": spec, "retries": 0, **options})
            result = await Mirror(source, transport.fetcher_for, target, opts).run(spec)
        finally:
            await target.aclose()
        return result, log

    try:
        yield Rig(zenodo, s3_env, s3_bucket, run)
    finally:
        await source.close()
        await transport.close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def new_version(zen: ZenodoHandle, published: dict[str, Any], put: dict[str, bytes], delete: list[str]) -> str:
    answer = _call(zen, "POST", published["links"]["newversion"], 201)
    draft = _call(zen, "GET", answer["links"]["latest_draft"], 200)
    for key in delete:
        _call(zen, "DELETE", f"{draft['links']['bucket']}/{key}", 204)
    for key, data in put.items():
        _call(zen, "PUT", f"{draft['links']['bucket']}/{key}", 201, data=data)
    _call(zen, "POST", draft["links"]["publish"], 202)
    return str(draft["id"])


async def test_mirror_twice_then_a_new_version(rig: Rig) -> None:
    big = os.urandom(7 * MiB)  # goes as a multipart stream
    files = {"crispr.parquet": big, "orf.parquet": b"orf" * 1000, "old.csv": b"a,b\n"}
    v1 = publish(rig.zenodo, files)
    rid = str(v1["id"])
    first, _ = await rig.run(f"zenodo:{rid}")
    assert first.ok and sorted(first.sent) == sorted(files) and sorted(first.copied) == sorted(files)
    assert first.manifest_written and first.bytes_sent == sum(len(d) for d in files.values())
    for key, data in files.items():
        assert rig.body(f"pfx/{rid}/{key}/content") == data
        assert rig.body(f"pfx/latest/{key}/content") == data
    doc = rig.manifest()
    assert doc["record_id"] == rid
    assert {f["key"]: (f["size"], f["checksums"]["md5"]) for f in doc["files"]} == {
        k: (len(d), md5(d)) for k, d in files.items()
    }
    assert uploads(rig.server, rig.bucket) == [] and f"pfx/{LOCK}" not in objects(rig.server, rig.bucket)

    # Run twice: 0 bytes moved, nothing copied, nothing written but the lock.
    second, log = await rig.run(f"zenodo:{rid}")
    assert second.sent == [] and sorted(second.skipped) == sorted(files) and second.copied == []
    assert not second.manifest_written and second.bytes_sent == 0
    assert sorted(log.writes()) == ["DeleteObject", "PutObject"]  # the lock, taken and released

    # A new version: one file changed, one removed, one added; latest/ switches.
    v2 = new_version(rig.zenodo, v1, {"orf.parquet": b"ORF v2", "new.json": b"{}"}, ["old.csv"])
    third, _ = await rig.run(f"zenodo:concept:{v1['conceptrecid']}")
    assert third.record_id == v2 and third.ok
    # The unchanged big file gets its copy in v2's folder server-side, not streamed again...
    assert sorted(third.sent) == ["new.json", "orf.parquet"] and third.reused == ["crispr.parquet"]
    assert rig.body(f"pfx/{v2}/crispr.parquet/content") == big
    # ...but latest/ only gets what changed, and loses what the version no longer has.
    assert sorted(third.copied) == ["new.json", "orf.parquet"] and third.removed == ["old.csv"]
    held = objects(rig.server, rig.bucket)
    assert "pfx/latest/old.csv/content" not in held and f"pfx/{rid}/old.csv/content" in held
    assert rig.body("pfx/latest/orf.parquet/content") == b"ORF v2"
    assert rig.body(f"pfx/{rid}/orf.parquet/content") == files["orf.parquet"]  # v1 left untouched
    assert rig.manifest()["record_id"] == v2

    # latest/ drifted (someone overwrote a file): the next run heals it by copy.
    rig.server.sync_client().put_object(Bucket=rig.bucket, Key="pfx/latest/new.json/content", Body=b"drift")
    healed, _ = await rig.run(f"zenodo:{v2}")
    assert healed.sent == [] and healed.copied == ["new.json"]
    assert rig.body("pfx/latest/new.json/content") == b"{}"


async def test_dry_run_writes_nothing(rig: Rig) -> None:
    v1 = publish(rig.zenodo, {"a.txt": b"aaa", "b.txt": b"bbb"})
    result, log = await rig.run(f"zenodo:{v1['id']}", dry_run=True)
    assert log.writes() == [] and objects(rig.server, rig.bucket) == {}
    assert any(step.startswith("stream a.txt") for step in result.plan)
    assert result.plan[-1] == f"write latest/{MANIFEST}"


async def test_only_unknown_key_names_the_keys_the_record_has(rig: Rig) -> None:
    v1 = publish(rig.zenodo, {"a.txt": b"aaa", "b.txt": b"bbb"})
    with pytest.raises(InputError, match=r"nope\.txt.*it has: a\.txt, b\.txt"):
        await rig.run(f"zenodo:{v1['id']}", only=("nope.txt",))
    only, _ = await rig.run(f"zenodo:{v1['id']}", only=("b.txt",))
    assert only.sent == ["b.txt"] and not only.manifest_written  # a partial mirror names no version


async def test_corrupt_source_file_is_never_completed_and_latest_not_switched(rig: Rig) -> None:
    v1 = publish(rig.zenodo, {"good.bin": b"g" * 5000, "bad.bin": os.urandom(7 * MiB)})
    rig.zenodo.corrupt(v1["id"], "bad.bin", offset=6 * MiB)
    result, _ = await rig.run(f"zenodo:{v1['id']}")
    assert list(result.failed) == ["bad.bin"] and result.sent == ["good.bin"]
    held = objects(rig.server, rig.bucket)
    assert f"pfx/{v1['id']}/bad.bin/content" not in held and uploads(rig.server, rig.bucket) == []
    assert not any(k.startswith("pfx/latest/") for k in held)  # the version is not complete


async def test_a_second_mirror_is_refused_and_a_stale_lock_taken_over(rig: Rig) -> None:
    v1 = publish(rig.zenodo, {"a.txt": b"aaa"})
    client = rig.server.sync_client()
    held = {"host": "elsewhere", "pid": 1, "run": "r1", "taken": time.time(), "expires": time.time() + 600}
    client.put_object(Bucket=rig.bucket, Key=f"pfx/{LOCK}", Body=json.dumps(held).encode())
    with pytest.raises(Conflict, match="host elsewhere pid 1"):
        await rig.run(f"zenodo:{v1['id']}")
    assert objects(rig.server, rig.bucket) == {f"pfx/{LOCK}": len(json.dumps(held))}  # nothing written
    stale = {**held, "expires": time.time() - 1}
    client.put_object(Bucket=rig.bucket, Key=f"pfx/{LOCK}", Body=json.dumps(stale).encode())
    result, _ = await rig.run(f"zenodo:{v1['id']}")
    assert result.ok and result.sent == ["a.txt"] and f"pfx/{LOCK}" not in objects(rig.server, rig.bucket)


async def test_expired_credentials_stop_the_run_cleanly(rig: Rig) -> None:
    v1 = publish(rig.zenodo, {f"f{i}.bin": os.urandom(7 * MiB) for i in range(3)})

    def expire_on_first_part(target: S3Target) -> None:
        async def refuse(*args: Any, **kwargs: Any) -> str:
            raise CredentialsExpired("upload part: ExpiredToken: the credentials have expired")

        client = target._client
        assert client is not None
        client.upload_part = refuse  # type: ignore[method-assign]

    with pytest.raises(AuthError):
        await rig.run(f"zenodo:{v1['id']}", patch=expire_on_first_part)
    held = objects(rig.server, rig.bucket)
    assert held == {}  # nothing completed, and the lock released
    assert uploads(rig.server, rig.bucket) == []  # every started upload aborted
    again, _ = await rig.run(f"zenodo:{v1['id']}")  # renewed credentials: the run resumes
    assert again.ok and len(again.sent) == 3


@pytest.mark.parametrize("retries", [0, 2])
async def test_retries_are_extra_tries_after_the_first(rig: Rig, retries: int) -> None:
    """``retries`` means the same for a file as for a request (``limits.retries``): the
    first try, then up to ``retries`` more; a file that keeps failing is tried retries+1 times."""
    v1 = publish(rig.zenodo, {"a.bin": b"a" * 1000})
    tries: list[str] = []

    def always_refuse(target: S3Target) -> None:
        async def refuse(rec: Any, key: str, *args: Any, **kwargs: Any) -> Any:
            tries.append(key)
            raise RateLimited("put: SlowDown", retry_after=0.0, status=503)

        target.put_stream = refuse  # type: ignore[method-assign]

    result, _ = await rig.run(f"zenodo:{v1['id']}", patch=always_refuse, retries=retries)
    assert not result.ok and list(result.failed) == ["a.bin"]
    assert tries == ["a.bin"] * (retries + 1)
