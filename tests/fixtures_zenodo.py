"""The Zenodo stand-in (sandbox/zenodo.py) on 127.0.0.1, in a thread with its own event loop.

A thread, not a subprocess: it starts in milliseconds, and client processes (ferry run as
a subprocess) can still be killed while it keeps its state. Tests steer and inspect it
through its loopback admin endpoints, never by touching its state from another thread.

    def test_x(zenodo):                      # Zenodo's defaults (100/min, 5000/h, 100 files)
        zenodo.url, zenodo.token, zenodo.writes(), zenodo.summary()
        zenodo.configure(index_delay_ms=500)

    def test_y(zenodo_factory):
        zen = zenodo_factory(rate_per_minute=5, max_files=3, tokens=["a", "b"])

    def test_z(cut_zenodo):                  # its file links through a CuttingProxy
        zen, cutter = cut_zenodo; cutter.always = 4096
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox.zenodo import ZenodoThread
from tests.fixtures_s3 import free_port


@dataclass
class ZenodoHandle:
    url: str
    token: str
    tokens: list[str]
    data_dir: Path
    runner: ZenodoThread = field(repr=False)

    @property
    def api(self) -> str:
        return self.url + "/api"

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def configure(self, **knobs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("POST", "/_sandbox/config", knobs)
        return result

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("GET", "/_sandbox/state")
        return result

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._admin("GET", "/_sandbox/requests")
        return result

    def writes(self) -> list[dict[str, Any]]:
        """The writing API requests (POST/PUT/PATCH/DELETE) received so far."""
        return [r for r in self.requests() if r["writing"]]

    def delete_record(self, record_id: int | str) -> None:
        self._admin("POST", f"/_sandbox/records/{record_id}/delete", {})

    def corrupt(self, record_id: int | str, key: str, offset: int = 0) -> None:
        """Flip one byte of what the record serves for ``key`` (its listed md5 stays)."""
        self._admin("POST", f"/_sandbox/records/{record_id}/corrupt", {"key": key, "offset": offset})

    def stop(self) -> None:
        self.runner.stop()


def start_zenodo_thread(data_dir: Path, *, tokens: list[str] | None = None, **options: Any) -> ZenodoHandle:
    tokens = tokens or [secrets.token_urlsafe(24)]
    runner = ZenodoThread(data_dir, tokens=tokens, **options)
    running = runner.start()
    return ZenodoHandle(url=running.url, token=tokens[0], tokens=tokens, data_dir=data_dir, runner=runner)


@pytest.fixture
def zenodo_factory(tmp_path: Path) -> Iterator[Callable[..., ZenodoHandle]]:
    handles: list[ZenodoHandle] = []

    def make(*, tokens: list[str] | None = None, **options: Any) -> ZenodoHandle:
        handle = start_zenodo_thread(tmp_path / f"zenodo-{len(handles)}", tokens=tokens, **options)
        handles.append(handle)
        return handle

    try:
        yield make
    finally:
        for handle in handles:
            handle.stop()


@pytest.fixture
def zenodo(zenodo_factory: Callable[..., ZenodoHandle]) -> ZenodoHandle:
    """A Zenodo stand-in with Zenodo's defaults."""
    return zenodo_factory()


# --- a proxy that cuts content downloads short (streams, resumes, truncation) ------------


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 that closes a content download after ``cut`` response bytes.

    ``cuts``: one entry per coming content connection (a count of response bytes, headers
    included, or None to pass it whole); when the list is empty, ``by_file`` applies to the
    files it names (key -> the cut of a first request, the cut of a resumed one), then
    ``always`` (and ``always_range`` to a resumed request; None: pass). The first request
    line of every content connection and its Range header are kept in ``seen``."""

    def __init__(self, port: int, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.cuts: list[int | None] = []
        self.always: int | None = None
        self.always_range: int | None = None  # for requests with a Range header, once ``cuts`` is empty
        self.by_file: dict[str, tuple[int, int]] = {}  # key -> (first request's cut, resumed request's cut)
        self.seen: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", port))
        self.url = f"http://127.0.0.1:{port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        head = client.recv(65536)
        lines = head.split(b"\r\n")
        line = lines[0].decode(errors="replace")
        ranges = next((ln.split(b":", 1)[1].strip().decode() for ln in lines if ln.lower().startswith(b"range:")), None)
        cut = None
        if "/content" in line:
            with self._lock:
                self.seen.append((line, ranges))
                cut = self.cuts.pop(0) if self.cuts else self._cut_for(line, ranges)
        # One request per connection (so every request is seen and can be cut): the server
        # is asked to close after its answer, and so the client never reuses it.
        first, _, rest = head.partition(b"\r\n")
        upstream.sendall(first + b"\r\nConnection: close\r\n" + rest)
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        sent = 0
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                if cut is not None and sent + len(data) >= cut:
                    client.sendall(data[: cut - sent])
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _cut_for(self, line: str, ranges: str | None) -> int | None:
        for key, (first, resumed) in self.by_file.items():
            if f"/files/{key}/content " in line:
                return first if ranges is None else resumed
        return self.always if ranges is None else self.always_range

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def cut_zenodo(zenodo_factory: Callable[..., ZenodoHandle]) -> Iterator[tuple[ZenodoHandle, CuttingProxy]]:
    """The Zenodo stand-in whose file links point at a cutting proxy in front of it."""
    port = free_port()
    zen = zenodo_factory(public_url=f"http://127.0.0.1:{port}")
    proxy = CuttingProxy(port, int(zen.url.rsplit(":", 1)[1]))
    try:
        yield zen, proxy
    finally:
        proxy.close()
