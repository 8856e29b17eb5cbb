"""What the records of one run share (``PipelineContext``) and what each one ends with.

The bulk runner builds one context for all its records, so every limit (upload slots,
bytes in flight, zip workers, the circuit breaker) binds across records; the single-record
command builds one for its record. ``RecordJob`` (pipeline/job.py) reads it, never copies it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from download.manifest import Manifest
from ferry.core.config import Limits
from ferry.core.errors import FerryError
from ferry.core.model import Record
from ferry.core.retry import RetryPolicy
from metadata.base import Profile
from pipeline.ledger import Ledger
from pipeline.limits import CircuitBreaker, WeightedLimiter
from pipeline.stream import StreamFrom
from stats.events import StatsWriter
from upload.targets.base import PublishOutcome, Target
from upload.zip.policy import ZipPolicy

Outcome = Literal["ok", "failed", "skipped", "dry-run"]

# Fetches a record's files into its folder, verified, and returns the updated manifest.
# The download stage (download/engine.py) is adapted to this shape by the command layer.
Fetch = Callable[[Record, Path], Awaitable[Manifest]]


@runtime_checkable
class UploadProgress(Protocol):
    """Where upload progress goes (``ferry.progress.BulkProgress``); optional."""

    def upload_totals(self, *, files: int, bytes: int) -> None: ...
    def upload_started(self, name: str) -> None: ...
    def upload_advance(self, nbytes: int) -> None: ...
    def upload_finished(self, name: str, *, ok: bool, skipped_bytes: int = 0) -> None: ...


@dataclass
class PipelineContext:
    """Everything records share in one run: the target, limits, ledger, stats."""

    target: Target
    profile: Profile
    dest: Path
    fetch: Fetch
    stats: StatsWriter
    limits: Limits = field(default_factory=Limits)
    zip_policy: ZipPolicy = field(default_factory=ZipPolicy)
    zip_executor: Executor | None = None
    ledger: Ledger | None = None
    publish: bool = False
    new_version: bool = False
    dry_run: bool = False
    delete_staged: bool = False
    oversize: str = "bundle"  # the target's setting for records over its limits (pipeline/oversize.py)
    run_id: str | None = None
    breaker: CircuitBreaker | None = None
    on_plan: Callable[[str], None] | None = None  # dry-run plan lines (printed by the CLI)
    upload_progress: UploadProgress | None = None
    # ``--stream``: files go from the source straight into the target's put_stream (no
    # staging file, no zip); None: downloaded into ``dest`` first.
    stream: StreamFrom | None = None
    upload_slots: asyncio.Semaphore = field(init=False)
    upload_bytes: WeightedLimiter = field(init=False)
    zip_slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.upload_slots = asyncio.Semaphore(self.limits.uploads)
        self.upload_bytes = WeightedLimiter(self.limits.upload_bytes_in_flight)
        self.zip_slots = asyncio.Semaphore(self.limits.zip_workers)

    @property
    def file_retry(self) -> RetryPolicy:
        """A file's tries: the first, then ``limits.retries`` more (the same count as a request's)."""
        return RetryPolicy(attempts=self.limits.retries + 1, base=self.limits.backoff_base)

    def plan(self, line: str) -> None:
        if self.on_plan is not None:
            self.on_plan(line)


@dataclass
class RecordResult:
    recid: str
    status: Outcome
    stage: str  # the last stage reached (where a failure happened)
    error: FerryError | None = None
    remote_id: str | None = None
    publish: PublishOutcome | None = None
    file_count: int = 0  # files put on the target: zip bundles and their manifest count, not their members
    bytes_uploaded: int = 0
    zip_used: bool | None = None
    reason: str | None = None
    failed_files: dict[str, str] = field(default_factory=dict)  # key -> reason
    source_files: int = 0  # the source record's files (those of a part, for a part)
    parts: int = 0  # oversize = "split": the linked records the record went as

    def event_files(self) -> dict[str, Any]:
        """The record event's file facts: the source's files, and the target's apart from them."""
        facts: dict[str, Any] = {"file_count": self.source_files, "uploaded_files": self.file_count}
        return {**facts, "parts": self.parts} if self.parts else facts

    def files_text(self) -> str:
        """How many files went, for the terminal: source files and zip bundles said apart."""
        verified = f"{self.file_count} file(s) verified on the target"
        if self.parts:
            what = " (zip bundles and their manifests)" if self.zip_used else ""
            return f"{self.source_files} source file(s) as {self.parts} linked records, {verified}{what}"
        if self.zip_used and self.source_files != self.file_count:
            return f"{self.source_files} source file(s) in {verified} (zip bundles and their manifest)"
        return verified

    def lines(self) -> list[str]:
        """One line per failure, for the terminal."""
        if self.status != "failed":
            return []
        out = [f"record {self.recid}: {self.stage} failed: {self.error}"]
        out += [f"record {self.recid}, file {k}: {why}" for k, why in sorted(self.failed_files.items())]
        return out
