"""A lock object with an expiry, so two mirrors never write the same prefix at once.

The lock is one small JSON object (holder host, pid, run id, when taken, when it
expires) written with S3's conditional writes: ``If-None-Match: *`` to take a free lock,
``If-Match: <etag>`` to renew ours or to take over one whose expiry has passed (so two
takers of a stale lock cannot both win: the second's If-Match fails). A holder that
crashed (kill -9) leaves the lock behind; the next run refuses it until it expires,
unless the holder ran on the same host and its process is gone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from ferry.core.errors import Conflict, TargetNotFound
from upload.targets.s3_client import At, S3Client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    run: str
    taken: float  # epoch seconds
    expires: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.expires))
        return f"host {self.host} pid {self.pid} (run {self.run}), until {when}"


def _body(holder: Holder) -> bytes:
    return json.dumps(holder.__dict__, sort_keys=True).encode()


def _parse(data: bytes) -> Holder | None:
    try:
        raw: Any = json.loads(data)
        return Holder(str(raw["host"]), int(raw["pid"]), str(raw["run"]), float(raw["taken"]), float(raw["expires"]))
    except (ValueError, KeyError, TypeError):
        return None  # not a lock we can read: treated as stale (it cannot say when it ends)


class S3Lock:
    """``await lock.acquire()`` ... ``await lock.renew()`` ... ``await lock.release()``."""

    def __init__(self, client: S3Client, bucket: str, key: str, *, ttl: float, run: str) -> None:
        self.client, self.bucket, self.key, self.ttl, self.run = client, bucket, key, ttl, run
        self._etag: str | None = None

    def _me(self) -> Holder:
        now = time.time()
        return Holder(socket.gethostname(), os.getpid(), self.run, now, now + self.ttl)

    async def _put(self, *, if_match: str | None) -> str:
        body = _body(self._me())
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        return await self.client.put(
            self.bucket,
            self.key,
            body,
            content_md5=md5,
            metadata={},
            content_type="application/json",
            if_none_match=if_match is None,
            if_match=if_match,
        )

    async def acquire(self) -> None:
        """Take the lock, or raise Conflict naming its holder and when it expires."""
        try:
            self._etag = await self._put(if_match=None)
            return
        except Conflict:
            pass
        try:
            data, etag = await self.client.get_small(self.bucket, self.key, limit=64 * 1024, at=At())
        except TargetNotFound:  # released in between: try once more from the start
            self._etag = await self._put(if_match=None)
            return
        holder = _parse(data)
        if holder is not None and holder.expires > time.time() and not self._dead(holder):
            raise Conflict(
                f"s3://{self.bucket}/{self.key} is held by {holder.describe()}: another mirror of this "
                "prefix is running (a crashed one's lock is taken over after its expiry)"
            )
        try:
            self._etag = await self._put(if_match=etag)
        except Conflict:
            raise Conflict(f"s3://{self.bucket}/{self.key}: another run took over the stale lock first") from None
        log.warning("took over the stale lock s3://%s/%s (%s)", self.bucket, self.key, holder and holder.describe())

    async def renew(self) -> None:
        """Push the expiry out; Conflict when the lock is no longer ours (it expired and was taken)."""
        if self._etag is None:
            raise Conflict(f"s3://{self.bucket}/{self.key}: renewing a lock we do not hold")
        try:
            self._etag = await self._put(if_match=self._etag)
        except Conflict:
            self._etag = None
            raise Conflict(f"s3://{self.bucket}/{self.key}: the lock was lost (expired and taken over)") from None

    async def release(self) -> None:
        """Delete the lock if it is still ours; someone else's is left alone."""
        if self._etag is None:
            return
        etag, self._etag = self._etag, None
        try:
            await self.client.delete(self.bucket, self.key, if_match=etag)
        except Conflict:
            log.warning("s3://%s/%s: the lock was taken over before we released it", self.bucket, self.key)

    @staticmethod
    def _dead(holder: Holder) -> bool:
        """A holder on this very host whose process is gone (kill -9): stale before its expiry."""
        if holder.host != socket.gethostname() or holder.pid == os.getpid():
            return False
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    @property
    def held(self) -> bool:
        return self._etag is not None
