"""The sandbox InvenioRDM/NRP repository as a subprocess on 127.0.0.1.

A subprocess (not an in-process server) so that client processes can be killed in
tests while the repository keeps running, and so that `restart()` really restarts it.

    def test_x(repository):            # defaults: InvenioRDM limits, NRP flavour on
        repository.url, repository.token, repository.state()
        repository.configure(error_rate=0.2)       # any RepositoryOptions knob, live

    def test_y(repository_factory):
        repo = repository_factory(rate_per_minute=5, max_files=3, tokens=["a", "b"])

    def test_z(https_repository):       # HTTPS with the sandbox's own CA (opt-in)
        https_repository.url            # https://127.0.0.1:PORT
        https_repository.ca_file        # trust it: SSL_CERT_FILE / REQUESTS_CA_BUNDLE / ca_file
        https_repository.client_env()   # os.environ plus both variables set to ca_file

`repository_factory(https=True, ...)` gives the same with knobs.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 20.0


def _flag(name: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    # "--flag=value": values may start with "-" (tokens, negative numbers)
    return [f"--{name.replace('_', '-')}={value}"]


@dataclass
class RepositoryHandle:
    """A running sandbox repository process and ways to steer and inspect it."""

    url: str
    token: str
    data_dir: Path
    request_log: Path
    tokens: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    https: bool = False

    @property
    def ca_file(self) -> Path | None:
        """The sandbox CA (PEM) when serving HTTPS, else None."""
        return self.data_dir / "tls" / "ca.pem" if self.https else None

    def client_env(self, **extra: str) -> dict[str, str]:
        """os.environ for a client process; trusts the sandbox CA when serving HTTPS."""
        env = dict(os.environ)
        if self.ca_file is not None:
            env["SSL_CERT_FILE"] = str(self.ca_file)
            env["REQUESTS_CA_BUNDLE"] = str(self.ca_file)
        env.update(extra)
        return env

    # --- control ---------------------------------------------------------------------
    def configure(self, **knobs: Any) -> None:
        """Change knobs on the running server (and keep them for restart())."""
        self._admin("POST", "/_sandbox/config", knobs)
        self.options.update(knobs)

    def state(self) -> dict[str, Any]:
        """Counts (drafts, records, files, by_recid) and per-record detail from the server."""
        result: dict[str, Any] = self._admin("GET", "/_sandbox/state")
        return result

    def requests_log(self) -> list[dict[str, Any]]:
        """The rows of the request log written so far."""
        if not self.request_log.exists():
            return []
        return [json.loads(line) for line in self.request_log.read_text().splitlines() if line.strip()]

    def restart(self) -> None:
        """Stop and start again on the same port with the same data, tokens and knobs."""
        port = int(self.url.rsplit(":", 1)[1])
        self.stop()
        self.process, self.url = _spawn(self.data_dir, port, self.tokens, self.options, https=self.https)

    def stop(self) -> None:
        proc = self.process
        if proc is None:
            return
        self.process = None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file is not None else None
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return json.loads(resp.read())


def _spawn(
    data_dir: Path, port: int, tokens: list[str], options: dict[str, Any], *, https: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    cmd = [sys.executable, "-m", "sandbox.repository", "--data", str(data_dir), "--port", str(port)]
    if https:
        cmd.append("--https")
    for token in tokens:
        cmd.append(f"--token={token}")
    for name, value in options.items():
        cmd += _flag(name, value)
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "server.log", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            byte = os.read(proc.stdout.fileno(), 1)  # unbuffered: select() sees the fd only
            if not byte:
                break
            line += byte
        elif proc.poll() is not None:
            break
    url = line.decode().strip()
    if not url.startswith("https://" if https else "http://"):
        proc.kill()
        proc.wait()
        log_text = (data_dir / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"sandbox repository did not start: {url!r}\n{log_text}")
    return proc, url


def start_repository_process(
    data_dir: Path, *, tokens: list[str] | None = None, port: int = 0, https: bool = False, **options: Any
) -> RepositoryHandle:
    """Start one sandbox repository subprocess (callers must call .stop())."""
    tokens = tokens or [secrets.token_urlsafe(24)]
    proc, url = _spawn(data_dir, port, tokens, options, https=https)
    return RepositoryHandle(
        url=url,
        token=tokens[0],
        tokens=tokens,
        data_dir=data_dir,
        request_log=data_dir / "requests.jsonl",
        options=dict(options),
        process=proc,
        https=https,
    )


@pytest.fixture
def repository_factory(tmp_path: Path) -> Iterator[Callable[..., RepositoryHandle]]:
    """Start sandbox repositories with custom knobs: `repository_factory(max_files=3)`."""
    handles: list[RepositoryHandle] = []

    def make(*, tokens: list[str] | None = None, https: bool = False, **options: Any) -> RepositoryHandle:
        data_dir = tmp_path / f"repository-{len(handles)}"
        handle = start_repository_process(data_dir, tokens=tokens, https=https, **options)
        handles.append(handle)
        return handle

    try:
        yield make
    finally:
        for handle in handles:
            handle.stop()


@pytest.fixture
def repository(repository_factory: Callable[..., RepositoryHandle]) -> RepositoryHandle:
    """A sandbox repository with InvenioRDM defaults (100/min, 5000/h; NRP flavour on)."""
    return repository_factory()


@pytest.fixture
def https_repository(repository_factory: Callable[..., RepositoryHandle]) -> RepositoryHandle:
    """The same sandbox over HTTPS with its own CA (`.ca_file`, `.client_env()`)."""
    return repository_factory(https=True)
