"""Receiving an upload's body: streamed into sinks in worker threads, with the fault knobs.

Used by the L (one PUT) and M (part) transfers of ``sandbox.repository_files``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from sandbox.repository_core import BYTES_READ_KEY, ApiError, Repo, fail

CHUNK = 1 << 20


class Dropped(Exception):
    """The sandbox cut the connection mid-body on purpose (fault knob)."""


class ClientGone(Exception):
    """The client went away (or sent less than it announced) during the body."""


def check_content_type(request: web.Request) -> None:
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/octet-stream":
        fail(415, "Invalid 'Content-Type' header. Expected one of: application/octet-stream.")


def fault(repo: Repo, counter: str, rate: str) -> bool:
    """Take one from a `*_next` counter, else roll the dice against a `*_rate` knob."""
    opts = repo.options
    if getattr(opts, counter) > 0:
        setattr(opts, counter, getattr(opts, counter) - 1)
        return True
    probability = float(getattr(opts, rate)) if rate else 0.0
    return probability > 0 and repo.rng.random() < probability


def check_announced(request: web.Request, limit: int) -> None:
    length = request.content_length
    if length is not None and length > limit:
        fail(400, "Maximum file size exceeded.")


def cut_point(repo: Repo, request: web.Request) -> int | None:
    """Where to cut this body (the drop knobs), or None."""
    if not fault(repo, "drop_next", "drop_rate"):
        return None
    length = request.content_length or 0
    return max(1, length // 2)


class _Dispatch:
    """Hands chunks to the sinks, each sink in its own worker thread; a sink's next chunk
    waits for its previous one, so each sees the chunks in order."""

    def __init__(self, sinks: list[Callable[[bytes], None]]) -> None:
        self.sinks = sinks
        self.pending: list[asyncio.Future[None] | None] = [None] * len(sinks)
        self.loop = asyncio.get_running_loop()

    async def __call__(self, data: bytes) -> None:
        for index, sink in enumerate(self.sinks):
            previous = self.pending[index]
            if previous is not None:
                await previous
            self.pending[index] = self.loop.run_in_executor(None, sink, data)

    async def settle(self) -> None:
        """Wait for every sink's last chunk (errors are raised by ``check``)."""
        waiting = [f for f in self.pending if f is not None]
        if waiting:
            await asyncio.wait(waiting)

    def check(self) -> None:
        for future in self.pending:
            if future is not None:
                future.result()  # a failed disk write surfaces here


def _checked(request: web.Request, chunk: bytes, total: int, *, limit: int, cut: int | None, corrupt: bool) -> bytes:
    """One received chunk, ``total`` bytes in: refused past ``limit``, the connection cut at
    ``cut``, the first byte flipped when ``corrupt``."""
    if total > limit:
        raise ApiError(400, "Maximum file size exceeded.")
    if cut is not None and total >= cut:
        if request.transport is not None:
            request.transport.close()
        raise Dropped()
    if corrupt and total == len(chunk):
        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
    return chunk


async def receive(
    request: web.Request,
    sinks: list[Callable[[bytes], None]],
    *,
    limit: int,
    drop_at: int | None,
    corrupt: bool,
    rate: float = 0.0,
) -> int:
    """Stream the body into every sink, each sink in its own worker thread.

    The disk write and the md5 run at the same time on the two cores (both release the
    GIL), while the event loop reads the next chunk from the socket.
    """
    dispatch = _Dispatch(sinks)
    buffered: list[bytes] = []
    buffered_len = 0
    total = 0
    started = time.monotonic()
    try:
        while chunk := await request.content.read(CHUNK):
            total += len(chunk)
            if rate > 0:  # the link's pace: the chunk "arrives" when the link had time to carry it
                await asyncio.sleep(max(0.0, started + total / rate - time.monotonic()))
            request[BYTES_READ_KEY] = total
            buffered.append(_checked(request, chunk, total, limit=limit, cut=drop_at, corrupt=corrupt))
            buffered_len += len(chunk)
            if buffered_len >= CHUNK:
                data = b"".join(buffered)
                buffered, buffered_len = [], 0
                await dispatch(data)
        if buffered:
            await dispatch(b"".join(buffered))
    except (OSError, aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
        raise ClientGone(str(exc)) from exc
    finally:
        await dispatch.settle()
    dispatch.check()
    declared = request.content_length
    if declared is not None and total != declared:
        raise ClientGone(f"body ended after {total} of {declared} bytes")
    return total


class BlobWriter:
    """A new blob and the md5 of what goes into it (each method runs in a worker thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = open(path, "wb")  # noqa: SIM115 - closed in close(), used across threads
        self.md5 = hashlib.md5()

    def write(self, data: bytes) -> None:
        self.fh.write(data)

    def hash(self, data: bytes) -> None:
        self.md5.update(data)

    def close(self) -> None:
        self.fh.close()
