"""Archive downloads read by worker threads (archive/fetch_thread.py, upload/targets/s3_thread_get.py).

The threads' blocking GETs are signed as botocore signs (SeaweedFS checks every signature,
odd key names included); anything but the bytes asked for hands the file to the loop's
path, and a read cut midway is resumed there from the end of the .part, never refetched
whole or left wrong.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from archive.download import download_revision
from archive.upload import upload_revision
from tests.fixtures_s3 import S3Proxy, S3Server
from tests.test_archive import MiB, make_tree, tree_bytes
from tests.test_s3_get import KEYS, _env, _fail_first_get, _no_whole_call, _read
from upload.targets.base import BlockingOpen, BlockingStream, RemoteRecord
from upload.targets.local import LocalTarget
from upload.targets.s3_client import S3Client, S3Settings


class _CutAfter:
    """A stream whose connection is reset once ``limit`` bytes are read."""

    def __init__(self, stream: BlockingStream, limit: int) -> None:
        self.stream, self.limit, self.n = stream, limit, 0

    def readinto(self, buffer: memoryview) -> int:
        if self.n >= self.limit:
            raise ConnectionResetError("cut by the test")
        got = self.stream.readinto(buffer)
        self.n += got
        return got

    def close(self) -> None:
        self.stream.close()


async def test_a_read_cut_midway_is_resumed_by_the_loop_path(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", n=3, big=9 * MiB)
    target = LocalTarget(tmp_path / "arch")
    await upload_revision(target, "set", "001", tmp_path / "src")
    blocking, read = target.blocking_open, target.read_file
    reads: list[tuple[str, int]] = []

    async def blocking_open(rec: RemoteRecord) -> BlockingOpen | None:
        open_at = await blocking(rec)
        assert open_at is not None

        def cut(key: str, start: int) -> BlockingStream | None:
            stream = open_at(key, start)
            return None if stream is None else _CutAfter(stream, 3 * MiB if key == "big.bin" else 10)

        return cut

    async def read_file(rec: RemoteRecord, key: str, *, start: int = 0):  # type: ignore[no-untyped-def]
        reads.append((key, start))
        async for chunk in read(rec, key, start=start):
            yield chunk

    setattr(target, "blocking_open", blocking_open)  # noqa: B010 (an instance's method, replaced)
    setattr(target, "read_file", read_file)  # noqa: B010
    got = await download_revision(target, "set", "001", tmp_path / "dst")
    assert got.ok and tree_bytes(tmp_path / "dst") == files
    starts = dict(reads)
    # The big file: resumed from what the thread wrote (3 MiB and the piece that crossed
    # it); the small ones, cut after their first piece, fetched again whole.
    assert 3 * MiB <= starts.pop("big.bin") < 4 * MiB
    assert starts and all(start == 0 for key, start in starts.items() if key != "djarchive-manifest.csv")
    assert not list((tmp_path / "dst").rglob("*.part"))


@pytest.fixture
async def seaweed_client(seaweed_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[S3Client]:
    _env(monkeypatch, seaweed_s3)
    client = await S3Client.open(S3Settings())
    try:
        yield client
    finally:
        await client.aclose()


def _read_all(stream: BlockingStream | None) -> bytes:
    assert stream is not None
    out, buffer = bytearray(), memoryview(bytearray(64 * 1024))
    try:
        while n := stream.readinto(buffer):
            out += buffer[:n]
    finally:
        stream.close()
    return bytes(out)


async def test_thread_gets_are_signed_as_botocore_signs(
    seaweed_s3: S3Server, seaweed_client: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = seaweed_s3.make_bucket()
    sync = seaweed_s3.sync_client()
    bodies = {key: os.urandom(100_000 + n) for n, key in enumerate(KEYS)}
    for key, body in bodies.items():
        sync.put_object(Bucket=bucket, Key=key, Body=body)
    asked = _no_whole_call(seaweed_client, monkeypatch)
    base = await seaweed_client.threaded.ready(bucket)
    assert base is not None
    for key, body in bodies.items():  # one connection, reused; a range from the middle
        assert _read_all(seaweed_client.threaded.open(base, key, 0)) == body, key
        assert _read_all(seaweed_client.threaded.open(base, key, 99_999)) == body[99_999:], key
    assert seaweed_client.threaded.open(base, "nothing-here", 0) is None  # a 404: the client's read says so
    assert asked == []
    seaweed_client.threaded.drop()


@pytest.mark.parametrize(("status", "code"), [(503, "ServiceUnavailable"), (403, "SignatureDoesNotMatch")])
async def test_a_refused_thread_get_hands_the_file_to_the_clients_read(
    moto_s3: S3Server, s3_proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch, status: int, code: str
) -> None:
    _env(monkeypatch, moto_s3)
    bucket = moto_s3.make_bucket()
    moto_s3.sync_client().put_object(Bucket=bucket, Key="k", Body=b"bytes")
    client = await S3Client.open(S3Settings(endpoint_url=s3_proxy.endpoint_url))
    try:
        base = await client.threaded.ready(bucket)
        assert base is not None
        rule, failed = _fail_first_get(status, code)
        s3_proxy.fail_when(rule)
        assert client.threaded.open(base, "k", 0) is None and failed
        assert await _read(client, bucket, "k") == b"bytes"  # the loop's way: short GET, or the whole call
        client.threaded.drop()
    finally:
        await client.aclose()


async def test_no_thread_gets_when_requests_are_budgeted(moto_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request budget is kept on the loop; a thread's GET would not take its slot."""
    from tests.test_s3_get import _Counting

    _env(monkeypatch, moto_s3)
    bucket = moto_s3.make_bucket()
    client = await S3Client.open(S3Settings(), limiter=_Counting())
    try:
        assert await client.threaded.ready(bucket) is None
    finally:
        await client.aclose()


class _Canned:
    """A raw HTTP server on 127.0.0.1 answering each GET with the bytes chosen for its path."""

    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while request := reader.readline():
                path = request.split()[1].decode().rsplit("/", 1)[-1]
                while reader.readline() not in (b"\r\n", b""):
                    pass
                conn.sendall(self.answers[path])
                if path.startswith("close"):
                    return

    def stop(self) -> None:
        self.sock.close()


async def test_the_threads_wire_takes_only_a_stated_length_and_hands_on_the_rest(
    moto_s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Other: y\r\n\r\nbytes"
    server = _Canned(
        {
            "ok": ok,
            "again": ok,
            "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nbytes\r\n0\r\n\r\n",
            "closes": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbytes",
            "close-short": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nbytes",
            "garbage": b"SSH-2.0-OpenSSH\r\n\r\n",
        }
    )
    _env(monkeypatch, moto_s3)
    client = await S3Client.open(S3Settings())
    threaded = client.threaded
    try:
        assert await threaded.ready(moto_s3.make_bucket()) is not None  # credentials frozen
        base = f"http://127.0.0.1:{server.port}/b/"
        assert _read_all(threaded.open(base, "ok", 0)) == b"bytes"
        assert _read_all(threaded.open(base, "again", 0)) == b"bytes" and server.connections == 1  # kept alive
        assert threaded.open(base, "chunked", 0) is None  # not this path's: the client's read takes it
        assert threaded.open(base, "garbage", 0) is None
        assert _read_all(threaded.open(base, "closes", 0)) == b"bytes"
        stream = threaded.open(base, "close-short", 0)
        assert stream is not None
        buffer = memoryview(bytearray(64))
        assert stream.readinto(buffer) == 5
        with pytest.raises(ConnectionError, match="5 bytes of the body still to come"):
            stream.readinto(buffer)
        stream.close()
        before = server.connections
        assert _read_all(threaded.open(base, "ok", 0)) == b"bytes" and server.connections == before + 1
        with socket.socket() as unused:  # a port nobody listens on
            unused.bind(("127.0.0.1", 0))
            nobody = f"http://127.0.0.1:{unused.getsockname()[1]}/b/"
        assert threaded.open(nobody, "ok", 0) is None  # refused: handed on, not raised
    finally:
        threaded.drop()
        server.stop()
        await client.aclose()


@pytest.mark.parametrize("token", [None, "session-token/with+odd=chars"])
@pytest.mark.parametrize("start", [0, 12345])
@pytest.mark.parametrize("base", ["http://127.0.0.1:9000/bucket/", "https://bucket.s3.eu-west-1.amazonaws.com:443/"])
def test_the_threads_signature_is_botocores(token: str | None, start: int, base: str) -> None:
    """The GET's SigV4 headers equal what botocore's S3 signer makes of the same request."""
    from datetime import UTC, datetime

    import botocore.auth
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from botocore.utils import percent_encode

    from upload.targets.s3_sigv4 import get_headers

    now = datetime(2026, 12, 6, 3, 4, 5, tzinfo=UTC)
    key = "ünï code/with space+plus%~tilde?#.bin"
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    url = base + percent_encode(key, safe="/~")
    request = AWSRequest(method="GET", url=url, headers={"Range": f"bytes={start}-"} if start else {})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
        S3SigV4Auth(creds, "s3", "eu-west-1").add_auth(request)
    theirs = {k.lower(): v for k, v in request.headers.items()}
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = "127.0.0.1:9000" if "127.0.0.1" in base else "bucket.s3.eu-west-1.amazonaws.com"
    ours = get_headers(
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        token=token,
        region="eu-west-1",
        host=host,
        path=parts.path,
        headers={"range": f"bytes={start}-"} if start else {},
        now=now,
    )
    assert ours["authorization"] == theirs["authorization"]
    assert ours == {k: v for k, v in theirs.items() if k in ours}


class _Seen:
    """A progress sink that keeps the order of what it was told, per file."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.bytes = 0
        self.total = 0

    def add_totals(self, *, records: int = 0, files: int = 0, bytes: int = 0) -> None:
        self.total += bytes

    def file_started(self, name: str) -> None:
        self.events.append(("started", name))

    def batch_started(self, names: Sequence[str]) -> None:
        raise AssertionError("the threads' files are shown one by one")

    def advance(self, nbytes: int) -> None:
        self.bytes += nbytes

    def file_finished(self, name: str, *, ok: bool, skipped_bytes: int = 0) -> None:
        self.events.append(("finished", name))

    def record_finished(self, *, ok: bool) -> None:
        return None


async def test_progress_shows_each_thread_fetched_file_started_then_finished(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", n=20, big=9 * MiB)
    target = LocalTarget(tmp_path / "arch")
    await upload_revision(target, "set", "001", tmp_path / "src")
    seen = _Seen()
    got = await download_revision(target, "set", "001", tmp_path / "dst", progress=seen)
    assert got.ok and tree_bytes(tmp_path / "dst") == files
    for name in files:
        assert [e for e, n in seen.events if n == name] == ["started", "finished"], name
    assert seen.bytes == seen.total == sum(len(b) for b in files.values())
