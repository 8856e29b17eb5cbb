"""The S3 client layer: one aiobotocore client per target, and one error mapping.

Credentials and the endpoint come from the standard AWS chain, as the AWS CLI finds them:
an explicit ``profile`` (else ``AWS_PROFILE``), the ``AWS_*`` environment including
``AWS_SESSION_TOKEN`` (so keys minted by S3 Access Grants or STS work unchanged), the
shared config files, and ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (botocore reads
them) unless ``endpoint_url`` is given. Requests are signed by botocore, never by us;
object reads take a shorter path to the same signer and HTTP session (s3_get).

Every failure leaves this module as a ``ferry.core.errors`` class, made by
``upload.targets.s3_errors.map_s3_error`` and nowhere else: a HEAD answers "absent" only
on a real 404; a 403, a 500 or a timeout is an error, never "absent".

Checksums the client sends: ``Content-MD5`` given by the caller on every PUT and part.
botocore's own CRC32 trailers are turned off (``when_required``): many S3-compatible
servers reject the aws-chunked bodies they need, and the md5 already proves the bytes.
Nor is the body's sha256 signed (``UNSIGNED-PAYLOAD``): botocore does so over plain HTTP
on the event loop (~1.3 CPU-s per GiB), and over HTTPS it already skips it when a
``Content-MD5`` is sent. ``Content-MD5`` is a signed header, so a body changed on the way
is still refused by the server.

A body is ``bytes`` (small documents) or an ``io.BytesIO`` the caller filled itself (parts
and files): botocore wraps ``bytes`` in a BytesIO that shares them, and aiohttp's first
look at it unshares it, a full copy per request on the event loop.

Why one module of about 500 lines: every request wrapper uses the one client and its
session; the error mapping, uploads, byte budget and options already
live in s3_errors, s3_upload, s3_budget and s3_options.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.handlers import add_expect_header
from botocore.utils import parse_timestamp

from ferry.core.errors import ConfigError, FerryError, TargetError, TargetNotFound
from upload.targets.s3_errors import CredentialsExpired, map_s3_error
from upload.targets.s3_get import Answer, ShortGet
from upload.targets.s3_thread_get import ThreadGet

__all__ = [
    "At",
    "CredentialsExpired",
    "ObjectInfo",
    "S3Client",
    "S3Location",
    "S3Settings",
    "UploadInfo",
    "map_s3_error",
]

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client as RawClient

    from upload.targets.base import RequestLimiter
else:
    RawClient = Any

AddressingStyle = Literal["auto", "path", "virtual"]
MAX_COPY = 5 * 1024**3  # S3's limit for a one-request CopyObject
COPY_PART = 512 * 1024**2  # ranges of a multipart copy (server-side: size hardly matters)


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix`` split; ``key(...)`` joins parts under the prefix."""

    bucket: str
    prefix: str  # no leading or trailing '/', may be empty

    @classmethod
    def parse(cls, url: str, *, where: str = "url") -> S3Location:
        if not isinstance(url, str) or not url.startswith("s3://"):
            raise ConfigError(f"{where}: {url!r} is not an s3://bucket/prefix URL")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket or len(bucket) < 3 or "/" in bucket or bucket != bucket.strip():
            raise ConfigError(f"{where}: {url!r} names no valid bucket")
        prefix = prefix.strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise ConfigError(f"{where}: {url!r} has an empty, '.' or '..' path segment")
        return cls(bucket, prefix)

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None  # else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / config files / AWS
    profile: str | None = None  # else AWS_PROFILE, else the default chain
    # An AWS shared-credentials file for this target only (the sandbox's), instead of
    # AWS_SHARED_CREDENTIALS_FILE / ~/.aws/credentials; the rest of the chain is unchanged.
    credentials_file: str | None = None
    region: str | None = None  # else AWS_REGION / AWS_DEFAULT_REGION / profile, else us-east-1
    connections: int = 16  # pooled connections (parts in flight across files)
    connect_timeout: float = 10.0
    read_timeout: float = 300.0  # a part of 100+ MiB on a slow link still answers within this
    attempts: int = 3  # botocore's own tries per request (standard mode); the pipeline retries files
    addressing_style: AddressingStyle = "auto"  # botocore picks path style for IP endpoints


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # without quotes; an md5 hex for single PUTs, "<md5-of-md5s>-N" for multipart
    metadata: Mapping[str, str] = field(default_factory=dict)  # user metadata, keys lower case
    last_modified: datetime | None = None


@dataclass(frozen=True)
class UploadInfo:
    """An unfinished multipart upload."""

    key: str
    upload_id: str
    initiated: datetime | None


@dataclass(frozen=True)
class At:
    """Which record and file a call is for, for error messages."""

    recid: str | None = None
    file: str | None = None


NOWHERE = At()


@contextlib.contextmanager
def _mapped(what: str, bucket: str, key: str | None = None, *, at: At = NOWHERE, write: bool = False) -> Iterator[None]:
    try:
        yield
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise map_s3_error(exc, what=what, bucket=bucket, key=key, recid=at.recid, file=at.file, write=write) from exc


def _etag(value: Any) -> str:
    return str(value or "").strip('"')


# --- the client --------------------------------------------------------------------------


def _rewound(body: bytes | io.BytesIO) -> bytes | io.BytesIO:
    """A BytesIO body from its start: aiohttp sends from the current position, and a body
    sent before (a try that failed) is left at its end."""
    if isinstance(body, io.BytesIO):
        body.seek(0)
    return body


def timestamp(value: Any) -> datetime:
    """An S3 timestamp, parsed without dateutil (botocore's parser took ~0.5 ms a response on
    the event loop: a third of the parse of a small GET). HTTP dates in headers, ISO 8601 in
    XML bodies; anything else (epochs, odd forms) as botocore parses it."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value) if value[:1].isdigit() else parsedate_to_datetime(value)
        except (TypeError, ValueError):
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    return parse_timestamp(value)


def _spending(limiter: RequestLimiter) -> Callable[..., Awaitable[None]]:
    """A before-send handler taking one slot of the request budget per HTTP request.

    Before-send, not around each call: botocore's own retries are requests too, so every one
    that leaves counts (the budget holds for what the server sees). The handler returns
    None, which tells botocore to send the request itself."""

    async def spend(**_: Any) -> None:
        async with limiter:
            return None

    return spend


class S3Client:
    """The calls the S3 target makes, each mapped into ferry errors. ``await S3Client.open(settings)``."""

    def __init__(
        self,
        raw: RawClient,
        stack: contextlib.AsyncExitStack,
        settings: S3Settings,
        limiter: RequestLimiter | None = None,
    ) -> None:
        self.raw = raw  # the aiobotocore client, for calls this class does not wrap
        self.short = ShortGet(raw, limiter)  # object reads' short path (s3_get)
        self.threaded = ThreadGet(self.short, settings.connect_timeout, settings.read_timeout)  # s3_thread_get
        self.settings = settings
        self._stack = stack
        # Uploads whose abort failed (the server was down when their transfer failed):
        # aborted again before the same key is sent anew and when the client closes, so an
        # outage that ends within the run leaves no open upload behind.
        self.unaborted: dict[tuple[str, str, str], At] = {}
        # Keys whose create-multipart request was sent more than once (botocore retried it,
        # or it failed after being sent): the server may hold an upload whose answer never
        # came back, which no abort of ours knows. The target looks for them after the put.
        self.uncertain_creates: set[tuple[str, str]] = set()

    @classmethod
    async def open(cls, settings: S3Settings, *, where: str = "S3", limiter: RequestLimiter | None = None) -> S3Client:
        config = AioConfig(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_pool_connections=settings.connections,
            retries={"max_attempts": settings.attempts, "mode": "standard"},
            s3={"addressing_style": settings.addressing_style, "payload_signing_enabled": False},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            warm_up_loader_caches=True,  # service model JSON loaded in a thread, not on the loop
        )
        stack = contextlib.AsyncExitStack()
        try:
            session = AioSession()
            session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=timestamp)
            if settings.credentials_file:
                # Set before the profile: the profile map is read from the files on first use.
                session.set_config_variable("credentials_file", settings.credentials_file)
            if settings.profile:
                session.set_config_variable("profile", settings.profile)
            region = settings.region or session.get_config_variable("region") or "us-east-1"
            raw = await stack.enter_async_context(
                session.create_client("s3", region_name=region, endpoint_url=settings.endpoint_url, config=config)
            )
            # botocore asks for "Expect: 100-continue" on every PUT with a body. aiohttp sends
            # such headers outside its own error handling, so a connection closed while the
            # 100 is awaited leaves an unretrieved task traceback in the log (the request
            # itself fails and is retried). Without it a PUT also saves a round trip.
            raw.meta.events.unregister("before-call.s3", add_expect_header)
            if limiter is not None:
                raw.meta.events.register("before-send.s3", _spending(limiter))  # type: ignore[arg-type]  # aiobotocore awaits it
        except Exception as exc:
            await stack.aclose()
            raise map_s3_error(exc, what=f"{where}: open client") from exc
        return cls(raw, stack, settings, limiter)

    async def aclose(self) -> None:
        if self.unaborted:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(30):  # closing is not held up by a server still down
                    await self.retry_aborts()
        await self._stack.aclose()

    async def retry_aborts(self, bucket: str | None = None, key: str | None = None) -> None:
        """Abort again the uploads whose abort failed (all, or those of one object); one
        that fails once more stays listed (and is logged) for the next try."""
        for bkt, k, upload_id in list(self.unaborted):
            if (bucket is None or bkt == bucket) and (key is None or k == key):
                at = self.unaborted.pop((bkt, k, upload_id))
                try:
                    await self.abort_multipart(bkt, k, upload_id, at=at)
                except FerryError as exc:  # every S3 failure is mapped into the tree
                    self.unaborted[(bkt, k, upload_id)] = at
                    log.warning("%s (the upload is still open: tried again later)", exc)

    @property
    def endpoint_url(self) -> str:
        return str(self.raw.meta.endpoint_url)

    async def head(self, bucket: str, key: str, at: At = NOWHERE) -> ObjectInfo | None:
        """The object, or None only when the server says 404. Anything else raises."""
        try:
            with _mapped("HEAD", bucket, key, at=at):
                r = await self.raw.head_object(Bucket=bucket, Key=key)
        except TargetNotFound:
            return None
        return ObjectInfo(
            key=key,
            size=int(r["ContentLength"]),
            etag=_etag(r.get("ETag")),
            metadata={k.lower(): v for k, v in (r.get("Metadata") or {}).items()},
            last_modified=r.get("LastModified"),
        )

    async def put(
        self,
        bucket: str,
        key: str,
        body: bytes | io.BytesIO,
        *,
        content_md5: str,
        metadata: Mapping[str, str],
        content_type: str | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
        at: At = NOWHERE,
    ) -> str:
        """One PUT with ``Content-MD5`` (base64); returns the ETag. ``if_none_match``: only
        if the key is absent; ``if_match``: only over that ETag (else Conflict, HTTP 412)."""
        extra: dict[str, Any] = {"ContentType": content_type} if content_type else {}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = f'"{if_match}"'
        with _mapped("PUT", bucket, key, write=True, at=at):
            r = await self.raw.put_object(
                Bucket=bucket, Key=key, Body=_rewound(body), ContentMD5=content_md5, Metadata=dict(metadata), **extra
            )
        return _etag(r.get("ETag"))

    async def create_multipart(
        self,
        bucket: str,
        key: str,
        *,
        metadata: Mapping[str, str],
        content_type: str | None = None,
        at: At = NOWHERE,
    ) -> str:
        extra: dict[str, Any] = {"ContentType": content_type} if content_type else {}
        try:
            with _mapped("create multipart upload", bucket, key, write=True, at=at):
                r = await self.raw.create_multipart_upload(Bucket=bucket, Key=key, Metadata=dict(metadata), **extra)
        except FerryError as exc:
            if exc.retryable:  # a lost answer or a dropped connection: created, maybe
                self.uncertain_creates.add((bucket, key))
            raise
        if r.get("ResponseMetadata", {}).get("RetryAttempts", 0):
            self.uncertain_creates.add((bucket, key))
        return str(r["UploadId"])

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        body: bytes | io.BytesIO,
        *,
        content_md5: str,
        at: At = NOWHERE,
    ) -> str:
        with _mapped(f"upload part {number}", bucket, key, at=at):
            r = await self.raw.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=_rewound(body),
                ContentMD5=content_md5,
            )
        return _etag(r.get("ETag"))

    async def complete_multipart(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[tuple[int, str]], at: At = NOWHERE
    ) -> str:
        doc: Any = {"Parts": [{"PartNumber": n, "ETag": f'"{etag}"'} for n, etag in parts]}
        with _mapped("complete multipart upload", bucket, key, write=True, at=at):
            r = await self.raw.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload=doc
            )
        return _etag(r.get("ETag"))

    async def abort_multipart(self, bucket: str, key: str, upload_id: str, at: At = NOWHERE) -> None:
        """Abort; an upload already gone (aborted or completed) is not an error."""
        try:
            with _mapped("abort multipart upload", bucket, key, at=at):
                await self.raw.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except TargetNotFound:
            return

    async def abort_quietly(self, bucket: str, key: str, upload_id: str, at: At = NOWHERE) -> None:
        """Abort after a failed or cancelled transfer, never raising: the caller has its own
        error to report. Shielded so that a cancelled transfer still takes its parts away;
        an abort that fails too (expired credentials) is logged, and the next run aborts
        the upload (``S3Target`` looks for our unfinished uploads)."""
        task = asyncio.ensure_future(self.abort_multipart(bucket, key, upload_id, at=at))
        task.add_done_callback(functools.partial(self._abort_done, (bucket, key, upload_id), at))
        with contextlib.suppress(Exception):
            await asyncio.shield(task)

    def _abort_done(self, upload: tuple[str, str, str], at: At, task: asyncio.Task[None]) -> None:
        """The outcome of an abort nobody may be waiting for (its transfer was cancelled)."""
        if task.cancelled():
            self.unaborted[upload] = at
            return
        exc = task.exception()
        if exc is not None:
            self.unaborted[upload] = at
            log.warning("%s (the upload is left open: aborted again before its key is sent anew)", exc)

    async def list_uploads(self, bucket: str, prefix: str, *, at: At = NOWHERE) -> list[UploadInfo]:
        """Unfinished multipart uploads under ``prefix``."""
        out: list[UploadInfo] = []
        with _mapped("list multipart uploads", bucket, prefix or None, at=at):
            async for page in self.raw.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
                for u in page.get("Uploads") or []:
                    out.append(UploadInfo(str(u["Key"]), str(u["UploadId"]), u.get("Initiated")))
        return out

    async def list_objects(self, bucket: str, prefix: str, *, at: At = NOWHERE) -> AsyncIterator[ObjectInfo]:
        """Objects under ``prefix`` (no user metadata: LIST does not return it)."""
        with _mapped("list objects", bucket, prefix or None, at=at):
            async for page in self.raw.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for o in page.get("Contents") or []:
                    yield ObjectInfo(
                        str(o["Key"]), int(o.get("Size") or 0), _etag(o.get("ETag")), {}, o.get("LastModified")
                    )

    async def any_object(self, bucket: str, prefix: str, *, at: At = NOWHERE) -> bool:
        """Whether anything is stored under ``prefix``: one LIST of at most one key (a
        revision's first page would be 1,000 keys parsed for a yes)."""
        with _mapped("list objects", bucket, prefix or None, at=at):
            page = await self.raw.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        return bool(page.get("Contents"))

    async def copy(
        self,
        bucket: str,
        src_key: str,
        dst_key: str,
        *,
        size: int,
        part_size: int = COPY_PART,
        single_limit: int = MAX_COPY,
        at: At = NOWHERE,
    ) -> str:
        """Server-side copy keeping the source's metadata; above ``single_limit`` (S3: 5 GB)
        as a multipart copy of ``part_size`` ranges, aborted if any part fails."""
        source: Any = {"Bucket": bucket, "Key": src_key}
        if size <= single_limit:
            with _mapped("copy", bucket, dst_key, write=True, at=at):
                r = await self.raw.copy_object(Bucket=bucket, Key=dst_key, CopySource=source, MetadataDirective="COPY")
            return _etag((r.get("CopyObjectResult") or {}).get("ETag"))
        head = await self.head(bucket, src_key, at=at)
        if head is None:
            raise TargetNotFound(f"copy s3://{bucket}/{src_key}: not found", recid=at.recid, file=at.file)
        upload_id = await self.create_multipart(bucket, dst_key, metadata=head.metadata, at=at)
        parts: list[tuple[int, str]] = []
        try:
            for number, first in enumerate(range(0, size, part_size), start=1):
                last = min(size, first + part_size) - 1
                with _mapped(f"copy part {number}", bucket, dst_key, at=at):
                    rp = await self.raw.upload_part_copy(
                        Bucket=bucket,
                        Key=dst_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=source,
                        CopySourceRange=f"bytes={first}-{last}",
                    )
                parts.append((number, _etag((rp.get("CopyPartResult") or {}).get("ETag"))))
            return await self.complete_multipart(bucket, dst_key, upload_id, parts, at=at)
        except BaseException:
            await self.abort_quietly(bucket, dst_key, upload_id, at=at)
            raise

    async def list_folders(self, bucket: str, prefix: str, *, delimiter_base: str) -> list[str]:
        """Names of the "folders" right under ``delimiter_base`` whose names start with the rest of ``prefix``."""
        out: list[str] = []
        with _mapped("list folders", bucket, prefix or None):
            pages = self.raw.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
            async for page in pages:
                for p in page.get("CommonPrefixes") or []:
                    out.append(str(p["Prefix"])[len(delimiter_base) :].rstrip("/"))
        return out

    async def read(
        self, bucket: str, key: str, *, start: int = 0, chunk: int = 1024 * 1024, at: At = NOWHERE
    ) -> AsyncGenerator[bytes, None]:
        """An object's bytes from ``start`` on, in pieces of at most ``chunk`` bytes."""
        short = self.short.usable(bucket)
        answer = await self.short.open(bucket, key, start) if short else Answer()
        with _mapped("GET", bucket, key, at=at):
            if answer.response is not None:
                async with answer.response as body:
                    # The pieces as the socket reads gave them (at most 256 KiB, asyncio's
                    # read size), not joined to ``chunk``: that join copied every byte once
                    # more on the event loop (0.35 s of a 1.1 GB download's loop, py-spy).
                    async for data, _ in body.content.iter_chunks():
                        if len(data) <= chunk:
                            yield data
                            continue
                        for i in range(0, len(data), chunk):
                            yield data[i : i + chunk]
                return
            # The whole call: what it answers and raises is what the GET means (s3_get).
            extra: dict[str, Any] = {"Range": f"bytes={start}-"} if start else {}
            r = await self.raw.get_object(Bucket=bucket, Key=key, **extra)
            if short and 400 <= answer.status < 500 and answer.status != 429:
                self.short.turn_off(bucket, answer.status)
            async with r["Body"] as body:
                while data := await body.read(chunk):
                    yield data

    async def delete(self, bucket: str, key: str, at: At = NOWHERE, *, if_match: str | None = None) -> None:
        """Delete; S3 answers 204 for a missing key too. ``if_match``: only that ETag (else Conflict)."""
        extra: dict[str, Any] = {"IfMatch": f'"{if_match}"'} if if_match is not None else {}
        with _mapped("DELETE", bucket, key, at=at):
            await self.raw.delete_object(Bucket=bucket, Key=key, **extra)

    async def get_bytes(self, bucket: str, key: str, *, limit: int = 16 * 1024 * 1024, at: At = NOWHERE) -> bytes:
        """A small object's content (manifests, locks); TargetNotFound when absent."""
        return (await self.get_small(bucket, key, limit=limit, at=at))[0]

    async def get_small(
        self, bucket: str, key: str, *, limit: int = 16 * 1024 * 1024, at: At = NOWHERE
    ) -> tuple[bytes, str]:
        """A small object's content and ETag; TargetNotFound when absent."""
        with _mapped("GET", bucket, key, at=at):
            r = await self.raw.get_object(Bucket=bucket, Key=key)
            if int(r.get("ContentLength") or 0) > limit:
                r["Body"].close()
                raise TargetError(f"GET s3://{bucket}/{key}: larger than {limit} bytes", recid=at.recid, file=at.file)
            async with r["Body"] as stream:
                data: bytes = await stream.read()
        return data, _etag(r.get("ETag"))
