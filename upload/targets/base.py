"""The target protocol: what every upload target (InvenioRDM/NRP, Zenodo, S3, local) speaks.

A target is dumb on purpose: it finds, creates and updates one record, lists and puts its
files (each put verified by the target's own checksum), publishes, and makes new
versions. Policy (what to skip, ordering, dry runs, stats, when to publish, whether a
create whose answer was lost happened) lives in the pipeline. Every method raises only
``ferry.core.errors`` classes; messages name the recid and the file key.

What a target can do is declared, not assumed: ``Target.abilities`` says which hashes it
reports (the pipeline verifies with the best one both sides know), whether it has drafts
and publishing, versions, multipart, server-side copy, streaming puts, metadata documents
and search. The pipeline asks (a target without ``publish`` has no publish step, one
without ``metadata`` needs no profile), as rclone asks a backend for its optional
interfaces. Methods a target lacks the ability for raise ``NotSupported``.

Records are addressed by the *source* recid (e.g. CERN ``81009``); the target's own id
(``4d0ns-ntd89``) is carried in ``RemoteRecord.id``. How to find a recid on the target is
the metadata profile's business: the pipeline passes its query string (e.g.
``metadata.recid:81009``) and the already transformed body.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self, runtime_checkable

from ferry.core.checksums import Checksum
from ferry.core.config import Limits, Secret, TargetConfig
from ferry.core.errors import TargetError
from ferry.core.retry import RetryPolicy, request_policy

# draft: writable, to be published; published: files locked; open: writable and final
# (targets without drafts: a directory, an S3 prefix).
RecordState = Literal["draft", "published", "open"]
TransferType = Literal["L", "M"]  # InvenioRDM transfer types: local single PUT, multipart
Progress = Callable[[int], None]  # called with the number of bytes just sent (resends count again)


class NotSupported(TargetError):
    """The target lacks the ability asked for (publish on a directory, versions on Zenodo files)."""


@dataclass(frozen=True)
class Abilities:
    """What a target can do; the pipeline asks instead of assuming."""

    hashes: tuple[str, ...]  # algorithms it reports for a stored file, best first ("md5", ...)
    drafts: bool = False  # records are created as drafts (then filled, then published)
    publish: bool = False  # a draft can be published (files locked afterwards)
    versions: bool = False  # a published record can get a new version
    multipart: bool = False  # big files go in parts
    server_side_copy: bool = False  # copy an object without moving its bytes through us
    streaming_put: bool = False  # put_stream: bytes of unknown origin, no local file needed
    metadata: bool = False  # records carry a metadata document (needs a profile)
    search: bool = False  # find() by a query (may lag); else find() is a direct lookup
    sub_paths: bool = True  # file keys may hold '/' (Zenodo's are flat)
    listing: bool = False  # list_records(): every record the target holds (archives)
    # A record id may be a path ``NAME/REV`` naming a folder, with the record's files straight
    # under it at their keys: ``<root>/NAME/REV/<key>`` (what an archive needs, and
    # djarchive's layout). Without it a target keeps records its own way (S3 versioned:
    # ``<prefix>/<recid>/<key>/content``) or holds one record only (S3 plain).
    record_paths: bool = False
    # ClaimingTarget: concurrent creates of one recid by several runs can be settled (a
    # target whose find() may miss a fresh record: search that lags). A target whose find()
    # is a direct lookup of a deterministic key (S3 prefix, directory) needs no claims.
    claims: bool = False
    # A record may hold no files at all and still be published (InvenioRDM/NRP:
    # ``files.enabled = false``). Without it, a record the source lists no files for gets
    # its source record as one JSON file where the target carries metadata (Zenodo
    # publishes nothing without a file), and is an error on a plain file store.
    metadata_only: bool = False


@dataclass(frozen=True)
class RemoteFile:
    """One file as the target holds it, with the checksums the target reports for it."""

    key: str
    size: int | None
    checksums: tuple[Checksum, ...]  # empty while the target has not computed one
    status: str  # "completed" | "pending" (InvenioRDM); targets without states say "completed"

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def checksum(self, algorithm: str) -> str | None:
        """The value of ``algorithm`` as bare lowercase hex, or None when not reported."""
        for c in self.checksums:
            if c.algorithm == algorithm:
                return c.value
        return None

    def matches(self, size: int, expected: Checksum) -> bool:
        """True when this is a finished copy of a file with ``size`` bytes and ``expected``."""
        return self.completed and self.size == size and self.checksum(expected.algorithm) == expected.value


@dataclass(frozen=True)
class RemoteRecord:
    """A record on the target: a draft (writable) or a published record (files locked)."""

    id: str  # the target's id
    recid: str  # the source recid this record carries
    state: RecordState
    links: Mapping[str, str] = field(default_factory=dict)  # absolute URLs given by the server
    revision: int | None = None
    # Field messages the server attached to a saved draft (InvenioRDM saves invalid drafts).
    errors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class PublishOutcome:
    """``published``, or ``pending-review`` when a curator must accept the request first."""

    state: Literal["published", "pending-review"]
    record_id: str
    request_id: str | None = None


@dataclass(frozen=True)
class TargetLimits:
    max_files: int  # files per record
    max_file_size: int  # bytes
    max_record_size: int  # bytes, all files together


@runtime_checkable
class RequestLimiter(Protocol):
    """Anything used as ``async with limiter:`` around one request (``pipeline.limits.RateLimiter``)."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Any: ...


@runtime_checkable
class PausableLimiter(RequestLimiter, Protocol):
    """A limiter that can hold every request for a while (a 429's ``Retry-After``)."""

    def pause_for(self, seconds: float) -> None: ...


@runtime_checkable
class RefundableLimiter(RequestLimiter, Protocol):
    """A limiter that takes back the slot of a request that never reached the server."""

    def refund(self) -> None: ...


class NoLimit:
    """A limiter that lets everything through (tests, targets without rate limits)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


@dataclass(frozen=True)
class Wiring:
    """What a run gives a target beside its config section: how one request is retried
    (``limits.retries``), the run's rate limiter and the token. A target that sends no
    HTTP requests of its own (S3's client retries by itself, a folder) takes none of them."""

    policy: RetryPolicy
    limiter: RequestLimiter | None = None
    token: Secret | None = None


class TargetBase:
    """What every target class writes the same way, written once: ``from_config`` (what the
    registry calls, ``upload.targets.make_target``) and ``async with target:`` (closed by
    ``aclose``). A target says in ``_configured`` how its section and the run's ``Wiring``
    build it, and implements ``aclose``."""

    @classmethod
    def from_config(
        cls,
        config: TargetConfig,
        limits: Limits | None = None,
        *,
        limiter: RequestLimiter | None = None,
        token: Secret | None = None,
    ) -> Self:
        return cls._configured(config, Wiring(request_policy(limits or Limits()), limiter, token))

    @classmethod
    def _configured(cls, config: TargetConfig, wiring: Wiring) -> Self:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        raise NotImplementedError


class Target(Protocol):
    """What the pipeline needs from a target. All methods are coroutines except the planners."""

    name: str
    limits: TargetLimits
    abilities: Abilities

    def plan_file(self, size: int) -> TransferType:
        """How a file of ``size`` bytes would be sent (for dry runs and stats); no request."""
        ...

    async def find(self, recid: str, query: str) -> RemoteRecord | None:
        """The draft (preferred) or published record for ``recid``, found with ``query``."""
        ...

    async def get(self, recid: str, record_id: str) -> RemoteRecord | None:
        """The draft (preferred) or published record with the target's id ``record_id`` (from a
        ledger), or None when the target no longer has it."""
        ...

    async def create(self, recid: str, body: Mapping[str, Any]) -> RemoteRecord:
        """Create a draft and return it, or raise. Never repeated after a failure that may have
        taken effect (a lost answer): that error is raised, retryable and marked
        ``upload.targets.http.maybe_applied``, and the caller (the pipeline) looks for the draft
        before it creates again; a target does not guess."""
        ...

    async def update_metadata(self, rec: RemoteRecord, body: Mapping[str, Any]) -> RemoteRecord:
        """Replace a draft's metadata with ``body``."""
        ...

    async def list_files(self, rec: RemoteRecord) -> dict[str, RemoteFile]:
        """Files the record holds, by key (pending ones included)."""
        ...

    async def put_file(
        self,
        rec: RemoteRecord,
        key: str,
        path: Path,
        size: int,
        expected: Checksum | None,
        progress: Progress | None = None,
    ) -> RemoteFile:
        """Upload ``path`` as ``key``, commit, read back; raise VerificationError unless the
        target's size and checksum equal ``size`` and ``expected`` (an algorithm of
        ``abilities.hashes``, chosen by the pipeline). A finished file with the same checksum
        is kept as is; a different or unfinished one is replaced.

        ``expected=None`` (the caller has not hashed the file, e.g. a fresh zip bundle): the
        target computes its best hash from the bytes it reads to send (no extra pass where
        it can), checks the stored file against that in the same way, and returns it among
        the ``RemoteFile``'s checksums for the caller to record. A file already under
        ``key`` cannot be proven the same then, so it is replaced."""
        ...

    async def delete_file(self, rec: RemoteRecord, key: str) -> None:
        """Remove ``key`` from a draft; a missing file is not an error."""
        ...

    async def publish(self, rec: RemoteRecord) -> PublishOutcome:
        """Publish a draft, directly or through the server's review request."""
        ...

    async def new_version(self, rec: RemoteRecord) -> RemoteRecord:
        """A new draft version of a published record (files of the previous one imported)."""
        ...

    async def aclose(self) -> None:
        """Release connections. The target is unusable afterwards."""
        ...


# --- optional abilities: a target that declares one implements the matching protocol ------


@runtime_checkable
class RecordLister(Protocol):
    """``abilities.listing``: the records the target holds (archives list datasets by it)."""

    async def list_records(self, prefix: str = "") -> list[str]:
        """Record ids (the source ids they carry) starting with ``prefix``, sorted."""
        ...


@runtime_checkable
class StreamingTarget(Protocol):
    """``abilities.streaming_put``: bytes straight from a source, no local file."""

    async def put_stream(
        self,
        rec: RemoteRecord,
        key: str,
        chunks: Callable[[], Any],  # () -> AsyncIterator[bytes], a fresh stream per try
        size: int,
        expected: Checksum,
        progress: Progress | None = None,
    ) -> RemoteFile:
        """Store the stream as ``key``; complete it only when its size and ``expected``
        match what arrived (a short, long or corrupt stream leaves nothing behind)."""
        ...


@runtime_checkable
class CopyingTarget(Protocol):
    """``abilities.server_side_copy``: copy a stored file without moving its bytes."""

    async def copy_file(self, src: RemoteRecord, key: str, dst: RemoteRecord, dst_key: str) -> RemoteFile: ...


@runtime_checkable
class ClaimingTarget(Protocol):
    """``abilities.claims``: settles creates of one recid made at once by several runs.

    Search indexes lag, so two runs (other --dest, other machines) may both miss the other's
    fresh draft and both create one. The rule (``pipeline.claims``): the oldest create wins,
    a loser discards its own draft. It needs only that the search shows records in the order
    they were made (an index refresh makes every earlier write visible at once): once a
    run sees its own fresh draft, it sees every older one too.
    """

    async def claimants(self, recid: str, query: str) -> list[RemoteRecord]:
        """Every record carrying ``recid`` (drafts and published) the search sees now, the
        oldest create first, ties by id: every run orders the same set the same way."""
        ...

    async def discard(self, rec: RemoteRecord) -> None:
        """Delete a draft that was never published (a lost claim); a missing one is no error."""
        ...


@runtime_checkable
class FileReader(Protocol):
    """A target that streams a stored file back (archive downloads, S3 as a source)."""

    def read_file(self, rec: RemoteRecord, key: str, *, start: int = 0) -> AsyncGenerator[bytes, None]:
        """The stored bytes of ``key`` from byte ``start`` on, in chunks (closed with ``aclose``)."""
        ...


class BlockingStream(Protocol):
    """A stored file's bytes for a worker thread: ``readinto`` until it returns 0, then ``close``."""

    def readinto(self, buffer: memoryview, /) -> int: ...

    def close(self) -> None: ...


# Called in a worker thread: (key, start) -> the bytes from ``start`` on, or None when this
# way cannot give them (then ``read_file`` does, and says what is wrong). Errors while
# reading are raised as OSError (ConnectionError, TimeoutError, ...); the caller resumes through
# ``read_file`` from what it kept.
BlockingOpen = Callable[[str, int], BlockingStream | None]


@runtime_checkable
class ThreadReader(Protocol):
    """A FileReader whose stored files a worker thread can also read with blocking calls,
    so the bytes, their hash and their writes stay off the event loop (archive downloads)."""

    async def blocking_open(self, rec: RemoteRecord) -> BlockingOpen | None:
        """On the loop, before each file: how a thread opens this record's files now, or None
        (this way is off: ``read_file`` only)."""
        ...

    def blocking_done(self) -> None:
        """In each worker thread that used ``blocking_open``, as it ends: let go of what the
        thread holds (its connection)."""
        ...


@runtime_checkable
class ListingHinted(Protocol):
    """A target whose put first probes for an object already there (S3: a HEAD), and can
    skip that probe for keys the caller's own listing just showed absent or different
    (a push or an archive upload listed the record before sending)."""

    def mark_absent(self, recid: str, keys: Iterable[str]) -> None:
        """These keys of ``recid`` are not stored with the bytes about to be sent."""
        ...


@runtime_checkable
class PartHinted(Protocol):
    """A target that sends a big file in parts, each with its md5 (S3 multipart). A caller
    that reads the file anyway (an archive upload hashing its tree for the manifest) can
    take the part md5s in the same read and hand them over: the send then hashes nothing
    again, and each part's answer proves the bytes are the ones hashed."""

    def part_size(self, size: int) -> int | None:
        """The part size a file of ``size`` bytes is sent in; None: sent whole."""
        ...

    def know_parts(self, recid: str, key: str, md5: str, part_size: int, parts: Sequence[bytes]) -> None:
        """The md5 of each ``part_size`` part of the file whose whole md5 is ``md5``."""
        ...


@runtime_checkable
class SizeLister(Protocol):
    """A target whose listing gives each file's size in a few requests (S3: LIST pages)
    while ``list_files`` costs a request per file for its checksums (S3: a HEAD each). For
    callers that only need which files are there and how big (an archive download, whose
    manifest carries the checksums), plus the checksums of one file."""

    async def list_sizes(self, rec: RemoteRecord) -> dict[str, int]:
        """Key -> size of every finished file of the record, without checksums."""
        ...

    async def stat(self, recid: str, key: str) -> RemoteFile | None:
        """One file as stored, with its checksums; None when it is not there."""
        ...
