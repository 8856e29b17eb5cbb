"""What the test proxies on 127.0.0.1 share (``tests/fixtures_s3.S3Proxy``,
``tests/reliability/fault_proxy.FaultProxy``): reading a request's body (plain or chunked),
forwarding it upstream, and writing an answer back, the upstream's or the proxy's own error."""

from __future__ import annotations

import http.client
import http.server
import urllib.parse
from typing import Any

HOST = "127.0.0.1"
Answer = tuple[int, list[tuple[str, str]], bytes]  # (status, headers, body)


def forward(upstream: urllib.parse.SplitResult, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
    """Send one request to ``upstream`` with the whole body read (no Expect, no chunks) and return its answer."""
    conn = http.client.HTTPConnection(upstream.hostname or HOST, upstream.port, timeout=120)
    try:
        headers = {k: v for k, v in headers.items() if k.lower() not in ("expect", "transfer-encoding")}
        headers["Content-Length"] = str(len(body))
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


class ForwardingHandler(http.server.BaseHTTPRequestHandler):
    """The request handler's common part; a proxy subclasses it with its own ``_any`` (every method)."""

    protocol_version = "HTTP/1.1"  # keep-alive and Expect: 100-continue, as S3

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _length(self) -> int:
        return int(self.headers.get("Content-Length") or 0)

    def _chunked(self) -> bool:
        return self.headers.get("Transfer-Encoding", "").lower() == "chunked"

    def _body(self) -> bytes:
        if not self._chunked():
            return self.rfile.read(self._length())
        out = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                self.rfile.readline()
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline()

    def _forward(self, upstream: urllib.parse.SplitResult, body: bytes) -> Answer:
        return forward(upstream, self.command, self.path, dict(self.headers.items()), body)

    def _send_error(self, status: int, content_type: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Answer with an error of the proxy's own (a HEAD gets the headers only)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _pass_on(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        """Write the upstream's answer back."""
        self.send_response(status)
        # A HEAD's Content-Length is the object's size: passed on as it came.
        dropped = {"transfer-encoding", "connection"}
        if self.command != "HEAD":
            dropped.add("content-length")
        for name, value in headers:
            if name.lower() not in dropped:
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _any(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self._any()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_GET
