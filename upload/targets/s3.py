"""The S3 target (``type = "s3"``): records as prefixes of one bucket, files as objects.

    [targets.cpg]
    type = "s3"
    url = "s3://cellpainting-gallery/cpg0042/publication_data/jump_rr"
    endpoint_url = "https://s3.example.org"   # optional; else the standard AWS settings
    profile = "cpg"                           # optional AWS profile (or aws_profile = ...)
    layout = "versioned"                      # versioned | plain | archive

Layouts (``upload.targets.s3_layout``): ``versioned`` puts file ``key`` of record ``R``
at ``<prefix>/R/<key>/content``, with ``<prefix>/latest/`` as the moving pointer;
``plain`` at ``<prefix>/<key>`` (directory pushes); ``archive`` at ``<prefix>/NAME/REV/<key>``
(``ferry archive``), whose records are listed two folders deep. S3 has no drafts, no
publishing and no metadata documents; a record is "open".

Idempotency by content: each object carries the md5 of its bytes (verified before the
object was completed), the expected checksum it was sent with, its size and the source
record id as user metadata. A put whose object already has the same size and checksum
is skipped; a different one is replaced. Our unfinished multipart uploads under a
record are aborted the first time this run touches that record (``s3_sweep``).

Why one module of about 500 lines: one target's records, put, list and verify share
its options, client and the record of what this run stored (``_stored``), which lets a
LIST stand for a HEAD; the layouts, sweeps, client, error mapping, uploads, byte budget
and options are in s3_layout, s3_sweep, s3_client, s3_errors, s3_upload, s3_budget and
s3_options.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from ferry.core.checksums import HEX_LENGTHS, Checksum, hash_file
from ferry.core.config import TargetConfig
from ferry.core.errors import TargetNotFound, VerificationError
from upload.targets import S3_DEFAULTS
from upload.targets.base import (
    Abilities,
    BlockingOpen,
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
from upload.targets.s3_layout import LATEST, Places
from upload.targets.s3_options import S3Options
from upload.targets.s3_sweep import Sweeper
from upload.targets.s3_upload import Plan, Sent, aclose, file_chunks, plan_upload, send_object

log = logging.getLogger(__name__)

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
        self.places = Places(options.location, options.layout)
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
        self.sweeper = Sweeper(self.client, self.location.bucket, self.places)
        self._opened: set[str] = set()
        # (recid, key) a caller's LIST just showed absent or different: their put skips the
        # probing HEAD (one request per file fewer for an archive upload of N new files).
        self._listed_absent: set[tuple[str, str]] = set()
        # (recid, key) -> (md5, part size, part md5s) a caller took in its own read of the
        # file (PartHinted): that file's parts go with them, hashed nothing again.
        self._known_parts: dict[tuple[str, str], tuple[str, int, list[bytes]]] = {}
        # Object key -> (recid, size, ETag, file) of each object this target put and
        # verified in this run: a LIST showing the same size and ETag is that object, so
        # list_files needs no HEAD for it (``_known``).
        self._stored: dict[str, tuple[str, int, str, RemoteFile]] = {}

    @classmethod
    def _configured(cls, config: TargetConfig, wiring: Wiring) -> Self:
        # Credentials come from the AWS chain, not a token. S3 rate-limits by itself
        # (SlowDown, retried with back-off); a lower budget in the section is kept.
        return cls(config.name, S3Options.from_config(config), limiter=wiring.limiter if budgeted(config) else None)

    @property
    def abort_abandoned(self) -> bool:
        """Whether a put first aborts the record's uploads left by earlier runs (``Sweeper``)."""
        return self.sweeper.enabled

    @abort_abandoned.setter
    def abort_abandoned(self, value: bool) -> None:
        self.sweeper.enabled = value

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
        await self.sweeper.aclose()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- where things live (upload.targets.s3_layout) ----------------------------------

    def record_prefix(self, recid: str) -> str:
        """The folder (with a trailing '/') whose objects are this record's files."""
        return self.places.record_prefix(recid)

    def object_key(self, recid: str, key: str) -> str:
        return self.places.object_key(recid, key)

    def file_key(self, recid: str, object_key: str) -> str | None:
        """The file key an object of this record stands for, or None when it is not one."""
        return self.places.file_key(recid, object_key)

    def latest_record(self) -> RemoteRecord:
        """``latest/`` as a record with the id ``latest``: stat, list_files, copy_file's destination."""
        if self.options.layout != "versioned":
            raise NotSupported("latest/ exists only in the versioned layout")
        return self._record(LATEST)

    def _record(self, recid: str) -> RemoteRecord:
        return RemoteRecord(
            id=recid,
            recid=recid,
            state="open",
            links={"self": f"s3://{self.location.bucket}/{self.record_prefix(recid)}"},
        )

    # --- records: prefixes exist as soon as they hold an object ---------------------

    def _plan(self, size: int, at: At) -> Plan:
        """How a file of ``size`` bytes is sent: one PUT, or parts of which size."""
        return plan_upload(size, threshold=self.options.multipart_threshold, part_size=self.options.part_size, where=at)

    def plan_file(self, size: int) -> TransferType:
        plan = self._plan(size, At())
        return "M" if plan.multipart else "L"

    async def find(self, recid: str, query: str) -> RemoteRecord | None:
        self.places.source_record(recid)
        if self.options.layout == "plain" or recid in self._opened:
            return self._record(recid)
        client = await self.client()
        if await client.any_object(self.location.bucket, self.record_prefix(recid), at=At(recid)):
            return self._record(recid)
        return None

    async def get(self, recid: str, record_id: str) -> RemoteRecord | None:
        return await self.find(record_id, "")

    async def create(self, recid: str, body: Mapping[str, Any]) -> RemoteRecord:
        self.places.source_record(recid)
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

    async def blocking_open(self, rec: RemoteRecord) -> BlockingOpen | None:
        """How a worker thread GETs this record's objects (ThreadReader, ``s3_thread_get``)."""
        threaded = (await self.client()).threaded
        base = await threaded.ready(self.location.bucket)
        if base is None:
            return None
        recid, object_key = rec.recid, self.object_key
        return lambda key, start: threaded.open(base, object_key(recid, key), start)

    def blocking_done(self) -> None:
        if self._client is not None:
            self._client.threaded.drop()

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

    def part_size(self, size: int) -> int | None:
        """PartHinted: the part size of a file of ``size`` bytes; None below the threshold."""
        plan = self._plan(size, At())
        return plan.part_size if plan.multipart else None

    def know_parts(self, recid: str, key: str, md5: str, part_size: int, parts: Sequence[bytes]) -> None:
        """PartHinted: used by the next put of that file if it is sent with that md5 in parts of that size."""
        self._known_parts[(recid, key)] = (md5, part_size, list(parts))

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
        plan = self._plan(size, at)
        known = None
        hint = self._known_parts.pop((rec.recid, key), None)
        if hint is not None and plan.multipart and expected is not None and expected.algorithm == "md5":
            md5, part_size, parts = hint
            if md5 == expected.value and part_size == plan.part_size:
                known = parts  # each part is still checked by its answer (``send_object``)
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
        await self.sweeper.abandoned(rec.recid)
        await client.retry_aborts(bucket, object_key)  # this run's own failed try, if its abort failed too
        listed_absent = (rec.recid, key) in self._listed_absent
        self._listed_absent.discard((rec.recid, key))
        if expected is not None and not listed_absent:
            there = await self.stat(rec.recid, key)
            if there is not None and there.matches(size, expected):
                return there  # the same bytes are already there
        plan = self._plan(size, at)
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
            await self.sweeper.uncertain(client, object_key, at)
            raise
        finally:
            await aclose(source)  # a stream left half read closes its file or connection now
        await self.sweeper.uncertain(client, object_key, at)
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
