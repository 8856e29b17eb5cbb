"""A fault-injecting HTTP proxy on 127.0.0.1, for targets that have no fault knobs of their own
(the Zenodo stand-in has only 429s and latency; moto has none).

Every request goes to ``upstream`` unless a fault is drawn for it first (seeded, so a run
is repeatable):

- ``error_rate``: answered 500 or 503 at once, never forwarded (a server error);
- ``drop_rate`` / ``drop_next``: a request with a body has half of it read, then the
  connection is closed without an answer (a connection dropped mid-body);
- ``lost_rate`` / ``lost_next``: forwarded (it takes effect upstream), then the connection is closed
  without an answer (the answer lost on the way back);
- ``storm(n)``: the next ``n`` requests are refused with ``storm_status`` (429, or 503
  SlowDown for S3), ``Retry-After`` and ``X-RateLimit-Reset``;
- ``latency_s``: every request waits this long first;
- ``stop()`` / ``start()``: the listener closed (connections refused, open ones cut), then
  back on the same port.

What happened is in ``log``: method, path, status (0 = no answer), ts, duration, and the
fault drawn, so a test can show its fault did hit the run; a request is written down once
its answer is out. With every fault off it is ``tests/fixtures_s3.S3Proxy``, the counting
proxy of the S3 tests. The Host header is passed on
unchanged, so the Zenodo stand-in's links point back at the proxy; moto checks no
signatures.
"""

from __future__ import annotations

import contextlib
import http.server
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.proxy_handler import HOST, ForwardingHandler

# (status, code) -> (content type, body) of an error answered by the proxy itself.
ErrorBody = Callable[[int, str], tuple[str, bytes]]


def json_error(status: int, code: str) -> tuple[str, bytes]:
    return "application/json", f'{{"status": {status}, "message": "{code} (fault proxy)"}}'.encode()


def s3_error(status: int, code: str) -> tuple[str, bytes]:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>fault proxy</Message></Error>'
    return "application/xml", body.encode()


@dataclass
class Knobs:
    error_rate: float = 0.0
    drop_rate: float = 0.0
    drop_next: int = 0
    lost_rate: float = 0.0
    lost_next: int = 0
    latency_s: float = 0.0
    storm_left: int = 0
    storm_status: int = 429
    storm_code: str = "TooManyRequests"
    retry_after: int = 1
    # Only requests whose "METHOD path" this returns True for may draw a random fault.
    faulty: Callable[[str, str], bool] = field(default=lambda method, path: True)


class FaultProxy:
    def __init__(self, upstream: str, *, seed: int = 0, error_body: ErrorBody = json_error) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.knobs = Knobs()
        self.log: list[dict[str, Any]] = []
        self.error_body = error_body
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # --- steering -----------------------------------------------------------------------
    def configure(self, **knobs: Any) -> None:
        with self._lock:
            for name, value in knobs.items():
                if not hasattr(self.knobs, name):
                    raise ValueError(f"unknown fault knob {name!r}")
                setattr(self.knobs, name, value)

    def storm(self, count: int) -> None:
        self.configure(storm_left=count)

    def storm_left(self) -> int:
        with self._lock:
            return self.knobs.storm_left

    def start(self) -> None:
        """Listen (again, on the same port once it had one)."""
        server = http.server.ThreadingHTTPServer((HOST, self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: new connections refused, the open ones cut."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            cut, self._open = list(self._open), set()
        for sock in cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stop()

    def faults(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.log if r["fault"] == kind]

    # --- the decision per request -------------------------------------------------------
    def _draw(self, method: str, path: str, has_body: bool) -> str:
        k = self.knobs
        with self._lock:
            if k.storm_left > 0:
                k.storm_left -= 1
                return "storm"
            if not k.faulty(method, path):
                return ""
            if has_body and k.drop_next > 0:
                k.drop_next -= 1
                return "drop"
            if k.lost_next > 0:
                k.lost_next -= 1
                return "lost"
            roll = self._rng.random()
            if roll < k.error_rate:
                return "error"
            if has_body and roll < k.error_rate + k.drop_rate:
                return "drop"
            if roll < k.error_rate + k.drop_rate + k.lost_rate:
                return "lost"
            return ""

    def _note(self, row: dict[str, Any]) -> None:
        with self._lock:
            self.log.append(row)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        return type("Handler", (FaultHandler,), {"proxy": self})


class FaultHandler(ForwardingHandler):
    """``FaultProxy``'s request handler; ``proxy`` is set per proxy (a subclass each)."""

    proxy: FaultProxy

    def setup(self) -> None:
        super().setup()
        with self.proxy._lock:
            self.proxy._open.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.proxy._lock:
            self.proxy._open.discard(self.connection)

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # a client that hung up, or stop() cut it
            super().handle()

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _any(self) -> None:
        fault = self.proxy._draw(self.command, self.path, self._chunked() or self._length() > 0)
        self._row: dict[str, Any] = {"method": self.command, "path": self.path, "ts": time.time(), "fault": fault}
        try:
            self._serve(fault)
        finally:
            self._noted(0)  # no answer: dropped, lost, or the client hung up (noted now if not yet)

    def _noted(self, status: int) -> None:
        """Write this request down with ``status`` (0 = no answer), once."""
        row = self._row
        if "status" not in row:
            row["status"], row["duration"] = status, time.time() - row["ts"]
            self.proxy._note(row)

    def _serve(self, fault: str) -> None:
        """Answer one request with its fault drawn."""
        if self.proxy.knobs.latency_s > 0:
            time.sleep(self.proxy.knobs.latency_s)
        if fault == "drop":
            self.rfile.read(self._length() // 2)  # half the body, then the line goes dead
            self._hang_up()
            return
        body = self._body()
        if fault in ("storm", "error"):
            self._refuse(fault)
            return
        status, headers, data = self._forward(self.proxy.upstream, body)
        if fault == "lost":
            self._hang_up()
            return
        self._answer(status, headers, data)

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        """Pass the upstream's answer on, then write the request down (a proxy that rewrites
        answers overrides this)."""
        self._pass_on(status, headers, data)
        self._noted(status)

    def _refuse(self, fault: str) -> None:
        k = self.proxy.knobs
        extra: dict[str, str] = {}
        if fault == "storm":
            status, code = k.storm_status, k.storm_code
            extra = {"Retry-After": str(k.retry_after), "X-RateLimit-Reset": str(int(time.time()) + k.retry_after)}
        else:
            status = self.proxy._rng.choice((500, 503))
            code = "InternalError" if status == 500 else "ServiceUnavailable"
        ctype, data = self.proxy.error_body(status, code)
        self._send_error(status, ctype, data, extra)
        self._noted(status)
