"""The S3 client layer against real servers (moto, SeaweedFS) and the error mapping.

Error answers the real servers cannot be made to give (expired session tokens, SlowDown)
come from a small aiohttp app on 127.0.0.1 that answers as S3 does, so they still pass
through botocore's parser and our one mapping function.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import botocore.exceptions as bce
import pytest
from aiohttp import web
from botocore.utils import parse_timestamp

from ferry.core.errors import (
    AuthError,
    ConfigError,
    RateLimited,
    TargetNotFound,
    TargetUnavailable,
    VerificationError,
    is_retryable,
)
from tests.fixtures_s3 import Credentials, S3Server, free_port
from upload.targets.s3_client import (
    At,
    CredentialsExpired,
    S3Client,
    S3Location,
    S3Settings,
    map_s3_error,
    timestamp,
)


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def client_error(code: str, status: int, message: str = "", headers: dict[str, str] | None = None) -> bce.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
    }
    return bce.ClientError(response, "HeadObject")


def use_server(monkeypatch: pytest.MonkeyPatch, server: S3Server, creds: Credentials | None = None) -> None:
    """Only ``server``'s AWS_* settings in the environment (no shared files of the machine)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name, value in server.env(creds).items():
        monkeypatch.setenv(name, value)


# --- pure parts ---------------------------------------------------------------------------


def test_location_parse() -> None:
    loc = S3Location.parse("s3://cellpainting-gallery/cpg0042/publication_data/jump_rr/")
    assert (loc.bucket, loc.prefix) == ("cellpainting-gallery", "cpg0042/publication_data/jump_rr")
    assert loc.key("19835081", "a.parquet", "content") == "cpg0042/publication_data/jump_rr/19835081/a.parquet/content"
    assert S3Location.parse("s3://bkt").key("x") == "x"
    for bad in ("http://bkt/x", "s3://", "s3://ab/x", "s3://bkt/a//b", "s3://bkt/a/../b"):
        with pytest.raises(ConfigError, match=r"targets\.cpg\.url"):
            S3Location.parse(bad, where="targets.cpg.url")


@pytest.mark.parametrize(
    ("exc", "cls", "retryable"),
    [
        (client_error("403", 403, "Forbidden"), AuthError, False),
        (client_error("AccessDenied", 403, "Access Denied"), AuthError, False),
        (client_error("InvalidAccessKeyId", 403), AuthError, False),
        (client_error("ExpiredToken", 400, "The provided token has expired."), CredentialsExpired, False),
        (client_error("400", 400, "Bad Request"), AuthError, False),  # HEAD: no body, no reason
        (client_error("404", 404, "Not Found"), TargetNotFound, False),
        (client_error("NoSuchKey", 404), TargetNotFound, False),
        (client_error("NoSuchUpload", 404), TargetNotFound, False),
        (client_error("InternalError", 500), TargetUnavailable, True),
        (client_error("503", 503), TargetUnavailable, True),
        (client_error("SlowDown", 503, "Please reduce your request rate."), RateLimited, True),
        (client_error("BadDigest", 400, "The Content-MD5 you specified did not match"), VerificationError, True),
        (bce.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), TargetUnavailable, True),
        (bce.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), TargetUnavailable, True),
        (bce.NoCredentialsError(), AuthError, False),
        (bce.CredentialRetrievalError(provider="sso", error_msg="token expired"), CredentialsExpired, False),
        (bce.ProfileNotFound(profile="nope"), ConfigError, False),
        (ConnectionResetError("reset by peer"), TargetUnavailable, True),
    ],
)
def test_map_s3_error(exc: BaseException, cls: type, retryable: bool) -> None:
    err = map_s3_error(exc, what="HEAD", bucket="bkt", key="p/a.txt", recid="81009", file="a.txt")
    assert type(err) is cls
    assert is_retryable(err) is retryable
    assert "s3://bkt/p/a.txt" in str(err) or isinstance(err, CredentialsExpired | ConfigError)
    if not isinstance(err, ConfigError | CredentialsExpired) or err.recid:
        assert "record 81009" in str(err) and "file a.txt" in str(err)


def test_map_s3_error_details() -> None:
    slow = map_s3_error(client_error("SlowDown", 503, headers={"retry-after": "7"}), what="PUT", bucket="b", key="k")
    assert isinstance(slow, RateLimited) and slow.retry_after == 7.0 and slow.status == 503
    # A lost answer to a write may have been applied; a refused connection never was.
    lost = map_s3_error(bce.ReadTimeoutError(endpoint_url="http://x"), what="complete", bucket="b", key="k", write=True)
    refused = map_s3_error(bce.EndpointConnectionError(endpoint_url="http://x"), what="PUT", bucket="b", write=True)
    assert lost.maybe_applied and not refused.maybe_applied
    assert not map_s3_error(bce.ReadTimeoutError(endpoint_url="http://x"), what="HEAD", bucket="b").maybe_applied
    expired = map_s3_error(client_error("ExpiredToken", 400), what="PUT", bucket="b", key="k")
    assert isinstance(expired, AuthError) and "renew" in str(expired)


# --- real servers -------------------------------------------------------------------------


@pytest.fixture
async def client(s3_env: S3Server) -> AsyncIterator[S3Client]:
    """A client built from the environment alone (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID...)."""
    c = await S3Client.open(S3Settings())
    try:
        yield c
    finally:
        await c.aclose()


async def test_client_from_environment_put_head_list_copy_delete(client: S3Client, s3_bucket: str) -> None:
    assert client.endpoint_url == os.environ["AWS_ENDPOINT_URL_S3"]
    body = b"ferry " * 1000
    meta = {"ferry-md5": hashlib.md5(body).hexdigest(), "ferry-recid": "81009"}
    etag = await client.put(s3_bucket, "p/81009/a.txt/content", body, content_md5=b64md5(body), metadata=meta)
    assert etag == hashlib.md5(body).hexdigest()
    info = await client.head(s3_bucket, "p/81009/a.txt/content")
    assert info is not None and info.size == len(body) and info.metadata == meta and info.etag == etag
    assert await client.head(s3_bucket, "p/81009/missing") is None
    await client.copy(s3_bucket, "p/81009/a.txt/content", "p/latest/a.txt/content", size=len(body))
    copied = await client.head(s3_bucket, "p/latest/a.txt/content")
    assert copied is not None and copied.metadata == meta and copied.size == len(body)
    keys = [o.key async for o in client.list_objects(s3_bucket, "p/")]
    assert keys == ["p/81009/a.txt/content", "p/latest/a.txt/content"]
    assert await client.get_bytes(s3_bucket, "p/latest/a.txt/content") == body
    await client.delete(s3_bucket, "p/latest/a.txt/content")
    await client.delete(s3_bucket, "p/latest/a.txt/content")  # a missing key is no error
    assert await client.head(s3_bucket, "p/latest/a.txt/content") is None
    with pytest.raises(TargetNotFound, match="record 81009"):
        await client.get_bytes(s3_bucket, "p/latest/a.txt/content", at=At(recid="81009"))


async def test_multipart_list_abort_complete(client: S3Client, s3_bucket: str) -> None:
    part = os.urandom(5 * 1024 * 1024)
    tail = b"end"
    abandoned = await client.create_multipart(s3_bucket, "p/big", metadata={"ferry-recid": "1"})
    await client.upload_part(s3_bucket, "p/big", abandoned, 1, part, content_md5=b64md5(part))
    uploads = await client.list_uploads(s3_bucket, "p/")
    assert [(u.key, u.upload_id) for u in uploads] == [("p/big", abandoned)]
    await client.abort_multipart(s3_bucket, "p/big", abandoned)
    await client.abort_multipart(s3_bucket, "p/big", abandoned)  # already gone: not an error
    assert await client.list_uploads(s3_bucket, "p/") == []

    upload = await client.create_multipart(s3_bucket, "p/big", metadata={"ferry-recid": "2"})
    e1 = await client.upload_part(s3_bucket, "p/big", upload, 1, part, content_md5=b64md5(part))
    e2 = await client.upload_part(s3_bucket, "p/big", upload, 2, tail, content_md5=b64md5(tail))
    etag = await client.complete_multipart(s3_bucket, "p/big", upload, [(1, e1), (2, e2)])
    assert etag.endswith("-2")
    info = await client.head(s3_bucket, "p/big")
    assert info is not None and info.size == len(part) + len(tail) and info.metadata == {"ferry-recid": "2"}
    assert await client.list_uploads(s3_bucket, "p/") == []


async def test_an_abort_that_fails_is_tried_again(
    client: S3Client, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server is down when a transfer fails: its abort fails too. The upload is kept and
    aborted again before its key is sent anew, or when the client closes (the CI failure of
    a run whose S3 outage ended within the run and left an open upload behind)."""
    real = client.raw.abort_multipart_upload
    tried: list[str] = []

    async def down(**kw: Any) -> Any:
        tried.append(kw["UploadId"])
        raise bce.EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    monkeypatch.setattr(client.raw, "abort_multipart_upload", down)
    first = await client.create_multipart(s3_bucket, "p/big", metadata={})
    await client.abort_quietly(s3_bucket, "p/big", first)
    assert tried == [first] and [u.upload_id for u in await client.list_uploads(s3_bucket, "p/")] == [first]
    await client.retry_aborts(s3_bucket, "p/other")  # another object's send: not this one's
    assert tried == [first]
    await client.retry_aborts(s3_bucket, "p/big")  # still down: kept for the next try
    assert tried == [first, first] and list(client.unaborted) == [(s3_bucket, "p/big", first)]
    monkeypatch.setattr(client.raw, "abort_multipart_upload", real)
    await client.retry_aborts(s3_bucket, "p/big")
    assert await client.list_uploads(s3_bucket, "p/") == [] and not client.unaborted

    other = await S3Client.open(S3Settings())
    second = await other.create_multipart(s3_bucket, "p/big2", metadata={})
    monkeypatch.setattr(other.raw, "abort_multipart_upload", down)
    await other.abort_quietly(s3_bucket, "p/big2", second)
    monkeypatch.setattr(other.raw, "abort_multipart_upload", real)
    await other.aclose()  # the server is back by the end of the run: closing aborts it
    assert await client.list_uploads(s3_bucket, "p/") == []


async def test_profile_from_shared_files_wins_over_environment(
    s3_env: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Wrong keys in the environment, right ones in the profile: an explicit profile must win.
    (tmp_path / "credentials").write_text(
        f"[ferrytest]\naws_access_key_id = {s3_env.admin.access_key}\n"
        f"aws_secret_access_key = {s3_env.admin.secret_key}\n"
    )
    (tmp_path / "config").write_text(f"[profile ferrytest]\nregion = us-east-1\nendpoint_url = {s3_env.endpoint_url}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    c = await S3Client.open(S3Settings(profile="ferrytest"))
    try:
        assert c.endpoint_url == s3_env.endpoint_url  # endpoint_url from the profile
        await c.put(s3_bucket, "k", b"x", content_md5=b64md5(b"x"), metadata={})
        assert (await c.head(s3_bucket, "k")) is not None
    finally:
        await c.aclose()
    with pytest.raises(ConfigError, match="nosuchprofile"):
        await S3Client.open(S3Settings(profile="nosuchprofile"))


async def test_session_token_is_sent(s3_env: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporary keys (Access Grants, STS) carry a session token; it must reach the server."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-value")
    c = await S3Client.open(S3Settings())
    seen: list[str | None] = []

    def capture(request: Any, **_: Any) -> None:
        seen.append(request.headers.get("X-Amz-Security-Token"))

    c.raw.meta.events.register("before-send.s3.HeadObject", capture)
    try:
        with contextlib.suppress(AuthError):  # SeaweedFS refuses a token it did not issue
            await c.head(s3_bucket, "absent")
    finally:
        await c.aclose()
    assert seen and seen[0] in ("session-token-value", b"session-token-value")


async def test_head_403_is_an_error_not_absent(seaweed_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = seaweed_s3.make_bucket()
    seaweed_s3.sync_client().put_object(Bucket=bucket, Key="k", Body=b"data")
    assert seaweed_s3.writer is not None
    use_server(monkeypatch, seaweed_s3, seaweed_s3.writer)
    c = await S3Client.open(S3Settings())
    try:
        for key in ("k", "absent"):  # a 403 hides whether the object exists: never "absent"
            with pytest.raises(AuthError) as info:
                await c.head(bucket, key, at=At(recid="81009", file="k"))
            assert info.value.status == 403 and "record 81009" in str(info.value)
            assert seaweed_s3.writer.secret_key not in str(info.value)
    finally:
        await c.aclose()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    c = await S3Client.open(S3Settings())
    try:
        with pytest.raises(AuthError):
            await c.head(bucket, "k")
    finally:
        await c.aclose()


async def test_wrong_content_md5_is_refused(seaweed_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """SeaweedFS checks Content-MD5 (moto does not): a mismatch is a VerificationError, nothing stored."""
    bucket = seaweed_s3.make_bucket()
    use_server(monkeypatch, seaweed_s3)
    c = await S3Client.open(S3Settings())
    try:
        with pytest.raises(VerificationError):
            await c.put(bucket, "k", b"the bytes", content_md5=b64md5(b"other bytes"), metadata={})
        assert await c.head(bucket, "k") is None
    finally:
        await c.aclose()


async def test_unreachable_endpoint_is_unavailable_not_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    port = free_port()  # nothing listens there
    c = await S3Client.open(S3Settings(endpoint_url=f"http://127.0.0.1:{port}", region="us-east-1", attempts=1))
    try:
        with pytest.raises(TargetUnavailable) as info:
            await c.head("bkt", "k")
        assert info.value.retryable
    finally:
        await c.aclose()


# --- answers real servers will not give: an S3-speaking stand-in on 127.0.0.1 ------------

_EXPIRED_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ExpiredToken</Code>'
    b"<Message>The provided token has expired.</Message></Error>"
)
_SLOW_XML = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"


@pytest.fixture
async def stand_in(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.Response:
        if request.path.endswith("/slow"):
            return web.Response(status=503, body=_SLOW_XML, headers={"Retry-After": "3"})
        if request.method == "HEAD":
            return web.Response(status=400)  # what S3 gives a HEAD with an expired token: no body
        return web.Response(status=400, body=_EXPIRED_XML, content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIATEMPORARY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "temporary-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "expired-session-token")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_expired_token_and_slowdown_through_botocore(stand_in: str) -> None:
    c = await S3Client.open(S3Settings(endpoint_url=stand_in, region="us-east-1", attempts=1))
    try:
        with pytest.raises(CredentialsExpired) as expired:
            await c.put("bkt", "k", b"x", content_md5=b64md5(b"x"), metadata={}, at=At(recid="19835081"))
        assert not expired.value.retryable and "record 19835081" in str(expired.value)
        assert "expired-session-token" not in str(expired.value) and "temporary-secret" not in str(expired.value)
        with pytest.raises(AuthError):  # the HEAD's bare 400 is an error too, never "absent"
            await c.head("bkt", "k")
        with pytest.raises(RateLimited) as slow:
            await c.put("bkt", "slow", b"x", content_md5=b64md5(b"x"), metadata={})
        assert slow.value.retry_after == 3.0
    finally:
        await c.aclose()


async def test_a_put_does_not_wait_for_100_continue(client: S3Client, s3_bucket: str) -> None:
    # botocore adds "Expect: 100-continue" to every PUT with a body (bytes become a file);
    # aiohttp sends those headers outside its error handling (an unretrieved task traceback
    # when the server closes the connection meanwhile), and it costs a round trip per PUT.
    sent: list[dict[str, str]] = []
    client.raw.meta.events.register("before-send.s3", lambda request, **_: sent.append(dict(request.headers)))
    body = b"ferry " * 1000
    await client.put(s3_bucket, "p/81010/a.txt/content", body, content_md5=b64md5(body), metadata={})
    assert sent and all("Expect" not in h for h in sent), sent
    assert (await client.head(s3_bucket, "p/81010/a.txt/content")) is not None


async def test_a_body_is_sent_as_given_unsigned_and_from_its_start(client: S3Client, s3_bucket: str) -> None:
    # botocore signs the body's sha256 over plain HTTP (on the event loop, ~1.3 CPU-s per
    # GiB) and wraps bytes in a BytesIO that aiohttp copies whole: neither may happen. The
    # body is the caller's BytesIO, left at its end as a failed try would leave it.
    sent: list[tuple[dict[str, str], object]] = []
    client.raw.meta.events.register(
        "before-send.s3", lambda request, **_: sent.append((dict(request.headers), request.body))
    )
    data = b"ferry " * 2000
    body = io.BytesIO()
    body.write(data)
    etag = await client.put(s3_bucket, "p/81011/a.txt/content", body, content_md5=b64md5(data), metadata={})
    headers, sent_body = sent[-1]
    assert {k.lower(): v for k, v in headers.items()}["x-amz-content-sha256"] in (
        "UNSIGNED-PAYLOAD",
        b"UNSIGNED-PAYLOAD",
    )
    assert sent_body is body or getattr(sent_body, "__wrapped__", None) is body
    info = await client.head(s3_bucket, "p/81011/a.txt/content")
    assert info is not None and info.size == len(data) and info.etag == etag == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize(
    "value",
    [
        "Fri, 04 Dec 2026 20:59:22 GMT",  # Last-Modified header
        "2026-12-04T20:59:22.000Z",  # ListObjectsV2 XML
        "2026-12-04T20:59:22.123456+00:00",
        1733345962,  # epoch: left to botocore
        "not a date at all",  # also left to botocore, which raises as it did
    ],
)
def test_the_timestamp_parser_agrees_with_botocores(value: str | int) -> None:
    try:
        want = parse_timestamp(value)  # type: ignore[arg-type]  # epochs too, at run time
    except ValueError:
        with pytest.raises(ValueError):
            timestamp(value)
        return
    got = timestamp(value)
    assert got == want and got.utcoffset() == want.utcoffset()
