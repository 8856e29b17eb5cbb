"""The target protocol: what every upload target (InvenioRDM/NRP, later Zenodo, S3) speaks.

A target is dumb on purpose: it finds, creates and updates one record, lists and puts its
files (each put verified by the target's own checksum), publishes, and makes new
versions. Policy (what to skip, ordering, dry runs, stats, when to publish, whether a
create whose answer was lost happened) lives in the pipeline. Every method raises only
``ferry.core.errors`` classes; messages name the recid and the file key.

Records are addressed by the *source* recid (e.g. CERN ``81009``); the target's own id
(``4d0ns-ntd89``) is carried in ``RemoteRecord.id``. How to find a recid on the target is
the metadata profile's business: the pipeline passes its query string (e.g.
``metadata.recid:81009``) and the already transformed body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, runtime_checkable

RecordState = Literal["draft", "published"]
TransferType = Literal["L", "M"]  # InvenioRDM transfer types: local single PUT, multipart
Progress = Callable[[int], None]  # called with the number of bytes just sent (resends count again)


@dataclass(frozen=True)
class RemoteFile:
    """One file as the target holds it. ``md5`` is bare hex, or None while not computed."""

    key: str
    size: int | None
    md5: str | None
    status: str  # "completed" | "pending" (InvenioRDM); targets without states say "completed"

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def matches(self, size: int, md5: str) -> bool:
        """True when this is a finished copy of a file with ``size`` bytes and ``md5``."""
        return self.completed and self.size == size and self.md5 is not None and self.md5 == md5.lower()


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


class NoLimit:
    """A limiter that lets everything through (tests, targets without rate limits)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class Target(Protocol):
    """What the pipeline needs from a target. All methods are coroutines except the planners."""

    name: str
    limits: TargetLimits

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
        md5: str | None,
        progress: Progress | None = None,
    ) -> RemoteFile:
        """Upload ``path`` as ``key``, commit, read back; raise VerificationError unless the
        target's size and md5 equal ``size`` and ``md5`` (bare hex). A finished file with the
        same md5 is kept as is; a different or unfinished one is replaced.

        ``md5=None`` (the caller has not hashed the file, e.g. a fresh zip bundle): the
        target computes it from the bytes it reads to send (no extra pass where it can),
        checks the target's md5 against that in the same way, and returns it as the
        ``RemoteFile``'s md5 for the caller to record. A file already under ``key`` cannot
        be proven the same then, so it is replaced."""
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
