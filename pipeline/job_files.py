"""The upload and verify stages of ``RecordJob``: each file sent once, verified by the
target's checksum in the negotiated hash, then the whole record checked on the target.

A file already on the target with our size and checksum is not sent again; a value the
zip stage left unknown (a bundle) is computed while the file is sent, checked against the
target's, and recorded in the manifest and the ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from pathlib import Path

from download.manifest import Manifest
from ferry.core.checksums import Checksum, choose_hash, hash_file
from ferry.core.errors import FerryError, TargetError, TransferFailed, VerificationError
from ferry.core.retry import retry
from pipeline.context import PipelineContext
from pipeline.job_base import JobBase
from pipeline.local_check import blame_local_copy
from stats.events import Event
from upload.targets.base import RemoteFile, RemoteRecord, StreamingTarget

log = logging.getLogger("pipeline.job")  # the messages keep the logger name they always had


class _FileUpload:
    """One file's upload as the stats and the display see it, across its attempts."""

    def __init__(self, ctx: PipelineContext, recid: str, key: str, size: int) -> None:
        self.ctx, self.recid, self.key, self.size = ctx, recid, key, size
        self.attempts = 0
        self.shown = ctx.upload_progress
        self.sent = self.shown.upload_advance if self.shown is not None else None
        self._event: Event | None = None  # opened once the file first holds an upload slot

    def started(self) -> Event:
        # A file waiting for a slot is queued, not in flight: the display and the stats
        # event start when it holds one, so neither shows more uploads than the limit.
        if self._event is None:
            transfer = self.ctx.target.plan_file(self.size)
            self._event = self.ctx.stats.open("upload", self.recid, self.key, bytes=self.size, transfer=transfer)
            if self.shown is not None:
                self.shown.upload_started(self.key)
        return self._event

    def finished(self, error: FerryError | None = None) -> None:
        if error is not None:
            self.started().close("failed", error=error, attempts=self.attempts)
        else:
            self.started().close("ok", attempts=self.attempts)
        if self.shown is not None:
            self.shown.upload_finished(self.key, ok=error is None)


class FileStages(JobBase):
    """Upload and verify, per file and per record."""

    async def _upload_files(self, remote: RemoteRecord, manifest: Manifest, keys: list[str]) -> None:
        target = self.ctx.target
        have = await self._call(lambda: target.list_files(remote))
        # Files on the draft that are not ours (e.g. originals left before zipping) go.
        for stale in sorted(set(have) - set(keys)):
            log.info("record %s: removing %s from the draft (not part of this upload)", self.recid, stale)
            await self._call(functools.partial(target.delete_file, remote, stale))
        if self.ctx.ledger is not None:
            rows = [(k, manifest.entries[k].size, self._known(manifest, k)) for k in keys]
            await self.ctx.ledger.run(self.ctx.ledger.set_files, self.recid, rows)
        await self._ledger("uploading")

        shown = self.ctx.upload_progress
        if shown is not None:
            shown.upload_totals(files=len(keys), bytes=sum(manifest.entries[k].size for k in keys))

        async def one(key: str) -> None:
            entry = manifest.entries[key]
            expected = await self._checksum_to_compare(manifest, key, have.get(key))
            if expected is not None and key in have and have[key].matches(entry.size, expected):
                self.ctx.stats.record(
                    "upload",
                    "skipped",
                    self.recid,
                    key,
                    reason=f"already on the target with the same {expected.algorithm}",
                )
                if shown is not None:
                    shown.upload_finished(key, ok=True, skipped_bytes=entry.size)
                await self._file_state(key, "verified", checksum=expected)
                return
            await self._put(remote, manifest, key, entry.size, expected)

        results = await asyncio.gather(*(one(k) for k in keys), return_exceptions=True)
        failures = {k: r for k, r in zip(keys, results, strict=True) if isinstance(r, BaseException)}
        for exc in failures.values():
            if not isinstance(exc, Exception):  # cancellation and friends are not failures to report
                raise exc
        if failures:
            self.result.failed_files = {k: str(e) for k, e in failures.items()}
            first = next(iter(failures.values()))
            raise TransferFailed(
                f"{len(failures)} of {len(keys)} file(s) failed to upload (first: {first})", recid=self.recid
            ) from first

    async def _put(
        self, remote: RemoteRecord, manifest: Manifest, key: str, size: int, expected: Checksum | None
    ) -> None:
        """Upload one file, verified by the target's checksum in the negotiated hash.

        ``expected=None`` (e.g. a bundle the zip stage verified by CRC32 but did not hash):
        the target computes its hash while it sends the file and checks the stored file
        against it; the file must be the one the zip stage verified (size and mtime as
        recorded) before and after, and the value is then recorded in the manifest and the
        ledger.
        """
        ctx = self.ctx
        path = self.record_dir / key
        if expected is None:
            await self._check_unchanged(manifest, key)
        one = _FileUpload(ctx, self.recid, key, size)

        async def attempt() -> RemoteFile:
            return await self._put_once(remote, path, expected, one)

        try:
            got = await retry(attempt, policy=ctx.file_retry, what=f"upload of record {self.recid}, file {key}")
            if expected is None:
                expected = await self._learn_sent(remote, manifest, key, got)
        except FerryError as exc:
            if exc.file is None:
                exc.file = key
            one.finished(error=exc)
            await self._file_state(key, "failed", error=exc)
            raise
        one.finished()
        self.result.bytes_uploaded += size
        await self._file_state(key, "verified", checksum=expected)

    async def _put_once(
        self, remote: RemoteRecord, path: Path, expected: Checksum | None, one: _FileUpload
    ) -> RemoteFile:
        """One attempt at sending ``one`` file, holding an upload slot and its bytes."""
        ctx = self.ctx
        one.attempts += 1
        # Wait for the breaker before taking an upload slot: a paused upload holds none.
        if ctx.breaker is not None:
            await ctx.breaker.wait_closed()
        async with ctx.upload_slots, ctx.upload_bytes.hold(one.size):
            one.started()
            if ctx.stream is not None and expected is not None:
                return await self._call(lambda: self._put_streamed(remote, one, expected), wait=False)
            try:
                return await self._call(
                    lambda: ctx.target.put_file(remote, one.key, path, one.size, expected, one.sent), wait=False
                )
            except VerificationError:
                if expected is not None:  # the local copy may be the culprit: then say so, no retry
                    await blame_local_copy(path, expected, recid=self.recid, key=one.key)
                raise

    async def _put_streamed(self, remote: RemoteRecord, one: _FileUpload, expected: Checksum) -> RemoteFile:
        """``--stream``: the source's bytes straight into the target (pipeline/stream.py); a
        short, long or corrupt stream is never completed there (the target's promise)."""
        stream, target = self.ctx.stream, self.ctx.target
        assert stream is not None and isinstance(target, StreamingTarget)  # open_run checked the ability
        entry = next(f for f in self.record.files if f.key == one.key)
        return await target.put_stream(remote, one.key, stream.open(entry, one.size), one.size, expected, one.sent)

    # --- the negotiated hash, and values the zip stage left to the upload ----------------

    def _hash_for(self, manifest: Manifest, key: str) -> str:
        """The hash ``key`` is verified with: the target's best that we know (or will compute).

        A streamed file is never on disk to hash afterwards: when the source gives none of
        the target's hashes it is checked by the source's own (pipeline.stream.expected_of:
        a streaming target stores the expected value it was sent with, e.g. adler32 on S3)."""
        known = manifest.entries[key].checksums
        algorithm = choose_hash(self.ctx.target.abilities.hashes, known)
        if self.ctx.stream is not None and algorithm not in known and known:
            return "md5" if "md5" in known else next(iter(known))
        return algorithm

    def _known(self, manifest: Manifest, key: str) -> Checksum | None:
        algorithm = self._hash_for(manifest, key)
        value = manifest.entries[key].checksums.get(algorithm)
        return Checksum(algorithm, value) if value is not None else None

    async def _checksum_to_compare(self, manifest: Manifest, key: str, there: RemoteFile | None) -> Checksum | None:
        """The local value of ``key`` in the negotiated hash when it is needed to decide a
        skip: known, or computed now (once, then recorded) when the target holds a finished
        file of the same size. None: unknown, and nothing there could match it (the upload
        will compute it)."""
        known = self._known(manifest, key)
        if known is not None:
            return known
        entry, algorithm = manifest.entries[key], self._hash_for(manifest, key)
        if there is None or not there.completed or there.size != entry.size or there.checksum(algorithm) is None:
            return None
        await self._check_unchanged(manifest, key)
        path = str(self.record_dir / key)
        value = (await asyncio.to_thread(hash_file, path, (algorithm,))).hexdigests()[algorithm]
        await self._check_unchanged(manifest, key)  # and not while it was read
        checksum = Checksum(algorithm, value)
        await self._record_checksum(manifest, key, checksum)
        return checksum

    async def _learn_sent(self, remote: RemoteRecord, manifest: Manifest, key: str, got: RemoteFile) -> Checksum:
        """Record the value the upload computed (and the target confirmed) for ``key``."""
        algorithm = self._hash_for(manifest, key)
        value = got.checksum(algorithm)
        if value is None:  # pragma: no cover - put_file verifies before returning
            raise VerificationError(f"the target returned no {algorithm} after a verified upload", file=key)
        try:
            await self._check_unchanged(manifest, key)
        except VerificationError:
            # Changed while it was sent: what the target holds may not be the verified bundle.
            try:
                await self._call(functools.partial(self.ctx.target.delete_file, remote, key))
            except TargetError as exc:
                log.warning("record %s: could not remove %s from the draft: %s", self.recid, key, exc)
            raise
        checksum = Checksum(algorithm, value)
        await self._record_checksum(manifest, key, checksum)
        return checksum

    async def _check_unchanged(self, manifest: Manifest, key: str) -> None:
        """``key`` still has the size and mtime the manifest recorded when it was verified."""
        if await asyncio.to_thread(manifest.fresh_entry, key) is None:
            err = VerificationError(
                f"{key} changed on disk after it was verified (size or mtime differ from the manifest); "
                "run again to check and rebuild it",
                recid=self.recid,
                file=key,
            )
            err.retryable = False  # the same file again would fail the same way
            raise err

    async def _record_checksum(self, manifest: Manifest, key: str, checksum: Checksum) -> None:
        """Keep a computed value in the manifest (saved atomically), so no later run hashes
        the file again while its size and mtime are unchanged."""
        async with self._manifest_lock:
            entry = manifest.entries[key]
            checksums = {**entry.checksums, checksum.algorithm: checksum.value}
            manifest.put(dataclasses.replace(entry, checksums=checksums))
            await asyncio.to_thread(manifest.save)

    async def _verify(self, remote: RemoteRecord, manifest: Manifest, keys: list[str]) -> None:
        """The record as a whole: every key present once, completed, with our size and checksum."""
        with self.ctx.stats.open("verify", self.recid, file_count=len(keys)) as event:
            have = await self._call(lambda: self.ctx.target.list_files(remote))
            checked = {k: mismatch(have.get(k), manifest, k, self._hash_for(manifest, k)) for k in keys}
            bad = {k: why for k, why in checked.items() if why is not None}
            extra = sorted(set(have) - set(keys))
            if bad or extra:
                self.result.failed_files.update(bad)
                self.result.failed_files.update({k: "unexpected file on the target" for k in extra})
                err = VerificationError(
                    f"{len(bad) + len(extra)} file(s) differ on the target after upload", recid=self.recid
                )
                event.close("failed", error=err)
                raise err
            event.bytes = sum(manifest.entries[k].size for k in keys)


def mismatch(remote: RemoteFile | None, manifest: Manifest, key: str, algorithm: str) -> str | None:
    entry = manifest.entries[key]
    if remote is None:
        return "missing on the target"
    if not remote.completed:
        return f"not completed on the target (status {remote.status})"
    if remote.size != entry.size:
        return f"size on the target {remote.size}, expected {entry.size}"
    ours = entry.checksums.get(algorithm)
    if ours is None:
        return f"{algorithm} unknown locally"
    theirs = remote.checksum(algorithm)
    if theirs != ours:
        return f"{algorithm} on the target {theirs}, expected {ours}"
    return None
