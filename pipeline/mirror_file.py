"""One file of a ``ferry mirror``: the step a local mirror runs per file, and a Dask task runs
on a worker (``pipeline.runners.dask_mirror``).

The step decides and does one file's share of step 3 of ``pipeline.mirror``: skipped when
the version already holds the same size and checksum, copied server-side when latest/
holds the same bytes, else streamed from the source into the target (md5 checked before
the object is completed). It returns a small picklable ``FileOutcome``: no live objects,
no exception objects (a worker's exception would have to unpickle on the client), so an
``AuthError`` comes back as ``auth=True`` and the caller decides to stop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from download.base import ByteFetcher
from ferry.core.checksums import Checksum
from ferry.core.errors import AuthError, FerryError
from ferry.core.model import FileEntry
from ferry.core.retry import RetryPolicy, retry
from pipeline.stream import WINDOW, source_stream
from stats.events import StatsWriter
from upload.targets.base import RemoteFile, RemoteRecord
from upload.targets.s3 import S3Target

Action = Literal["sent", "skipped", "reused", "failed"]


@dataclass(frozen=True)
class FileOutcome:
    """What became of one file (picklable: it travels back from a Dask worker)."""

    key: str
    action: Action
    bytes_sent: int = 0
    verified: bool = False  # the object on the target has the source's size and checksum
    error_kind: str | None = None  # FerryError.kind of the failure
    error: str | None = None
    auth: bool = False  # credentials refused or expired: the whole mirror must stop
    worker: str = ""


@dataclass(frozen=True)
class FileStep:
    """The live objects one file's step needs (built once per process, not per file)."""

    target: S3Target
    fetcher_for: Callable[[str], ByteFetcher]
    stats: StatsWriter
    url_for: Callable[[str], str] = str
    window: int = WINDOW
    retries: int = 4  # extra tries per file after the first (as limits.retries)

    async def outcome(self, rec: RemoteRecord, entry: FileEntry, expected: Checksum) -> FileOutcome:
        """``run`` for a Dask task: every failure is an outcome, none an exception."""
        try:
            return await self.run(rec, entry, expected)
        except AuthError as exc:
            return FileOutcome(entry.key, "failed", error_kind=exc.kind, error=str(exc), auth=True)
        except FerryError as exc:  # a stat or a server-side copy that failed: this file only
            return FileOutcome(entry.key, "failed", error_kind=exc.kind, error=str(exc))

    async def run(self, rec: RemoteRecord, entry: FileEntry, expected: Checksum) -> FileOutcome:
        """One file; a failed transfer is an outcome, an ``AuthError`` (and a failed look at
        the target) is raised, as a local mirror stops on it."""
        key, size, target = entry.key, entry.size or 0, self.target
        there = await target.stat(rec.recid, key)
        if there is not None and there.matches(size, expected):
            self.stats.record("upload", "skipped", rec.recid, key, bytes=size, reason="same size and checksum")
            return FileOutcome(key, "skipped", verified=True)
        latest = target.latest_record()
        before = await target.stat(latest.recid, key)
        if before is not None and before.matches(size, expected):
            # Unchanged since the version latest/ shows: copied server-side, not streamed.
            await target.copy_file(latest, key, rec, key)
            self.stats.record(
                "upload", "ok", rec.recid, key, bytes=0, reason="server-side copy of the same bytes in latest/"
            )
            return FileOutcome(key, "reused", verified=True)
        url = self.url_for(entry.uri)
        fetcher = self.fetcher_for(url)
        event = self.stats.open("upload", rec.recid, key, bytes=size, transfer=target.plan_file(size))
        tries = 0

        async def put() -> RemoteFile:
            nonlocal tries
            tries += 1
            return await target.put_stream(
                rec, key, lambda: source_stream(fetcher, url, size, window=self.window), size, expected
            )

        try:
            await retry(put, policy=RetryPolicy(attempts=self.retries + 1), what=f"mirror {key}")
        except AuthError:
            event.close("failed", error=None)
            raise
        except FerryError as exc:
            event.attempts = tries
            event.close("failed", error=exc)
            return FileOutcome(key, "failed", error_kind=exc.kind, error=str(exc))
        event.attempts = tries
        event.close("ok")
        return FileOutcome(key, "sent", bytes_sent=size, verified=True)
