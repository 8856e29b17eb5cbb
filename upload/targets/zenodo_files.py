"""Files of a Zenodo deposition: the bucket API (Files-REST) and the deposition listing.

A file is one ``PUT {links.bucket}/{key}`` of the raw bytes, streamed from disk (never
read whole), which replaces a same-name file only once the new content is complete. The
answer carries ``checksum: "md5:<hex>"`` and the size as stored: that is the proof,
compared with ours. When the caller does not know the md5 (a fresh zip bundle), it is
computed from the very bytes read to be sent. Listings
(``GET /api/deposit/depositions/{id}/files``) give bare hex md5s, parsed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ferry.core.checksums import Checksum
from ferry.core.errors import (
    ChecksumFormatError,
    TargetError,
    TargetNotFound,
    VerificationError,
)
from upload.targets.base import Progress, RemoteFile, RemoteRecord
from upload.targets.http import HttpClient, StreamMd5, Where, file_md5

log = logging.getLogger(__name__)

# After the last byte, Zenodo stores and hashes the file before it answers: the read
# timeout of a PUT grows with its size at this pessimistic server-side rate.
SERVER_BYTES_PER_SECOND = 20 * 10**6


def upload_read_timeout(size: int, base: float) -> float:
    """Seconds of server silence a PUT of ``size`` bytes may see (``base`` plus the size's share)."""
    return base + size / SERVER_BYTES_PER_SECOND


def _md5_of(value: Any, where: str) -> tuple[Checksum, ...]:
    """``md5:<hex>`` (bucket answers) or bare hex (deposition listings) as a checksum tuple."""
    if not isinstance(value, str) or not value.strip():
        return ()
    try:
        return (Checksum.parse(value, default_algorithm="md5", where=where),)
    except ChecksumFormatError:
        log.warning("unreadable checksum %r (%s); treated as unknown", value, where)
        return ()


def listed_file(entry: Mapping[str, Any]) -> RemoteFile:
    """One entry of a deposition listing (``filename``, ``filesize``, bare hex ``checksum``)
    or of a bucket (``key``, ``size``, ``md5:`` checksum)."""
    key = str(entry.get("filename") or entry.get("key") or "")
    size = entry.get("filesize", entry.get("size"))
    return RemoteFile(
        key=key,
        size=size if isinstance(size, int) else None,
        checksums=_md5_of(entry.get("checksum"), key),
        status="completed",  # Zenodo lists only files whose upload finished
    )


class BucketFiles:
    """Puts, lists and deletes the files of depositions through one ``HttpClient``."""

    def __init__(self, http: HttpClient, *, read_timeout: float) -> None:
        self.http = http
        self.read_timeout = read_timeout

    @staticmethod
    def bucket(rec: RemoteRecord, what: str, key: str | None = None) -> str:
        link = rec.links.get("bucket")
        if not link:
            # Zenodo drops links.bucket once a deposition is published: its files are locked.
            raise TargetError(
                f"{what}: deposition {rec.id} has no bucket (published: files locked; make a new version)",
                recid=rec.recid,
                file=key,
            )
        return link.rstrip("/")

    def object_url(self, rec: RemoteRecord, key: str, what: str) -> str:
        return f"{self.bucket(rec, what, key)}/{quote(key, safe='')}"

    async def list(self, rec: RemoteRecord) -> dict[str, RemoteFile]:
        link = rec.links.get("files") or rec.links["self"].rstrip("/") + "/files"
        resp = await self.http.request("GET", link, Where("list files", rec.recid))
        items = resp.body if isinstance(resp.body, list) else []
        files = (listed_file(e) for e in items if isinstance(e, Mapping))
        return {f.key: f for f in files if f.key}

    async def delete(self, rec: RemoteRecord, key: str) -> None:
        where = Where("delete file", rec.recid, key)
        with contextlib.suppress(TargetNotFound):  # already gone: what we wanted
            await self.http.request("DELETE", self.object_url(rec, key, where.what), where, expect=(200, 204))

    async def put(
        self, rec: RemoteRecord, key: str, path: Path, size: int, md5: str | None, progress: Progress | None
    ) -> RemoteFile:
        """Send ``path`` as ``key``; the stored copy must have ``size`` bytes and ``md5``
        (computed on the way when None). A mismatching copy is removed before raising."""
        where = Where("upload", rec.recid, key)
        url = self.object_url(rec, key, where.what)
        await self._check_length(path, size, where)
        streamed = StreamMd5() if md5 is None else None
        # A PUT replaces the whole object and Zenodo keeps the old one until the new body is
        # complete, so repeating it after any failure is safe.
        resp = await self.http.put_range(
            url,
            where,
            path,
            0,
            size,
            md5=streamed,
            progress=progress,
            expect=(200, 201),
            read_timeout=upload_read_timeout(size, self.read_timeout),
        )
        if md5 is None:
            md5 = await self._sent_md5(path, size, streamed, where)
        stored = listed_file(resp.body if isinstance(resp.body, Mapping) else {})
        problem = None
        if stored.size != size:
            problem = f"size {stored.size} on the target, {size} expected"
        elif stored.checksum("md5") != md5.lower():
            problem = f"checksum md5:{stored.checksum('md5')} on the target, md5:{md5} expected"
        if problem is None:
            return RemoteFile(key, size, (Checksum("md5", md5.lower()),), "completed")
        # A wrong copy must not stay where a publish could pick it up.
        try:
            await self.delete(rec, key)
        except TargetError as exc:
            log.warning("record %s: could not remove mismatching %s: %s", rec.recid, key, exc)
        raise VerificationError(
            f"upload: {problem}",
            expected=f"md5:{md5}",
            actual=f"md5:{stored.checksum('md5')}",
            recid=rec.recid,
            file=key,
        )

    @staticmethod
    async def _check_length(path: Path, size: int, where: Where) -> None:
        try:
            actual = (await asyncio.to_thread(os.stat, path)).st_size
        except OSError as exc:
            raise VerificationError(
                f"{where.what}: cannot read {path}: {exc.strerror}", recid=where.recid, file=where.file
            ) from exc
        if actual != size:
            err = VerificationError(
                f"{where.what}: {path} has {actual} bytes, {size} expected (changed since it was verified?)",
                recid=where.recid,
                file=where.file,
            )
            err.retryable = False  # the same file would fail the same way
            raise err

    @staticmethod
    async def _sent_md5(path: Path, size: int, streamed: StreamMd5 | None, where: Where) -> str:
        if streamed is not None and streamed.hexdigest is not None:
            return streamed.hexdigest
        # aiohttp stopped before the body's end (a zero-length body, say): read it once more.
        try:
            return await file_md5(path, size)
        except OSError as exc:
            raise VerificationError(
                f"{where.what}: cannot read the file to compute its md5: {exc}", recid=where.recid, file=where.file
            ) from exc
