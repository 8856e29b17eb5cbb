"""The Zenodo stand-in (sandbox/zenodo.py) on 127.0.0.1, in a thread with its own event loop.

A thread, not a subprocess: it starts in milliseconds, and client processes (ferry run as
a subprocess) can still be killed while it keeps its state. Tests steer and inspect it
through its loopback admin endpoints, never by touching its state from another thread.

    def test_x(zenodo):                      # Zenodo's defaults (100/min, 5000/h, 100 files)
        zenodo.url, zenodo.token, zenodo.writes(), zenodo.summary()
        zenodo.configure(index_delay_ms=500)

    def test_y(zenodo_factory):
        zen = zenodo_factory(rate_per_minute=5, max_files=3, tokens=["a", "b"])
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox.zenodo import ZenodoThread


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
