"""The S3 target against moto and SeaweedFS: the conformance suite, then what only S3 has
(layouts, metadata idempotency, streams that must never complete, orphan uploads)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ferry.core.checksums import Checksum, MultiHasher, hash_file
from ferry.core.config import Limits, TargetConfig
from ferry.core.errors import AuthError, ConfigError, InputError, VerificationError
from ferry.testing.target_suite import TargetBackend, TargetSuite
from tests.fixtures_s3 import S3Server
from upload.targets import make_target
from upload.targets.base import RemoteRecord
from upload.targets.s3 import S3Target
from upload.targets.s3_layout import LATEST
from upload.targets.s3_options import S3Options

MiB = 1024 * 1024


def s3_config(server: S3Server, bucket: str, *, prefix: str = "pfx", **options: Any) -> TargetConfig:
    return TargetConfig(
        name="s3test",
        type="s3",
        url=f"s3://{bucket}/{prefix}",
        multipart_threshold=6 * MiB,
        part_size=5 * MiB,
        options={"endpoint_url": server.endpoint_url, **options},
    )


def md5(data: bytes) -> Checksum:
    return Checksum("md5", hashlib.md5(data).hexdigest())


class RequestLog:
    """Every S3 operation a target's client sends, with its headers (botocore events)."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, dict[str, str], int]] = []

    def __call__(self, request: Any, event_name: str = "", **_: Any) -> None:
        size = int(request.headers.get("Content-Length") or -1)
        self.ops.append(
            (
                event_name.rsplit(".", 1)[-1],
                {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in request.headers.items()},
                size,
            )
        )

    def names(self) -> list[str]:
        return [name for name, _, _ in self.ops]

    def writes(self) -> list[str]:
        reads = {"HeadObject", "ListObjectsV2", "ListMultipartUploads", "GetObject"}
        return [n for n in self.names() if n not in reads]


async def logged(target: S3Target) -> RequestLog:
    log = RequestLog()
    client = await target.client()
    client.raw.meta.events.register("before-send.s3", log)
    return log


@pytest.fixture
def make(s3_env: S3Server, s3_bucket: str) -> Callable[..., S3Target]:
    def build(**options: Any) -> S3Target:
        target = make_target(s3_config(s3_env, s3_bucket, **options), Limits(), token=None, limiter=None)
        assert isinstance(target, S3Target)
        return target

    return build


@pytest.fixture
async def target(make: Callable[..., S3Target]) -> AsyncIterator[S3Target]:
    t = make()
    try:
        yield t
    finally:
        await t.aclose()


class TestS3Target(TargetSuite):
    @pytest.fixture
    def backend(self, make: Callable[..., S3Target]) -> TargetBackend:
        return TargetBackend("s3", make, large=12 * MiB)


async def stream(data: bytes, chunk: int = 1 * MiB) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]


def objects(server: S3Server, bucket: str) -> dict[str, int]:
    listed = server.sync_client().list_objects_v2(Bucket=bucket).get("Contents") or []
    return {o["Key"]: o["Size"] for o in listed}


def uploads(server: S3Server, bucket: str) -> list[str]:
    return [u["Key"] for u in server.sync_client().list_multipart_uploads(Bucket=bucket).get("Uploads") or []]


# --- layout and metadata ------------------------------------------------------------------


async def test_versioned_layout_and_metadata(
    target: S3Target, s3_env: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    rec = await target.create("19835081", {})
    data = b"parquet bytes " * 500
    (tmp_path / "a").write_bytes(data)
    got = await target.put_file(rec, "crispr.parquet", tmp_path / "a", len(data), md5(data))
    assert got.matches(len(data), md5(data))
    assert objects(s3_env, s3_bucket) == {"pfx/19835081/crispr.parquet/content": len(data)}
    head = s3_env.sync_client().head_object(Bucket=s3_bucket, Key="pfx/19835081/crispr.parquet/content")
    assert head["Metadata"] == {
        "ferry-md5": md5(data).value,
        "ferry-size": str(len(data)),
        "ferry-record": "19835081",
    }
    assert (await target.find("19835081", "")) is not None
    # A fresh target (another run) finds the record by its objects.
    other = S3Target(target.name, target.options)
    try:
        found = await other.find("19835081", "")
        assert found is not None and found.state == "open"
        assert await other.find("19835082", "") is None
        assert list(await other.list_files(found)) == ["crispr.parquet"]
    finally:
        await other.aclose()


async def test_plain_layout_lists_only_its_records_objects(
    make: Callable[..., S3Target], s3_env: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    target = make(layout="plain")
    try:
        s3_env.sync_client().put_object(Bucket=s3_bucket, Key="pfx/someone-elses.txt", Body=b"theirs")
        rec = await target.create("push", {})
        (tmp_path / "c").write_bytes(b"catalog: 1\n")
        await target.put_file(rec, "sub/catalog.yaml", tmp_path / "c", 11, md5(b"catalog: 1\n"))
        assert objects(s3_env, s3_bucket) == {"pfx/sub/catalog.yaml": 11, "pfx/someone-elses.txt": 6}
        assert list(await target.list_files(rec)) == ["sub/catalog.yaml"]  # never "stale" to delete
    finally:
        await target.aclose()


async def test_list_files_heads_only_what_this_run_did_not_put_and_prove(
    make: Callable[..., S3Target], s3_env: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """Objects this target put (single PUT and multipart, each proved by its ETag) are
    listed from LIST alone, with the checksums a HEAD reports; one replaced behind its
    back (same size, other bytes: another ETag), one of another record in the shared
    plain prefix and one written before this run are read by a HEAD, as before."""
    target = make(layout="plain")
    small, big = b"catalog: 1\n", os.urandom(7 * MiB)
    (tmp_path / "small").write_bytes(small)
    (tmp_path / "big").write_bytes(big)
    sync = s3_env.sync_client()
    sync.put_object(Bucket=s3_bucket, Key="pfx/old.txt", Body=b"old", Metadata={"ferry-record": "push"})
    sync.put_object(Bucket=s3_bucket, Key="pfx/theirs.txt", Body=b"theirs", Metadata={"ferry-record": "other"})
    try:
        rec = await target.create("push", {})
        await target.put_file(rec, "catalog.yaml", tmp_path / "small", len(small), None)
        await target.put_file(rec, "tiles.pmtiles", tmp_path / "big", len(big), None)
        await target.put_file(rec, "genes.tsv", tmp_path / "small", len(small), None)
        log = await logged(target)
        listed = await target.list_files(rec)
        assert log.names() == ["ListObjectsV2", "HeadObject", "HeadObject"]  # old.txt, theirs.txt
        assert sorted(listed) == ["catalog.yaml", "genes.tsv", "old.txt", "tiles.pmtiles"]
        assert listed["catalog.yaml"].matches(len(small), md5(small))
        assert listed["tiles.pmtiles"].matches(len(big), md5(big))
        for key in ("catalog.yaml", "tiles.pmtiles"):  # what a HEAD would have said
            assert listed[key] == await target.stat("push", key)

        replaced = {"ferry-md5": "0" * 32, "ferry-record": "push"}
        sync.put_object(Bucket=s3_bucket, Key="pfx/genes.tsv", Body=b"X" * len(small), Metadata=replaced)
        log.ops.clear()
        again = await target.list_files(rec)
        assert log.names().count("HeadObject") == 3  # old.txt, theirs.txt and the replaced genes.tsv
        assert again["genes.tsv"].checksum("md5") == "0" * 32 and not again["genes.tsv"].matches(len(small), md5(small))
    finally:
        await target.aclose()


async def test_same_content_skipped_changed_replaced_foreign_md5_recognised(
    target: S3Target, s3_env: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    rec = await target.create("81009", {})
    log = await logged(target)
    data = os.urandom(7 * MiB)  # multipart
    (tmp_path / "d").write_bytes(data)
    await target.put_file(rec, "d.root", tmp_path / "d", len(data), md5(data))
    assert "CompleteMultipartUpload" in log.names()
    log.ops.clear()
    again = await target.put_file(rec, "d.root", tmp_path / "d", len(data), md5(data))
    assert again.matches(len(data), md5(data)) and log.writes() == []  # skipped by metadata
    changed = data[:-1] + bytes([data[-1] ^ 1])
    (tmp_path / "d").write_bytes(changed)
    replaced = await target.put_file(rec, "d.root", tmp_path / "d", len(changed), md5(changed))
    assert replaced.matches(len(changed), md5(changed)) and "CompleteMultipartUpload" in log.writes()
    # An object the seed's mirror script wrote (its md5 under zenodo-md5) is not sent again.
    old = b"written by mirror_zenodo_to_cpg.sh"
    s3_env.sync_client().put_object(
        Bucket=s3_bucket, Key="pfx/81009/old.csv/content", Body=old, Metadata={"zenodo-md5": md5(old).value}
    )
    (tmp_path / "o").write_bytes(old)
    log.ops.clear()
    kept = await target.put_file(rec, "old.csv", tmp_path / "o", len(old), md5(old))
    assert kept.matches(len(old), md5(old)) and log.writes() == []


async def test_content_md5_on_every_part_and_put(target: S3Target, tmp_path: Path) -> None:
    rec = await target.create("81009", {})
    log = await logged(target)
    big, small = os.urandom(11 * MiB), b"small file"
    (tmp_path / "big").write_bytes(big)
    (tmp_path / "small").write_bytes(small)
    await target.put_file(rec, "big", tmp_path / "big", len(big), md5(big))
    await target.put_file(rec, "small", tmp_path / "small", len(small), md5(small))
    sends = [(name, headers, size) for name, headers, size in log.ops if name in ("UploadPart", "PutObject")]
    assert [n for n, _, _ in sends] == ["UploadPart"] * 3 + ["PutObject"]
    assert sorted(size for n, _, size in sends if n == "UploadPart") == [1 * MiB, 5 * MiB, 5 * MiB]
    for _, headers, _ in sends:
        assert "Content-MD5" in headers
    parts = [big[: 5 * MiB], big[5 * MiB : 10 * MiB], big[10 * MiB :]]
    sent_md5s = sorted(h["Content-MD5"] for n, h, _ in sends if n == "UploadPart")
    assert sent_md5s == sorted(base64.b64encode(hashlib.md5(p).digest()).decode() for p in parts)


# --- streams that must never complete ---------------------------------------------------


@pytest.mark.parametrize("size", [3000, 11 * MiB], ids=["single-put", "multipart"])
@pytest.mark.parametrize("fault", ["truncated", "corrupt", "long"])
async def test_bad_stream_is_never_completed(
    target: S3Target, s3_env: S3Server, s3_bucket: str, size: int, fault: str
) -> None:
    rec = await target.create("81009", {})
    good = os.urandom(size)
    sent = {
        "truncated": good[: size - 1000],
        "corrupt": good[:100] + bytes([good[100] ^ 0xFF]) + good[101:],
        "long": good + b"extra",
    }[fault]
    with pytest.raises(VerificationError) as info:
        await target.put_stream(rec, "f.bin", lambda: stream(sent), size, md5(good))
    assert info.value.recid == "81009" and info.value.file == "f.bin"
    assert objects(s3_env, s3_bucket) == {}  # nothing completed
    assert uploads(s3_env, s3_bucket) == []  # and no parts left behind
    # The same put with the right bytes then succeeds.
    ok = await target.put_stream(rec, "f.bin", lambda: stream(good), size, md5(good))
    assert ok.matches(size, md5(good))


async def test_stream_failing_midway_aborts_its_upload(target: S3Target, s3_env: S3Server, s3_bucket: str) -> None:
    rec = await target.create("81009", {})
    good = os.urandom(16 * MiB)

    async def broken() -> AsyncIterator[bytes]:
        yield good[: 11 * MiB]
        raise ConnectionResetError("source went away")

    with pytest.raises(ConnectionResetError):
        await target.put_stream(rec, "f.bin", broken, len(good), md5(good))
    assert objects(s3_env, s3_bucket) == {} and uploads(s3_env, s3_bucket) == []


async def test_abandoned_uploads_of_the_record_are_aborted_next_run(
    target: S3Target, s3_env: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    admin = s3_env.sync_client()
    ours = admin.create_multipart_upload(Bucket=s3_bucket, Key="pfx/81009/big.root/content")["UploadId"]
    admin.upload_part(Bucket=s3_bucket, Key="pfx/81009/big.root/content", UploadId=ours, PartNumber=1, Body=b"x" * 100)
    admin.create_multipart_upload(Bucket=s3_bucket, Key="pfx/99999/other/content")  # another record's
    fresh = S3Target(target.name, target.options)  # made after the uploads: they are from "earlier"
    try:
        rec = await fresh.create("81009", {})
        (tmp_path / "s").write_bytes(b"s")
        await fresh.put_file(rec, "small", tmp_path / "s", 1, md5(b"s"))
    finally:
        await fresh.aclose()
    assert uploads(s3_env, s3_bucket) == ["pfx/99999/other/content"]


async def test_head_403_is_an_error_and_nothing_is_overwritten(
    seaweed_s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The writer may PUT but not HEAD: the target must stop, not take the object as absent."""
    bucket = seaweed_s3.make_bucket()
    seaweed_s3.sync_client().put_object(Bucket=bucket, Key="pfx/81009/a.txt/content", Body=b"precious")
    assert seaweed_s3.writer is not None
    for name, value in seaweed_s3.env(seaweed_s3.writer).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    target = make_target(s3_config(seaweed_s3, bucket), Limits(), token=None, limiter=None)
    (tmp_path / "a").write_bytes(b"other bytes")
    rec = RemoteRecord(id="81009", recid="81009", state="open")
    try:
        with pytest.raises(AuthError) as info:
            await target.put_file(rec, "a.txt", tmp_path / "a", 11, md5(b"other bytes"))
        assert info.value.recid == "81009"
    finally:
        await target.aclose()
    body = seaweed_s3.sync_client().get_object(Bucket=bucket, Key="pfx/81009/a.txt/content")["Body"].read()
    assert body == b"precious"


# --- configuration ------------------------------------------------------------------------


def test_config_errors_name_the_key(moto_s3: S3Server) -> None:
    cases: dict[str, dict[str, Any]] = {
        "targets.s3test.layout": {"layout": "flat"},
        "targets.s3test.bogus": {"bogus": 1},
        "targets.s3test.parts_in_flight": {"parts_in_flight": "4"},
    }
    for where, options in cases.items():
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            make_target(s3_config(moto_s3, "bkt", **options), Limits(), token=None, limiter=None)
    bad_url = TargetConfig(name="s3test", type="s3", url="s3:/bkt")
    with pytest.raises(ConfigError, match=r"targets\.s3test\.url"):
        make_target(bad_url, Limits(), token=None, limiter=None)


def test_profile_names_the_aws_profile() -> None:
    cfg = TargetConfig(name="cpg", type="s3", url="s3://bkt/p", profile="cpg")
    target = make_target(cfg, Limits(), token=None, limiter=None)
    assert isinstance(target, S3Target) and target.options.settings.profile == "cpg"
    default = make_target(TargetConfig(name="x", type="s3", url="s3://bkt/p"), Limits(), token=None, limiter=None)
    assert isinstance(default, S3Target) and default.options.settings.profile is None


def test_part_size_fits_ten_thousand_parts() -> None:
    from upload.targets.s3_client import At
    from upload.targets.s3_upload import plan_upload

    assert not plan_upload(10, threshold=6 * MiB, part_size=5 * MiB, where=At()).multipart
    plan = plan_upload(49 * 10**9, threshold=6 * MiB, part_size=5 * MiB, where=At())
    assert plan.multipart and plan.parts <= 10_000 and plan.part_size % MiB == 0 and plan.part_size >= 5 * MiB
    tiny_parts = plan_upload(100 * MiB, threshold=1, part_size=1, where=At())
    assert tiny_parts.part_size == 5 * MiB and tiny_parts.parts == 20


# --- abilities beyond the Target protocol: copy, read back, list records ------------------


async def test_copy_to_latest_keeps_metadata_and_large_copies_go_in_parts(
    target: S3Target, s3_env: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    rec = await target.create("19835081", {})
    data = os.urandom(11 * MiB)
    (tmp_path / "f").write_bytes(data)
    await target.put_file(rec, "t.parquet", tmp_path / "f", len(data), md5(data))
    latest = target.latest_record()
    copied = await target.copy_file(rec, "t.parquet", latest, "t.parquet")
    assert copied.matches(len(data), md5(data))
    head = s3_env.sync_client().head_object(Bucket=s3_bucket, Key="pfx/latest/t.parquet/content")
    assert head["Metadata"]["ferry-record"] == "19835081"
    # Above the one-request copy limit (5 GB on S3, lowered here) the copy goes in ranges.
    client = await target.client()
    etag = await client.copy(
        s3_bucket,
        "pfx/19835081/t.parquet/content",
        "pfx/latest/t2.parquet/content",
        size=len(data),
        part_size=5 * MiB,
        single_limit=5 * MiB,
    )
    assert etag.endswith("-3")
    assert await target.stat(LATEST, "t2.parquet") == dataclasses.replace(copied, key="t2.parquet")
    assert uploads(s3_env, s3_bucket) == []
    got = b"".join([c async for c in target.read_file(latest, "t2.parquet", start=len(data) - 10)])
    assert got == data[-10:]
    assert await target.list_records() == ["19835081"]  # latest/ is not a record


async def test_latest_is_not_a_source_record_id(target: S3Target) -> None:
    with pytest.raises(InputError, match="latest"):
        await target.create(LATEST, {})


def test_parts_are_made_to_fit_the_byte_budget() -> None:
    """parts_in_flight parts must fit in bytes_in_flight, else a large file goes up one part
    at a time; never below S3's 5 MiB, and a part size that fits is kept as given."""
    from upload.targets.s3_options import fitted_part_size

    assert fitted_part_size(50 * MiB, 4, 96 * MiB, "t") == 24 * MiB
    assert fitted_part_size(16 * MiB, 4, 96 * MiB, "t") == 16 * MiB
    assert fitted_part_size(50 * MiB, 4, 8 * MiB, "t") == 5 * MiB
    cfg = TargetConfig(
        name="t", type="s3", url="s3://bucket/p", options={"parts_in_flight": 2, "bytes_in_flight": 64 * MiB}
    )
    assert S3Options.from_config(cfg).part_size == 32 * MiB


# --- a file without a known md5, sent in parts ---------------------------------------------


def hashed_then_changed(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """The S3 target's file hash, after which one byte of the file (at ``at``) changes:
    a file modified between the pre-read and the sending of its parts."""
    import upload.targets.s3 as s3_module

    def changed(path: str, algorithms: tuple[str, ...], **kw: Any) -> MultiHasher:
        out = hash_file(path, algorithms, **kw)
        with open(path, "r+b") as fh:
            # Flip the byte: writing a fixed one left random data unchanged 1 time in 256
            # (the byte was already that one), and the test then failed for no fault.
            fh.seek(at)
            byte = fh.read(1)[0]
            fh.seek(at)
            fh.write(bytes([byte ^ 0xFF]))
        return out

    monkeypatch.setattr(s3_module, "hash_file", changed)


async def test_a_cold_multipart_file_is_hashed_once_before_and_not_again_while_sent(
    target: S3Target, s3_env: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import upload.targets.s3_upload as s3_upload

    data = os.urandom(12 * MiB)  # 3 parts of 5 MiB
    path = tmp_path / "tiles.pmtiles"
    path.write_bytes(data)
    hashed: list[int] = []
    real_hash = s3_upload._body_and_md5

    def counted_hash(pieces: list[memoryview]) -> Any:
        hashed.append(len(pieces))
        return real_hash(pieces)

    monkeypatch.setattr(s3_upload, "_body_and_md5", counted_hash)
    rec = await target.create("run3", {})
    got = await target.put_file(rec, "tiles.pmtiles", path, len(data), None)
    assert got.matches(len(data), md5(data))
    head = s3_env.sync_client().head_object(Bucket=s3_bucket, Key="pfx/run3/tiles.pmtiles/content")
    assert head["Metadata"]["ferry-md5"] == md5(data).value
    parts = [hashlib.md5(data[i : i + 5 * MiB]).digest() for i in range(0, len(data), 5 * MiB)]
    assert head["ETag"].strip('"') == f"{hashlib.md5(b''.join(parts)).hexdigest()}-3"
    assert hashed == []  # the parts went with their pre-read md5s: no part hashed a second time


async def test_a_file_changed_after_its_pre_read_is_refused_and_aborted(
    target: S3Target, s3_env: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SeaweedFS refuses a part whose bytes are not its Content-MD5 (BadDigest); moto 5
    stores it, and its part ETag (the md5 of what it stored) is not the pre-read one.
    Either way the file fails, named, and its upload is aborted, never completed."""
    data = os.urandom(12 * MiB)
    path = tmp_path / "tiles.pmtiles"
    path.write_bytes(data)
    hashed_then_changed(monkeypatch, 7 * MiB)  # in part 2
    rec = await target.create("run3", {})
    with pytest.raises(VerificationError, match=r"tiles\.pmtiles: part 2 is not the bytes hashed") as err:
        await target.put_file(rec, "tiles.pmtiles", path, len(data), None)
    assert err.value.file == "tiles.pmtiles" and ("refused" in str(err.value) or "part ETag" in str(err.value))
    assert "pfx/run3/tiles.pmtiles/content" not in objects(s3_env, s3_bucket)
    assert uploads(s3_env, s3_bucket) == []


async def test_a_changed_part_a_server_accepts_is_caught_by_its_etag_before_completion(
    target: S3Target, s3_env: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that ignores Content-MD5 (emulated: the part goes with the md5 of the bytes
    actually sent) stores the changed part; its ETag, the md5 of what it stored, is not
    the pre-read one, so the upload is aborted, never completed."""
    data = os.urandom(12 * MiB)
    path = tmp_path / "tiles.pmtiles"
    path.write_bytes(data)
    hashed_then_changed(monkeypatch, 11 * MiB)  # in part 3, the short last one
    client = await target.client()
    real_part = client.upload_part
    completes: list[str] = []
    real_complete = client.complete_multipart

    async def md5_of_what_is_sent(*args: Any, content_md5: str, **kw: Any) -> str:
        body = args[4]
        actual = base64.b64encode(hashlib.md5(body.getvalue()).digest()).decode()
        return await real_part(*args, content_md5=actual, **kw)

    async def counted_complete(*args: Any, **kw: Any) -> str:
        completes.append(args[1])
        return await real_complete(*args, **kw)

    monkeypatch.setattr(client, "upload_part", md5_of_what_is_sent)
    monkeypatch.setattr(client, "complete_multipart", counted_complete)
    rec = await target.create("run3", {})
    with pytest.raises(VerificationError, match=r"tiles\.pmtiles: part 3 is not the bytes hashed.*part ETag"):
        await target.put_file(rec, "tiles.pmtiles", path, len(data), None)
    assert completes == []
    assert "pfx/run3/tiles.pmtiles/content" not in objects(s3_env, s3_bucket)
    assert uploads(s3_env, s3_bucket) == []


async def test_without_etag_checks_a_changed_part_is_caught_by_hashing_it_again(
    make: Callable[..., S3Target], s3_env: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify_etag = false (ETags that are not md5s): the part ETag proves nothing and moto
    does not check Content-MD5, so each part is hashed again before it is sent."""
    data = os.urandom(12 * MiB)
    path = tmp_path / "tiles.pmtiles"
    path.write_bytes(data)
    target = make(verify_etag=False)
    try:
        rec = await target.create("run3", {})
        got = await target.put_file(rec, "same.pmtiles", path, len(data), None)
        assert got.matches(len(data), md5(data))
        hashed_then_changed(monkeypatch, 2 * MiB)  # in part 1
        with pytest.raises(VerificationError, match=r"tiles\.pmtiles: part 1 is not the bytes hashed.*its md5 is"):
            await target.put_file(rec, "tiles.pmtiles", path, len(data), None)
    finally:
        await target.aclose()
    assert "pfx/run3/tiles.pmtiles/content" not in objects(s3_env, s3_bucket)
    assert uploads(s3_env, s3_bucket) == []


async def test_file_chunks_reads_all_and_closes_the_file_whether_read_to_the_end_or_not(tmp_path: Path) -> None:
    from upload.targets.s3_upload import _body, file_chunks

    data = os.urandom(10_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    fds = len(os.listdir("/proc/self/fd"))
    assert [c async for c in file_chunks(path, 4096)] == [data[:4096], data[4096:8192], data[8192:]]
    assert len(os.listdir("/proc/self/fd")) == fds
    chunks = file_chunks(path, 4096)
    first = await anext(chunks)
    await chunks.aclose()  # left half read
    assert len(os.listdir("/proc/self/fd")) == fds
    # A part that is one whole chunk is sent as that chunk; one made of pieces is joined.
    assert _body([memoryview(first)]).getvalue() == data[:4096]
    assert _body([memoryview(first)[:100], memoryview(first)[100:]]).getvalue() == data[:4096]
    assert _body([memoryview(first)[:100]]).getvalue() == data[:100]
    assert [c async for c in file_chunks(tmp_path / "f", 20_000)] == [data]
