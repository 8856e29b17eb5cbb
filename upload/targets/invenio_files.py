"""File transfers into an InvenioRDM draft: init, L or M content, commit, read back, verify.

The server's own checksum after commit is the proof: a file counts as uploaded only when
the entry reads back ``status: completed``, the expected size and ``checksum ==
"md5:<expected>"``. Multipart checksums are computed by a background task on the server,
so the read-back polls (bounded) while the checksum is missing or ``multipart:...``.

When the caller does not know the file's md5 yet (a zip bundle: the zip stage leaves it
to us), it is computed while the file is read to be sent: for ``L`` in the same read
that streams the body; for ``M`` by one sequential read in a thread beside the part
uploads (parts are read concurrently and out of order, and md5 needs the bytes in order).
The server's md5 is then checked against that, exactly as against a given one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ferry.core.checksums import Checksum
from ferry.core.errors import Conflict, FerryError, TargetError, TargetNotFound, TransferFailed, VerificationError
from upload.targets.base import Progress, RemoteFile, RemoteRecord, TransferType
from upload.targets.http import HttpClient, StreamMd5, Where, file_md5, maybe_applied, sleep_backoff

log = logging.getLogger(__name__)

# Keys InvenioRDM accepts in a file-init entry; anything else makes it answer 400.
INIT_KEYS = frozenset({"key", "size", "checksum", "metadata", "access", "transfer", "storage_class"})
MAX_PARTS = 10_000


@dataclass(frozen=True)
class FileSettings:
    multipart_threshold: int
    part_size: int
    parts_in_flight: int = 4
    checksum_timeout: float = 120.0  # seconds to wait for a multipart checksum
    multipart: bool = True  # False when the server does not offer "M"


def plan_parts(size: int, part_size: int, max_parts: int = MAX_PARTS) -> tuple[int, int]:
    """``(parts, part_size)``; the part size grows (whole MiB) to stay within ``max_parts``."""
    if size <= 0:
        return 1, max(part_size, 1)
    parts = -(-size // part_size)
    if parts > max_parts:
        mib = 1024 * 1024
        smallest = -(-size // max_parts)  # ceil
        part_size = -(-smallest // mib) * mib  # rounded up to whole MiB
        parts = -(-size // part_size)
    return parts, part_size


def checksum_poll_cap(size: int) -> float:
    """Longest wait between read-backs while the server computes a multipart md5.

    The server hashes the whole file after the commit (the sandbox at ~0.5-0.7 GB/s), so
    the wait grows with the size. Capping the poll interval at about a quarter of a
    second per GB keeps ~8 polls per wait; the former fixed 2 s cap overshot a 1 GiB
    file's md5 by up to 0.8 s (bench/bench_upload.py, big-M).
    """
    return min(2.0, max(0.1, size / 4e9))


def remote_file(entry: Mapping[str, Any]) -> RemoteFile:
    checksum = entry.get("checksum")
    md5 = None
    if isinstance(checksum, str) and checksum.lower().startswith("md5:"):
        md5 = checksum[4:].lower()
    size = entry.get("size")
    return RemoteFile(
        key=str(entry.get("key")),
        size=size if isinstance(size, int) else None,
        checksums=(Checksum("md5", md5),) if md5 else (),
        status=str(entry.get("status") or "completed"),
    )


def entries(body: Any) -> list[Mapping[str, Any]]:
    """File entries of a files listing or init answer (``{"entries": [...]}`` or a list)."""
    items = body.get("entries") if isinstance(body, Mapping) else body
    return [e for e in items or [] if isinstance(e, Mapping)] if isinstance(items, list) else []


def transfer_failure(body: Any) -> str | None:
    """InvenioRDM's 200-with-``errors``: the upload failed and the entry is gone."""
    if isinstance(body, Mapping) and body.get("errors"):
        errors = body["errors"]
        return errors if isinstance(errors, str) else str(errors)
    return None


class FileTransfers:
    """Puts files into drafts of one target, through its ``HttpClient``."""

    def __init__(self, http: HttpClient, settings: FileSettings) -> None:
        self.http = http
        self.settings = settings

    def plan(self, size: int) -> TransferType:
        if self.settings.multipart and size >= self.settings.multipart_threshold:
            return "M"
        return "L"

    def _files_link(self, rec: RemoteRecord) -> str:
        try:
            return rec.links["files"]
        except KeyError:
            raise TargetError(f"record {rec.id} has no files link (files disabled?)", recid=rec.recid) from None

    def _entry_link(self, rec: RemoteRecord, key: str) -> str:
        return self._files_link(rec).rstrip("/") + "/" + quote(key, safe="/")

    async def list(self, rec: RemoteRecord) -> dict[str, RemoteFile]:
        resp = await self.http.request("GET", self._files_link(rec), Where("list files", rec.recid))
        return {f.key: f for f in map(remote_file, entries(resp.body))}

    async def delete(self, rec: RemoteRecord, key: str) -> None:
        with contextlib.suppress(TargetNotFound):  # already gone: what we wanted
            await self.http.request(
                "DELETE", self._entry_link(rec, key), Where("delete file", rec.recid, key), expect=(200, 202, 204)
            )

    async def put(
        self, rec: RemoteRecord, key: str, path: Path, size: int, md5: str | None, progress: Progress | None
    ) -> RemoteFile:
        """One attempt: init (replacing a stale entry), content, commit, verify.

        ``md5=None``: computed while the file is sent (see the module doc); the returned
        file's md5 is then the one computed, confirmed by the server.
        """
        md5 = md5.lower() if md5 is not None else None
        transfer = self.plan(size)
        entry = await self._init(rec, key, size, md5, transfer)
        if isinstance(entry, RemoteFile):
            log.info("record %s: %s already complete with the same md5, kept", rec.recid, key)
            return entry
        links = entry.get("links") or {}
        streamed = StreamMd5() if md5 is None else None
        hashing: asyncio.Task[str] | None = None
        try:
            if transfer == "M" and links.get("parts"):
                if md5 is None:
                    hashing = asyncio.create_task(file_md5(path, size))
                await self._put_parts(rec, key, path, size, entry, progress)
            else:
                await self._put_content(rec, key, path, size, links, progress, streamed)
            await self._commit(rec, key, links)
            if md5 is None:
                md5 = await self._computed_md5(rec, key, path, size, hashing, streamed)
        except TargetNotFound as exc:
            # The server dropped the entry (a failed or broken transfer does that): start over.
            raise TransferFailed(
                f"upload: the file entry disappeared ({exc.message})", status=exc.status, recid=rec.recid, file=key
            ) from exc
        finally:
            if hashing is not None:
                if not hashing.done():
                    hashing.cancel()
                elif not hashing.cancelled():
                    hashing.exception()  # retrieved: a part failure already speaks for this attempt
        return await self._verify(rec, key, links.get("self") or self._entry_link(rec, key), size, md5)

    async def _computed_md5(
        self,
        rec: RemoteRecord,
        key: str,
        path: Path,
        size: int,
        hashing: asyncio.Task[str] | None,
        streamed: StreamMd5 | None,
    ) -> str:
        """The md5 computed during this attempt's send (or, if the body was not read to its
        end, by reading the file once more)."""
        try:
            if hashing is not None:
                return await hashing
            if streamed is not None and streamed.hexdigest is not None:
                return streamed.hexdigest
            log.info("record %s: the body of %s was not read to its end; hashing the file again", rec.recid, key)
            return await file_md5(path, size)
        except OSError as exc:
            raise VerificationError(
                f"upload: cannot read the file to compute its md5: {exc}", recid=rec.recid, file=key
            ) from exc

    # --- init ---------------------------------------------------------------------------

    def _init_entry(self, key: str, size: int, transfer: TransferType) -> dict[str, Any]:
        entry: dict[str, Any] = {"key": key, "size": size}
        if transfer == "M":
            parts, part_size = plan_parts(size, self.settings.part_size)
            entry["transfer"] = {"type": "M", "parts": parts, "part_size": part_size}
        assert set(entry) <= INIT_KEYS
        return entry

    async def _init(
        self, rec: RemoteRecord, key: str, size: int, md5: str | None, transfer: TransferType
    ) -> Mapping[str, Any] | RemoteFile:
        """Start the upload of ``key``; returns the pending entry, or the finished file to keep.

        The init POST creates an entry, so it is never repeated blindly: after an unclear
        failure or a duplicate-key answer we look at what the draft holds for ``key``. Without
        our md5 nothing there can be proven the same, so it is replaced.
        """
        where = Where("start upload", rec.recid, key)
        for attempt in range(1, self.http.policy.attempts + 1):
            try:
                resp = await self.http.request(
                    "POST",
                    self._files_link(rec),
                    where,
                    json=[self._init_entry(key, size, transfer)],
                    expect=(200, 201),
                    retry_mode="safe",
                )
            except FerryError as exc:
                duplicate = isinstance(exc, Conflict)
                if not duplicate and not (exc.retryable and maybe_applied(exc)):
                    raise
                if attempt == self.http.policy.attempts:
                    raise
                existing = (await self.list(rec)).get(key)
                if existing is not None and md5 is not None and existing.matches(size, Checksum("md5", md5)):
                    return existing
                if existing is not None:
                    # Different content, or a leftover pending upload (ours or an interrupted run's).
                    log.info(
                        "record %s: replacing %s on the target (%s, md5 %s)",
                        rec.recid,
                        key,
                        existing.status,
                        existing.checksum("md5"),
                    )
                    await self.delete(rec, key)
                if not duplicate:
                    await sleep_backoff(attempt)
                continue
            for entry in entries(resp.body):
                if entry.get("key") == key:
                    return entry
            raise TargetError(f"{where.what}: the answer lists no entry for the file", recid=rec.recid, file=key)
        raise AssertionError("unreachable")

    # --- content ------------------------------------------------------------------------

    async def _put_content(
        self,
        rec: RemoteRecord,
        key: str,
        path: Path,
        size: int,
        links: Mapping[str, Any],
        progress: Progress | None,
        md5: StreamMd5 | None = None,
    ) -> None:
        link = links.get("content") or self._entry_link(rec, key) + "/content"
        where = Where("upload content", rec.recid, key)
        # "safe": a failed content PUT may delete the entry; the whole attempt is redone instead.
        resp = await self.http.put_range(
            link, where, path, 0, size, progress=progress, md5=md5, retry_mode="safe", expect=(200, 201, 204)
        )
        failure = transfer_failure(resp.body)
        if failure:
            raise TransferFailed(f"{where.what}: {failure}", status=resp.status, recid=rec.recid, file=key)

    async def _put_parts(
        self,
        rec: RemoteRecord,
        key: str,
        path: Path,
        size: int,
        entry: Mapping[str, Any],
        progress: Progress | None,
    ) -> None:
        parts = sorted(entry["links"]["parts"], key=lambda p: int(p["part"]))
        transfer = entry.get("transfer") or {}
        part_size = int(transfer.get("part_size") or plan_parts(size, self.settings.part_size)[1])
        gate = asyncio.Semaphore(self.settings.parts_in_flight)

        async def put_part(number: int, url: str) -> None:
            offset = (number - 1) * part_size
            count = max(0, min(part_size, size - offset))
            where = Where(f"upload part {number}/{len(parts)}", rec.recid, key)
            async with gate:
                # A part PUT is idempotent: a resend replaces the part, so it is retried as is.
                resp = await self.http.put_range(
                    url, where, path, offset, count, progress=progress, expect=(200, 201, 204)
                )
            failure = transfer_failure(resp.body)
            if failure:
                raise TransferFailed(f"{where.what}: {failure}", status=resp.status, recid=rec.recid, file=key)

        # TaskGroup: the first failing part cancels the others (no point sending the rest).
        try:
            async with asyncio.TaskGroup() as group:
                for part in parts:
                    group.create_task(put_part(int(part["part"]), str(part["url"])))
        except ExceptionGroup as eg:
            raise _first(eg) from None

    # --- commit and verify ----------------------------------------------------------------

    async def _commit(self, rec: RemoteRecord, key: str, links: Mapping[str, Any]) -> None:
        link = links.get("commit") or self._entry_link(rec, key) + "/commit"
        where = Where("commit", rec.recid, key)
        # Commit again after an unclear failure only when the entry is not completed yet.
        for attempt in range(1, self.http.policy.attempts + 1):
            try:
                resp = await self.http.request("POST", link, where, expect=(200, 201, 202), retry_mode="safe")
            except FerryError as exc:
                if not (exc.retryable and maybe_applied(exc)) or attempt == self.http.policy.attempts:
                    raise
                current = (await self.list(rec)).get(key)
                if current is not None and current.completed:
                    return
                if current is None:
                    raise TransferFailed(f"{where.what}: the file entry is gone", recid=rec.recid, file=key) from exc
                await sleep_backoff(attempt)
                continue
            failure = transfer_failure(resp.body)
            if failure:
                raise TransferFailed(f"{where.what}: {failure}", status=resp.status, recid=rec.recid, file=key)
            return

    async def _verify(self, rec: RemoteRecord, key: str, link: str, size: int, md5: str) -> RemoteFile:
        where = Where("read back", rec.recid, key)
        deadline = time.monotonic() + self.settings.checksum_timeout
        attempt = 0
        while True:
            resp = await self.http.request("GET", link, where)
            found = remote_file(resp.body if isinstance(resp.body, Mapping) else {})
            checksum = resp.body.get("checksum") if isinstance(resp.body, Mapping) else None
            pending = found.checksum("md5") is None and (checksum is None or str(checksum).startswith("multipart:"))
            if (pending or not found.completed) and time.monotonic() < deadline:
                await sleep_backoff(attempt, cap=checksum_poll_cap(size))
                attempt += 1
                continue
            break
        expected = f"md5:{md5}"
        actual = f"md5:{found.checksum('md5')}" if found.checksum("md5") else str(checksum)
        problem = None
        if not found.completed:
            problem = f"still {found.status} after commit"
        elif found.size != size:
            problem = f"size {found.size} on the target, {size} expected"
        elif found.checksum("md5") != md5:
            problem = f"checksum {actual} on the target, {expected} expected"
        if problem is None:
            return found
        # A wrong copy must not stay in the draft where a publish could pick it up.
        try:
            await self.delete(rec, key)
        except TargetError as exc:
            log.warning("record %s: could not remove mismatching %s: %s", rec.recid, key, exc)
        raise VerificationError(f"{where.what}: {problem}", expected=expected, actual=actual, recid=rec.recid, file=key)


def _first(group: BaseExceptionGroup) -> BaseException:
    """The first real error inside (nested) exception groups."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        return exc
    return group
