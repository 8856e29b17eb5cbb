"""The S3 target (``type = "s3"``): records as prefixes of one bucket, files as objects.

    [targets.cpg]
    type = "s3"
    url = "s3://cellpainting-gallery/cpg0042/publication_data/jump_rr"
    endpoint_url = "https://s3.example.org"   # optional; else the standard AWS settings
    profile = "cpg"                           # optional AWS profile (or aws_profile = ...)
    layout = "versioned"                      # versioned | plain | archive

Layouts: ``versioned`` puts file ``key`` of record ``R`` at ``<prefix>/R/<key>/content``
(an immutable copy per version; ``<prefix>/latest/<key>/content`` is the moving pointer
the mirror maintains by server-side copy); ``plain`` at ``<prefix>/<key>`` (directory
pushes); ``archive`` (``ferry archive``, djarchive's layout) takes record ids ``NAME/REV``
and puts their files at ``<prefix>/NAME/REV/<key>``, and lists records two folders deep.
S3 has no drafts, no publishing and no metadata documents; a record is "open".

Idempotency by content: each object carries the md5 of its bytes (verified before the
object was completed), the expected checksum it was sent with, its size and the source
record id as user metadata. A put whose object already has the same size and checksum
is skipped; a different one is replaced. Our unfinished multipart uploads under a
record are aborted the first time this run touches that record.

Why one module of about 550 lines: one target's records, layouts, put, list and verify
share its options and client; the client, error mapping, uploads, byte budget and
options are already in s3_client, s3_errors, s3_upload, s3_budget and s3_options.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from ferry.core.checksums import HEX_LENGTHS, Checksum, hash_file
from ferry.core.config import TargetConfig
from ferry.core.errors import AuthError, FerryError, InputError, TargetNotFound, UnsafePathError, VerificationError
from upload.targets import S3_DEFAULTS
from upload.targets.base import (
    Abilities,
    NotSupported,
    Progress,
    PublishOutcome,
    RemoteFile,
    RemoteRecord,
    RequestLimiter,
    TargetBase,
    TargetLimits,
    TransferType,
    Wiring,
)
from upload.targets.s3_budget import ByteBudget
from upload.targets.s3_client import At, ObjectInfo, S3Client
from upload.targets.s3_options import S3Options
from upload.targets.s3_upload import Sent, aclose, file_chunks, plan_upload, send_object

log = logging.getLogger(__name__)

LATEST = "latest"  # the moving pointer's folder in the versioned layout
CONTENT = "content"  # last path segment of a versioned object (as Zenodo's download URLs)
META = "ferry-"  # our user-metadata prefix: ferry-md5, ferry-size, ferry-record, ferry-<alg>
# The JUMP mirror script stored the Zenodo md5 under this name: objects it wrote are
# recognised, so switching to ferry does not upload them again.
FOREIGN_MD5 = ("zenodo-md5",)
HEADS_IN_FLIGHT = 16


def budgeted(config: TargetConfig) -> bool:
    """Whether the section asks for less than S3's own rate (then every request is counted).

    At or above it (the default, ``upload.targets.S3_DEFAULTS``) no limiter is attached, so
    a default run spends nothing per request on a budget S3 enforces by itself."""
    return (
        config.requests_per_minute < S3_DEFAULTS["requests_per_minute"]
        or config.requests_per_hour < S3_DEFAULTS["requests_per_hour"]
    )


def _check_key(key: str, recid: str) -> None:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in key:
        raise UnsafePathError(f"file key {key!r} is not a safe relative path", recid=recid, file=key)


def _archive_recid(recid: str) -> str:
    """A record id of the archive layout: ``NAME/REV``, two safe folder names."""
    parts = recid.split("/")
    if len(parts) != 2 or any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise InputError(f"record id {recid!r} is not NAME/REV, what the archive layout holds", recid=recid)
    return recid


class S3Target(TargetBase):
    """``upload.targets.base.Target`` on one S3 bucket and prefix (also Streaming and Copying)."""

    type = "s3"

    def __init__(
        self, name: str, options: S3Options, *, client: S3Client | None = None, limiter: RequestLimiter | None = None
    ) -> None:
        self.name = name
        # The request budget, spent per HTTP request (S3Client's before-send hook); None
        # when the section asks for no less than S3's own rate (``budgeted``).
        self.limiter = limiter
        self.options = options
        self.location = options.location
        self.abilities = Abilities(
            hashes=("md5",),
            drafts=False,
            publish=False,
            versions=False,  # versions are prefixes: a new record id is a new folder
            multipart=True,
            server_side_copy=True,
            streaming_put=True,
            metadata=False,
            search=False,
            sub_paths=True,
            listing=options.layout != "plain",  # record-id folders; a plain prefix is one record
            record_paths=options.layout == "archive",
        )
        # S3's own limits: 5 TiB per object; no per-record file count.
        self.limits = TargetLimits(max_files=10**9, max_file_size=5 * 1024**4, max_record_size=10**18)
        self._client = client
        self._client_lock = asyncio.Lock()
        # One budget for every upload this target runs: the bound on part bytes in memory.
        self.budget = ByteBudget(options.bytes_in_flight)
        self._started = time.time()
        self._cleanups: dict[str, asyncio.Future[None]] = {}
        # False where other processes write the same record at once (a Dask worker of
        # ``ferry mirror --cluster``): their uploads are live, the client sweeps after all.
        self.abort_abandoned = True
        self._opened: set[str] = set()
        # (recid, key) a caller's LIST just showed absent or different: their put skips the
        # probing HEAD (one request per file fewer for an archive upload of N new files).
        self._listed_absent: set[tuple[str, str]] = set()
        # Object key -> (recid, size, ETag, file) of each object this target put and
        # verified in this run: a LIST showing the same size and ETag is that object, so
        # list_files needs no HEAD for it (``_known``).
        self._stored: dict[str, tuple[str, int, str, RemoteFile]] = {}

    @classmethod
    def _configured(cls, config: TargetConfig, wiring: Wiring) -> Self:
        # Credentials come from the AWS chain, not a token. S3 rate-limits by itself
        # (SlowDown, retried with back-off); a lower budget in the section is kept.
        return cls(config.name, S3Options.from_config(config), limiter=wiring.limiter if budgeted(config) else None)

    def __repr__(self) -> str:
        return f"S3Target({self.name!r}, {str(self.location)!r}, layout={self.options.layout!r})"

    async def client(self) -> S3Client:
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    where = f"target {self.name}"
                    self._client = await S3Client.open(self.options.settings, where=where, limiter=self.limiter)
        return self._client

    async def aclose(self) -> None:
        for task in self._cleanups.values():
            task.cancel()
        await asyncio.gather(*self._cleanups.values(), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- where things live -----------------------------------------------------------

    def record_prefix(self, recid: str) -> str:
        """The folder (with a trailing '/') whose objects are this record's files."""
        if self.options.layout == "plain":
            return self.location.key("") + "/" if self.location.prefix else ""
        if self.options.layout == "archive":
            return self.location.key(_archive_recid(recid)) + "/"
        if not recid or "/" in recid or recid in (".", ".."):
            raise InputError(f"record id {recid!r} cannot name a folder of the versioned layout", recid=recid)
        return self.location.key(recid) + "/"

    def _source_record(self, recid: str) -> None:
        """A source record may not be called ``latest``: that folder is the moving pointer."""
        if self.options.layout == "versioned" and recid == LATEST:
            raise InputError(f"record id {recid!r} is reserved for the latest/ pointer", recid=recid)
        self.record_prefix(recid)

    def object_key(self, recid: str, key: str) -> str:
        _check_key(key, recid)
        if self.options.layout == "plain":
            return self.location.key(key)
        if self.options.layout == "archive":
            return self.record_prefix(recid) + key
        return self.record_prefix(recid) + f"{key}/{CONTENT}"

    def latest_record(self) -> RemoteRecord:
        """``latest/`` as a record with the id ``latest``: stat, list_files, copy_file's destination."""
        if self.options.layout != "versioned":
            raise NotSupported("latest/ exists only in the versioned layout")
        return self._record(LATEST)

    def file_key(self, recid: str, object_key: str) -> str | None:
        """The file key an object of this record stands for, or None when it is not one."""
        base = self.record_prefix(recid)
        if not object_key.startswith(base):
            return None
        rest = object_key[len(base) :]
        if self.options.layout != "versioned":
            # A key ending in '/' is a folder marker some tools write, not a file.
            return rest if rest and not rest.endswith("/") else None
        suffix = f"/{CONTENT}"
        return rest[: -len(suffix)] if rest.endswith(suffix) and len(rest) > len(suffix) else None

    def _record(self, recid: str) -> RemoteRecord:
        return RemoteRecord(
            id=recid,
            recid=recid,
            state="open",
            links={"self": f"s3://{self.location.bucket}/{self.record_prefix(recid)}"},
        )

    # --- records: prefixes exist as soon as they hold an object ---------------------

    def plan_file(self, size: int) -> TransferType:
        plan = plan_upload(
            size, threshold=self.options.multipart_threshold, part_size=self.options.part_size, where=At()
        )
        return "M" if plan.multipart else "L"

    async def find(self, recid: str, query: str) -> RemoteRecord | None:
        self._source_record(recid)
        if self.options.layout == "plain" or recid in self._opened:
            return self._record(recid)
        client = await self.client()
        async for _ in client.list_objects(self.location.bucket, self.record_prefix(recid), at=At(recid)):
            return self._record(recid)
        return None

    async def get(self, recid: str, record_id: str) -> RemoteRecord | None:
        return await self.find(record_id, "")

    async def create(self, recid: str, body: Mapping[str, Any]) -> RemoteRecord:
        self._source_record(recid)
        rec = self._record(recid)  # nothing to write until a file comes
        self._opened.add(recid)
        return rec

    async def update_metadata(self, rec: RemoteRecord, body: Mapping[str, Any]) -> RemoteRecord:
        return rec  # no metadata documents on S3

    async def publish(self, rec: RemoteRecord) -> PublishOutcome:
        raise NotSupported("S3 has no publishing: objects are final when written", recid=rec.recid)

    async def new_version(self, rec: RemoteRecord) -> RemoteRecord:
        raise NotSupported("S3 versions are record-id folders, not new drafts", recid=rec.recid)

    # --- files -------------------------------------------------------------------------

    def _remote_file(self, key: str, info: ObjectInfo) -> RemoteFile:
        meta = info.metadata
        found: dict[str, str] = {}
        for algorithm in HEX_LENGTHS:
            value = meta.get(META + algorithm)
            if value:
                found[algorithm] = value.lower()
        if "md5" not in found:
            foreign = next((meta[k] for k in FOREIGN_MD5 if meta.get(k)), None)
            if foreign:
                found["md5"] = foreign.lower()
            elif len(info.etag) == 32 and "-" not in info.etag and not meta:
                # Not ours: a single-PUT object's ETag is its md5 (not with SSE-KMS, where a
                # mismatch only means a needless replacement, never a wrong skip).
                found["md5"] = info.etag.lower()
        checksums = tuple(Checksum(a, v) for a, v in sorted(found.items()))
        return RemoteFile(key=key, size=info.size, checksums=checksums, status="completed")

    async def stat(self, recid: str, key: str) -> RemoteFile | None:
        """The file as stored, from a HEAD (any failure but 404 raises)."""
        client = await self.client()
        info = await client.head(self.location.bucket, self.object_key(recid, key), at=At(recid, key))
        return None if info is None else self._remote_file(key, info)

    async def list_files(self, rec: RemoteRecord) -> dict[str, RemoteFile]:
        """The record's files: one LIST, and a HEAD only for an object LIST cannot decide.
        LIST gives size and ETag, not the metadata that holds our checksums (and, in the
        plain layout, whose record an object is); an object this target put and verified
        in this run, with the size and ETag its put was answered with, is known without
        it (a push's final check of N new files: 1 request, not N + 1)."""
        client = await self.client()
        out: dict[str, RemoteFile] = {}
        unknown = []
        async for obj in client.list_objects(self.location.bucket, self.record_prefix(rec.recid), at=At(rec.recid)):
            key = self.file_key(rec.recid, obj.key)
            if key is None:
                continue
            known = self._known(rec.recid, obj)
            if known is not None:
                out[key] = known
            else:
                unknown.append(key)
        heads = asyncio.Semaphore(HEADS_IN_FLIGHT)

        async def one(key: str) -> tuple[str, ObjectInfo | None]:
            async with heads:
                return key, await client.head(
                    self.location.bucket, self.object_key(rec.recid, key), at=At(rec.recid, key)
                )

        for key, info in await asyncio.gather(*(one(k) for k in unknown)):
            if info is None:
                continue  # deleted between LIST and HEAD
            if self.options.layout == "plain" and info.metadata.get(META + "record") != rec.recid:
                continue  # plain prefixes are shared: only our record's objects are its files
            out[key] = self._remote_file(key, info)
        return dict(sorted(out.items()))

    def _known(self, recid: str, listed: ObjectInfo) -> RemoteFile | None:
        """The file a listed object is, when this target put it for ``recid`` in this run
        and its answer proved it (``_confirmed``): the same size and the same ETag, the
        md5 of a single PUT or md5-of-part-md5s-N of a multipart upload, computed by the
        server over what it holds, are those bytes; the metadata is the one that put
        wrote (record id and checksums) unless a later write of identical bytes replaced
        it. Anything else (another ETag, verify_etag off, SSE-KMS) is read by a HEAD."""
        mine = self._stored.get(listed.key)
        if mine is None or not listed.etag:
            return None
        owner, size, etag, file = mine
        return file if owner == recid and size == listed.size and etag == listed.etag else None

    async def list_sizes(self, rec: RemoteRecord) -> dict[str, int]:
        """Key -> size from LIST alone (SizeLister). A plain prefix is shared, so which
        objects are the record's needs their metadata: there it is list_files."""
        if self.options.layout == "plain":
            return {k: f.size or 0 for k, f in (await self.list_files(rec)).items()}
        client = await self.client()
        out: dict[str, int] = {}
        async for obj in client.list_objects(self.location.bucket, self.record_prefix(rec.recid), at=At(rec.recid)):
            key = self.file_key(rec.recid, obj.key)
            if key is not None:
                out[key] = obj.size
        return dict(sorted(out.items()))

    async def list_records(self, prefix: str = "") -> list[str]:
        """Record-id folders (versioned: ``latest`` is not one; archive: ``NAME/REV``), sorted."""
        if self.options.layout == "plain":
            raise NotSupported("a plain S3 prefix holds one record: nothing to list")
        client = await self.client()
        bucket = self.location.bucket
        base = self.location.key("") + "/" if self.location.prefix else ""
        if self.options.layout == "versioned":
            found = await client.list_folders(bucket, base + prefix, delimiter_base=base)
            return sorted(r for r in found if r != LATEST)
        # archive: NAME folders first, then the REV folders of each (one LIST per dataset)
        name, sep, _ = prefix.partition("/")
        names = [name] if sep else await client.list_folders(bucket, base + prefix, delimiter_base=base)
        lists = asyncio.Semaphore(HEADS_IN_FLIGHT)

        async def revs(ds: str) -> list[str]:
            async with lists:
                return await client.list_folders(bucket, f"{base}{ds}/", delimiter_base=base)

        found = [r for rs in await asyncio.gather(*(revs(n) for n in names)) for r in rs]
        return sorted(r for r in found if r.startswith(prefix))

    async def read_file(self, rec: RemoteRecord, key: str, *, start: int = 0) -> AsyncGenerator[bytes, None]:
        """The stored bytes of ``key`` from ``start`` on (FileReader)."""
        client = await self.client()
        async for chunk in client.read(
            self.location.bucket, self.object_key(rec.recid, key), start=start, at=At(rec.recid, key)
        ):
            yield chunk

    async def copy_file(self, src: RemoteRecord, key: str, dst: RemoteRecord, dst_key: str) -> RemoteFile:
        """Server-side copy of a stored file, metadata kept, verified by a HEAD (CopyingTarget)."""
        at = At(src.recid, key)
        source = await self.stat(src.recid, key)
        if source is None:
            raise TargetNotFound(f"cannot copy {key}: not stored", recid=src.recid, file=key)
        client = await self.client()
        dst_object = self.object_key(dst.recid, dst_key)
        self._stored.pop(dst_object, None)  # replaced by the copy, read back by a HEAD below
        await client.copy(
            self.location.bucket, self.object_key(src.recid, key), dst_object, size=source.size or 0, at=at
        )
        info = await client.head(self.location.bucket, dst_object, at=At(dst.recid, dst_key))
        copied = None if info is None else self._remote_file(dst_key, info)
        if copied is None or copied.size != source.size or copied.checksums != source.checksums:
            raise VerificationError(
                f"the copy of {key} to {dst_object} is not the same object", recid=src.recid, file=key
            )
        return copied

    def mark_absent(self, recid: str, keys: Iterable[str]) -> None:
        """ListingHinted: the caller listed the record and these keys are not there with the bytes it will
        send: their next put goes straight to the PUT (still verified after: by its answer, or read back)."""
        self._listed_absent.update((recid, k) for k in keys)

    async def delete_file(self, rec: RemoteRecord, key: str) -> None:
        client = await self.client()
        object_key = self.object_key(rec.recid, key)
        self._stored.pop(object_key, None)
        await client.delete(self.location.bucket, object_key, at=At(rec.recid, key))

    async def put_file(
        self,
        rec: RemoteRecord,
        key: str,
        path: Path,
        size: int,
        expected: Checksum | None,
        progress: Progress | None = None,
    ) -> RemoteFile:
        at = At(rec.recid, key)
        plan = plan_upload(size, threshold=self.options.multipart_threshold, part_size=self.options.part_size, where=at)
        known = None
        if expected is None and plan.multipart:
            # Metadata is fixed when a multipart upload starts, and it must carry the md5:
            # hash the file first (the only case with a second read), its parts' md5s too,
            # which go with the parts as their Content-MD5 (not computed a second time).
            hashed = await asyncio.to_thread(hash_file, str(path), ("md5",), part_size=plan.part_size)
            expected, known = hashed.checksums()["md5"], hashed.parts
        return await self._put(
            rec, key, lambda: file_chunks(path, plan.part_size or 1), size, expected, progress, known_parts=known
        )

    async def put_stream(
        self,
        rec: RemoteRecord,
        key: str,
        chunks: Callable[[], Any],
        size: int,
        expected: Checksum,
        progress: Progress | None = None,
    ) -> RemoteFile:
        return await self._put(rec, key, chunks, size, expected, progress)

    async def _put(
        self,
        rec: RemoteRecord,
        key: str,
        chunks: Callable[[], AsyncIterator[bytes]],
        size: int,
        expected: Checksum | None,
        progress: Progress | None,
        known_parts: Sequence[bytes] | None = None,
    ) -> RemoteFile:
        at = At(rec.recid, key)
        bucket, object_key = self.location.bucket, self.object_key(rec.recid, key)
        client = await self.client()
        self._stored.pop(object_key, None)  # known again only once this put is verified
        await self._abort_abandoned(rec.recid)
        await client.retry_aborts(bucket, object_key)  # this run's own failed try, if its abort failed too
        listed_absent = (rec.recid, key) in self._listed_absent
        self._listed_absent.discard((rec.recid, key))
        if expected is not None and not listed_absent:
            there = await self.stat(rec.recid, key)
            if there is not None and there.matches(size, expected):
                return there  # the same bytes are already there
        plan = plan_upload(size, threshold=self.options.multipart_threshold, part_size=self.options.part_size, where=at)
        metadata = {META + "size": str(size), META + "record": rec.recid}
        if expected is not None:
            metadata[META + expected.algorithm] = expected.value
        source = chunks()
        try:
            sent = await send_object(
                client,
                bucket,
                object_key,
                source,
                size=size,
                expected=expected,
                metadata=metadata,
                md5_key=META + "md5",  # a single PUT knows its md5 before it is sent: stored too
                plan=plan,
                parts_in_flight=self.options.parts_in_flight,
                progress=progress,
                at=at,
                budget=self.budget,
                known_parts=known_parts,
                check_part_etags=self.options.verify_etag,
            )
        except Exception:
            await self._abort_uncertain(client, bucket, object_key, at)
            raise
        finally:
            await aclose(source)  # a stream left half read closes its file or connection now
        await self._abort_uncertain(client, bucket, object_key, at)
        self._opened.add(rec.recid)
        want = expected or sent.checksums["md5"]
        if self.options.verify_etag and sent.etag and sent.etag == sent.expected_etag:
            stored = self._confirmed(key, size, want, sent)
            self._stored[object_key] = (rec.recid, size, sent.etag, stored)
            return stored
        return await self._verify_stored(rec.recid, key, size, want, sent.etag, sent.expected_etag)

    def _confirmed(self, key: str, size: int, want: Checksum, sent: Sent) -> RemoteFile:
        """The stored file when the server's own answer already proves it: every part went
        with its Content-MD5 (the server refuses a body that does not match it), and the ETag
        it computed over what it stored (the md5 of a single PUT, the md5 of the part md5s of
        a multipart upload) is the one our bytes give. A read-back HEAD would add nothing
        but a request (and ~3.5 ms of botocore CPU) per file. Other answers (no ETag, a
        KMS-encrypted object, verify_etag = false) are read back by ``_verify_stored``.
        The checksums are those the object's metadata holds, as a HEAD would report them."""
        found = {want.algorithm: want}
        if not sent.multipart:
            found["md5"] = sent.checksums["md5"]  # stored under META + "md5" with a single PUT
        return RemoteFile(key=key, size=size, checksums=tuple(found[a] for a in sorted(found)), status="completed")

    async def _verify_stored(
        self, recid: str, key: str, size: int, want: Checksum, etag: str, expected_etag: str
    ) -> RemoteFile:
        """Read the object back: size, our checksum metadata and (where kept) the server's ETag."""
        stored = await self.stat(recid, key)
        problem = None
        if stored is None:
            problem = "the object is not there after its upload"
        elif not stored.matches(size, want):
            problem = f"stored as {stored.size} bytes with {stored.checksums}, sent {size} bytes with {want}"
        elif self.options.verify_etag and etag and etag != expected_etag:
            problem = f"the server's ETag {etag} is not {expected_etag}, what the bytes sent give"
        if problem is not None or stored is None:
            raise VerificationError(problem or "missing", expected=str(want), recid=recid, file=key)
        return stored

    async def _abort_uncertain(self, client: S3Client, bucket: str, object_key: str, at: At) -> None:
        """After a put whose create-multipart request went out more than once: abort every
        upload of that key still open. None of ours is (the put completed or aborted its
        own), so any there is one the server made for a try whose answer was lost, which
        would otherwise hold its parts until the next run. A second run writing the same key
        at this very moment would see its upload gone and retry it: two runs on one S3 key
        race anyway (the last complete wins). Housekeeping: a failure is logged, not raised."""
        if (bucket, object_key) not in client.uncertain_creates:
            return
        try:
            for upload in await client.list_uploads(bucket, object_key, at=at):
                if upload.key == object_key:
                    log.info("%s: aborting an upload whose create answer was lost", object_key)
                    await client.abort_multipart(bucket, upload.key, upload.upload_id, at=at)
            client.uncertain_creates.discard((bucket, object_key))  # else the next put of it tries again
        except FerryError as exc:
            log.warning("%s: cannot abort uploads left by a lost create answer: %s", object_key, exc)

    async def _abort_abandoned(self, recid: str) -> None:
        """Once per record and run: abort unfinished uploads of this record's keys left by
        earlier runs (started before this target was made), so no orphan parts are billed.
        Every put of the record waits for it, so none of this run's uploads is among them."""
        if not self.abort_abandoned:
            return
        task = self._cleanups.get(recid)
        if task is None:
            task = self._cleanups[recid] = asyncio.ensure_future(self._abort_uploads(recid))
        try:
            await asyncio.shield(task)
        except Exception:
            self._cleanups.pop(recid, None)  # the next put tries again
            raise

    async def _abort_uploads(self, recid: str) -> None:
        client = await self.client()
        try:
            found = await client.list_uploads(self.location.bucket, self.record_prefix(recid), at=At(recid))
        except AuthError as exc:
            # Listing uploads is a permission of its own (s3:ListBucketMultipartUploads) that
            # a put-and-get policy may lack; the clean-up is housekeeping, not safety.
            log.warning("record %s: cannot look for unfinished uploads to abort: %s", recid, exc)
            return
        for upload in found:
            started = upload.initiated.timestamp() if upload.initiated is not None else 0.0
            if self.file_key(recid, upload.key) is not None and started < self._started:
                log.info("record %s: aborting unfinished upload of %s from an earlier run", recid, upload.key)
                await client.abort_multipart(self.location.bucket, upload.key, upload.upload_id, at=At(recid))
