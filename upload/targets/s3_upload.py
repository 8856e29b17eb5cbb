"""Sending one object to S3 from an async byte stream, verified before it exists.

The promise (product.md's failure case): an object is never completed carrying a checksum
its bytes do not have. So the stream is hashed as it passes (in a worker thread: md5 runs
at ~750 MB/s on one core and must not stall the event loop), every PUT and part carries
``Content-MD5`` (the server refuses bytes that changed on the way), and the whole-stream
size and checksum are compared with the expected ones *before* the single PUT is sent or
the multipart upload is completed. A short, long or corrupt stream aborts the upload.
A file whose md5 and part md5s were read before (``known_parts``) is not hashed again:
its parts go with those md5s, and each part's answer (a refusal, or an ETag that is not
that md5) proves what the server stored before the upload is completed.

Memory is bounded by bytes in flight: every part (and a single PUT's body) is reserved in
a ``ByteBudget`` shared by all uploads of the run *before* its bytes are read, and given
back once the server has answered for it; ``parts_in_flight`` caps requests per upload.
Without a budget (direct callers, tests) the bound is ``parts_in_flight`` parts.

Why one module of about 490 lines: the single PUT, the parts, their bodies and the checks
before completion are one promise, read together; the client calls are in s3_client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ferry.core.checksums import Checksum, MultiHasher
from ferry.core.errors import QuotaError, VerificationError
from upload.targets.base import Progress
from upload.targets.s3_budget import ByteBudget
from upload.targets.s3_client import At, S3Client

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3: every part but the last is at least 5 MiB
MAX_PART = 5 * 1024 * MiB  # and at most 5 GiB
MAX_PARTS = 10_000
MAX_SINGLE_PUT = 5 * 1024 * MiB
MAX_OBJECT = 5 * 1024 * 1024 * MiB  # 5 TiB

Chunks = Callable[[], AsyncIterator[bytes]]


@dataclass(frozen=True)
class Plan:
    multipart: bool
    part_size: int  # bytes per part (multipart) or the whole size (single PUT)
    parts: int


def plan_upload(size: int, *, threshold: int, part_size: int, where: At) -> Plan:
    """Single PUT below ``threshold``, else parts of at least ``part_size`` (and 5 MiB),
    grown so the object fits in 10,000 parts, rounded up to whole MiB."""
    if size > MAX_OBJECT:
        raise QuotaError(f"{size} bytes exceed S3's 5 TiB object limit", recid=where.recid, file=where.file)
    if size < max(threshold, 1) and size <= MAX_SINGLE_PUT:
        return Plan(False, size, 1)
    part = max(part_size, MIN_PART, math.ceil(size / MAX_PARTS))
    part = math.ceil(part / MiB) * MiB
    part = min(part, MAX_PART)
    return Plan(True, part, max(1, math.ceil(size / part)))


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def multipart_etag(part_digests: list[bytes]) -> str:
    """The ETag S3 gives a multipart object: md5 of the parts' binary md5s, ``-N``."""
    return f"{hashlib.md5(b''.join(part_digests)).hexdigest()}-{len(part_digests)}"


def _open_and_read(path: Path, chunk: int) -> tuple[io.FileIO, bytes]:
    fh = io.FileIO(path, "rb")
    try:
        return fh, fh.read(chunk)
    except BaseException:
        fh.close()
        raise


def _read_or_close(fh: io.FileIO, chunk: int) -> bytes:
    data = fh.read(chunk)
    if not data:
        fh.close()
    return data


async def file_chunks(path: Path, chunk: int) -> AsyncGenerator[bytes, None]:
    """A file's bytes in ``chunk``-sized reads, each in a worker thread. The open goes with
    the first read and the close with the read that finds the end, in the same thread
    call: a file of one chunk (a single PUT) costs two hops to a thread, not four."""
    fh, data = await asyncio.to_thread(_open_and_read, path, chunk)
    try:
        while data:
            yield data
            data = await asyncio.to_thread(_read_or_close, fh, chunk)
    finally:
        if not fh.closed:  # left half read
            await asyncio.to_thread(fh.close)


async def parts_of(
    chunks: AsyncIterator[bytes], part_size: int, size: int, at: At
) -> AsyncGenerator[list[memoryview], None]:
    """Re-cut a stream into parts of ``part_size`` bytes (the last one shorter), each as the
    list of its pieces: views into the chunks, not joined here (``_body_and_md5`` makes the
    one copy, in a worker thread); raises on a long stream."""
    pending: list[memoryview] = []
    have = 0
    total = 0
    async for data in chunks:
        if not data:
            continue
        total += len(data)
        if total > size:
            raise VerificationError(
                f"the stream is longer than the {size} bytes expected",
                expected=str(size),
                actual=f">{size}",
                **at_kw(at),
            )
        chunk = memoryview(data)
        while have + chunk.nbytes >= part_size:
            cut = part_size - have
            pending.append(chunk[:cut])
            chunk = chunk[cut:]
            part, pending, have = pending, [], 0
            yield part
            del part
        if chunk.nbytes:
            pending.append(chunk)
            have += chunk.nbytes
    if have:
        yield pending


async def aclose(stream: object) -> None:
    """Close an async generator (or anything with ``aclose``) that may be left half read."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


def at_kw(at: At) -> dict[str, str | None]:
    return {"recid": at.recid, "file": at.file}


def _whole(pieces: list[memoryview]) -> bytes | None:
    """The bytes object a part is when it is one whole chunk (a file read of exactly the
    part's size, the usual case for a file), else None."""
    if len(pieces) == 1 and isinstance(pieces[0].obj, bytes) and pieces[0].nbytes == len(pieces[0].obj):
        return pieces[0].obj
    return None


def _body(pieces: list[memoryview]) -> io.BytesIO:
    """A part's body: the chunk itself when the part is one whole chunk (no copy, no
    thread), else one allocation of its exact size (blocking: a worker thread). A BytesIO
    made of a bytes object shares it (reads never copy the buffer out of it), so aiohttp
    reads it without the whole copy it makes of a body botocore wrapped (see s3_client)."""
    whole = _whole(pieces)
    return io.BytesIO(whole if whole is not None else b"".join(pieces))


async def _body_async(pieces: list[memoryview]) -> io.BytesIO:
    return _body(pieces) if _whole(pieces) is not None else await asyncio.to_thread(_body, pieces)


def _body_and_md5(pieces: list[memoryview]) -> tuple[io.BytesIO, bytes]:
    whole = _whole(pieces)
    data = whole if whole is not None else b"".join(pieces)
    return io.BytesIO(data), hashlib.md5(data).digest()


def _feed(hasher: MultiHasher, pieces: list[memoryview]) -> None:
    for piece in pieces:
        hasher.update(piece)


async def _part_body(hasher: MultiHasher, pieces: list[memoryview]) -> tuple[io.BytesIO, bytes]:
    """The part's body and md5, and the whole-stream digests fed: two hashes over the same
    bytes, so two worker threads, one core each (hashlib releases the GIL)."""
    made, _ = await asyncio.gather(asyncio.to_thread(_body_and_md5, pieces), asyncio.to_thread(_feed, hasher, pieces))
    return made


@dataclass(frozen=True)
class Sent:
    etag: str
    checksums: Mapping[str, Checksum]  # what the bytes hashed to, by algorithm (md5 always)
    multipart: bool
    expected_etag: str  # the ETag a conforming server gives these bytes


def check_stream(hasher: MultiHasher, size: int, expected: Checksum | None, at: At) -> None:
    """Raise unless the bytes that passed have ``size`` and ``expected``."""
    if hasher.size != size:
        raise VerificationError(
            f"the stream ended after {hasher.size} of {size} bytes",
            expected=str(size),
            actual=str(hasher.size),
            **at_kw(at),
        )
    if expected is not None:
        actual = hasher.hexdigests()[expected.algorithm]
        if actual != expected.value:
            raise VerificationError(
                f"the bytes hash to {expected.algorithm}:{actual}, not the expected {expected}",
                expected=str(expected),
                actual=f"{expected.algorithm}:{actual}",
                **at_kw(at),
            )


def _changed(number: int, at: At, detail: str) -> VerificationError:
    return VerificationError(
        f"{at.file or 'the file'}: part {number} is not the bytes hashed before the upload "
        f"({detail}): the file changed meanwhile; the upload is aborted",
        **at_kw(at),
    )


def check_parts(digests: Sequence[bytes], known: Sequence[bytes], sent: int, size: int, at: At) -> None:
    """Raise unless as many parts and bytes were sent as were hashed (a file that shrank
    since: its parts' bytes are checked by the server, against their Content-MD5)."""
    if len(digests) != len(known) or sent != size:
        raise VerificationError(
            f"the stream ended after {len(digests)} of {len(known)} parts ({sent} of {size} bytes)",
            expected=str(size),
            actual=str(sent),
            **at_kw(at),
        )


async def send_object(
    client: S3Client,
    bucket: str,
    key: str,
    chunks: AsyncIterator[bytes],
    *,
    size: int,
    expected: Checksum | None,
    metadata: Mapping[str, str],
    md5_key: str | None = None,
    plan: Plan,
    parts_in_flight: int,
    progress: Progress | None,
    at: At,
    budget: ByteBudget | None = None,
    known_parts: Sequence[bytes] | None = None,
    check_part_etags: bool = True,
) -> Sent:
    """Store ``chunks`` as ``key``: one PUT or a multipart upload, verified before it exists.

    ``md5_key``: a single PUT also stores the md5 of its bytes under this metadata name
    (known before the PUT is sent); a multipart upload's metadata is fixed at its start.
    ``known_parts``: the md5 of every part of the bytes that hash to ``expected`` (md5),
    from ``hash_file(..., part_size=...)``. Each part then goes with that md5 as its
    Content-MD5 without being hashed again here: a server that checks it (AWS, SeaweedFS)
    refuses a part whose bytes do not match (BadDigest), and ``check_part_etags`` (the
    target's verify_etag) also requires each part's ETag, the md5 the server computed
    over the bytes it stored, to be the known md5 before the upload is completed: that
    catches a server that ignores Content-MD5 (moto 5). Without it (SSE-KMS, whose ETags
    are not md5s) each part is hashed again and compared here, as the only check."""
    algorithms = ("md5",) if expected is None or expected.algorithm == "md5" else ("md5", expected.algorithm)
    hasher = MultiHasher(algorithms)
    if known_parts is not None and (expected is None or expected.algorithm != "md5"):
        raise ValueError("known_parts go with the md5 they were hashed with")
    if not plan.multipart:
        if budget is not None:
            await budget.acquire(size)
        try:
            return await _send_single(
                client, bucket, key, chunks, size, expected, metadata, md5_key, hasher, progress, at
            )
        finally:
            if budget is not None:
                budget.release(size)
    upload_id = await client.create_multipart(bucket, key, metadata=metadata, at=at)
    parts = parts_of(chunks, plan.part_size, size, at)
    try:
        etags, digests, sent_bytes = await _send_parts(
            client,
            bucket,
            key,
            upload_id,
            parts,
            None if known_parts is not None else hasher,
            parts_in_flight,
            progress,
            at,
            budget,
            plan.part_size,
            known_parts,
            check_part_etags,
        )
        if known_parts is not None:
            check_parts(digests, known_parts, sent_bytes, size, at)
        else:
            check_stream(hasher, size, expected, at)  # a wrong stream is aborted, never completed
        etag = await client.complete_multipart(bucket, key, upload_id, list(enumerate(etags, start=1)), at=at)
    except BaseException:
        await parts.aclose()
        await client.abort_quietly(bucket, key, upload_id, at=at)  # a cancelled transfer too
        raise
    # With known parts, every part matched the read before the send whose whole md5 is ``expected``.
    sums = {"md5": expected} if known_parts is not None and expected is not None else hasher.checksums()
    return Sent(etag, sums, True, multipart_etag(digests))


async def _send_single(
    client: S3Client,
    bucket: str,
    key: str,
    chunks: AsyncIterator[bytes],
    size: int,
    expected: Checksum | None,
    metadata: Mapping[str, str],
    md5_key: str | None,
    hasher: MultiHasher,
    progress: Progress | None,
    at: At,
) -> Sent:
    whole = parts_of(chunks, max(size, 1), size, at)
    try:
        pieces = [piece async for part in whole for piece in part]
    finally:
        await whole.aclose()
    # Hashed here even when the md5 is known: not every server checks Content-MD5 (moto
    # stores a mismatching body), and bytes that are not the expected ones are never sent.
    # One pass: the whole-stream md5 of a single PUT is its Content-MD5; a body that must
    # be joined is filled in another thread meanwhile.
    if _whole(pieces) is not None:
        data = _body(pieces)
        await asyncio.to_thread(_feed, hasher, pieces)
    else:
        data, _ = await asyncio.gather(asyncio.to_thread(_body, pieces), asyncio.to_thread(_feed, hasher, pieces))
    del pieces
    check_stream(hasher, size, expected, at)  # before anything is written
    checksums = hasher.checksums()
    digest = bytes.fromhex(checksums["md5"].value)
    if md5_key is not None:
        metadata = {**metadata, md5_key: digest.hex()}
    etag = await client.put(bucket, key, data, content_md5=b64(digest), metadata=metadata, at=at)
    if progress is not None:
        progress(size)
    return Sent(etag, checksums, False, digest.hex())


async def _reserve_and_read(
    parts: AsyncIterator[list[memoryview]], slots: asyncio.Semaphore, budget: ByteBudget | None, part_size: int
) -> list[memoryview] | None:
    """The next part, read only once a request slot and its bytes are reserved (so the
    bytes held in parts never pass the budget: counted, not timed); None at the end.
    Whatever is not handed on (the end, a failure) is given back here."""
    await slots.acquire()
    if budget is not None:
        try:
            await budget.acquire(part_size)
        except BaseException:
            slots.release()
            raise
    try:
        return await anext(parts)
    except BaseException as exc:
        slots.release()
        if budget is not None:
            budget.release(part_size)
        if isinstance(exc, StopAsyncIteration):
            return None
        raise


def _raise_failed(tasks: list[asyncio.Task[None]]) -> None:
    """Stop reading parts once one has failed: its error is the upload's."""
    for task in tasks:
        if task.done() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _next_body(
    number: int,
    pieces: list[memoryview],
    hasher: MultiHasher | None,
    known: Sequence[bytes] | None,
    check_etag: bool,
    at: At,
) -> tuple[io.BytesIO, bytes]:
    """Part ``number``'s body and md5: hashed here (and fed to ``hasher``), or the known
    md5. Without ``check_etag`` a part ETag proves nothing and not every server checks
    Content-MD5 (moto 5 does not), so the part is hashed again and compared here."""
    if hasher is not None:
        return await _part_body(hasher, pieces)
    if known is None or number > len(known):
        raise _changed(number, at, f"the file had {len(known or ())} parts")
    if check_etag:
        return await _body_async(pieces), known[number - 1]
    body, md5 = await asyncio.to_thread(_body_and_md5, pieces)
    if md5 != known[number - 1]:
        raise _changed(number, at, f"its md5 is {md5.hex()}, not {known[number - 1].hex()}")
    return body, md5


async def _send_part(
    client: S3Client,
    bucket: str,
    key: str,
    upload_id: str,
    number: int,
    body: io.BytesIO,
    md5: bytes,
    known: Sequence[bytes] | None,
    check_etag: bool,
    at: At,
) -> str:
    """One part with its Content-MD5; its ETag. A known md5 came from a read before the send
    (a push's pre-read, an archive's hashing for its manifest), so a refusal or
    (``check_etag``) an ETag that is not that md5 means the file changed."""
    try:
        etag = await client.upload_part(bucket, key, upload_id, number, body, content_md5=b64(md5), at=at)
    except VerificationError as exc:
        if known is None:
            raise
        raise _changed(number, at, f"the server refused it: {exc.message}") from exc
    if known is not None and check_etag and etag != md5.hex():
        # A server that stored the part despite its Content-MD5 says so by its ETag.
        raise _changed(number, at, f"the server's part ETag {etag} is not {md5.hex()}")
    return etag


async def _send_parts(
    client: S3Client,
    bucket: str,
    key: str,
    upload_id: str,
    parts: AsyncIterator[list[memoryview]],
    hasher: MultiHasher | None,
    in_flight: int,
    progress: Progress | None,
    at: At,
    budget: ByteBudget | None = None,
    part_size: int = 0,
    known: Sequence[bytes] | None = None,
    check_etags: bool = True,
) -> tuple[list[str], list[bytes], int]:
    """Send the parts, ``in_flight`` at a time; each part's md5 goes with it as Content-MD5.
    The whole stream feeds ``hasher``; or (None) each part's md5 is the ``known`` one, not
    computed again (the server checks the bytes against it). Returns the parts' ETags and
    md5s and the bytes sent."""
    slots = asyncio.Semaphore(max(1, in_flight))
    etags: dict[int, str] = {}
    digests: list[bytes] = []
    tasks: list[asyncio.Task[None]] = []
    sent = 0

    def give_back() -> None:
        slots.release()
        if budget is not None:
            budget.release(part_size)

    async def send(number: int, body: io.BytesIO, nbytes: int, md5: bytes) -> None:
        try:
            etags[number] = await _send_part(client, bucket, key, upload_id, number, body, md5, known, check_etags, at)
            if progress is not None:
                progress(nbytes)
        finally:
            del body
            give_back()

    try:
        number = 0
        while (pieces := await _reserve_and_read(parts, slots, budget, part_size)) is not None:
            try:
                _raise_failed(tasks)
                number += 1
                body, md5 = await _next_body(number, pieces, hasher, known, check_etags, at)
            except BaseException:
                give_back()
                raise
            nbytes = sum(piece.nbytes for piece in pieces)
            sent += nbytes
            del pieces
            digests.append(md5)
            tasks.append(asyncio.create_task(send(number, body, nbytes, md5)))
            del body
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return [etags[n] for n in range(1, len(digests) + 1)], digests, sent
