"""Stats events: opened when work starts, closed with its outcome, appended as JSONL.

Schema (version ``SCHEMA_VERSION``; documented in ``stats/SCHEMA.md``): one JSON object a
line in ``<stats_dir>/<run_id>.jsonl``. An event is written twice: once with status
``started`` when the work begins, and once with its terminal status (``ok``, ``failed``,
``skipped``, ``dry-run``) when it ends; both lines share ``event_id``. A record's final
status is its last terminal event. Each line is flushed as it is written, so a crash loses
at most the line being written. ``close()`` of the writer exports the same rows as CSV.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

# The schema's names (stats/schema.py) and the rows' readers (stats/rows.py) are
# importable from here as before.
from stats.rows import RunTally, export_csv, read_jsonl
from stats.schema import FIELDS, SCHEMA_VERSION, STAGES, STATUSES, TERMINAL, Stage, Status


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    return utc_now().strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass
class Event:
    """One unit of accounted work. Use as a context manager or call ``close`` yourself."""

    writer: StatsWriter
    stage: str
    recid: str | None
    file: str | None
    event_id: str
    started: datetime
    t0: float
    bytes: int = 0
    file_count: int | None = None
    zip_used: bool | None = None
    transfer: str | None = None
    attempts: int = 1
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    closed: bool = False

    def close(
        self,
        status: Status,
        *,
        error: BaseException | str | None = None,
        error_type: str | None = None,
        **updates: Any,
    ) -> None:
        if self.closed:
            return
        for key, value in updates.items():
            if hasattr(self, key) and key not in ("writer", "event_id", "started", "t0", "closed"):
                setattr(self, key, value)
            else:
                self.extra[key] = value
        self.closed = True
        duration = self.writer.monotonic() - self.t0
        end = self.writer.now()
        row = self._row(status, end=end, duration=duration)
        if error is not None:
            if isinstance(error, BaseException):
                row["error_type"] = error_type or getattr(error, "kind", type(error).__name__)
                row["error"] = str(error) or type(error).__name__
            else:
                row["error_type"] = error_type or "error"
                row["error"] = error
        self.writer.write(row)

    def write_started(self) -> None:
        """Write the ``started`` row of an event opened with ``write_started=False`` (its
        start time is still the opening time): for work whose try is only accounted once it
        is known to count, e.g. a batch try that gives a failed file back to the one-file path."""
        self.writer.write(self._row("started"))

    def _row(self, status: str, *, end: datetime | None = None, duration: float | None = None) -> dict[str, Any]:
        throughput = None
        if duration and self.bytes and status == "ok":
            throughput = round(self.bytes / duration / 1e6, 3)
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.writer.run_id,
            "host": self.writer.host,
            "event_id": self.event_id,
            "seq": None,
            "stage": self.stage,
            "recid": self.recid,
            "file": self.file,
            "status": status,
            "start": iso(self.started),
            "end": iso(end) if end else None,
            "duration_s": round(duration, 6) if duration is not None else None,
            "bytes": self.bytes,
            "file_count": self.file_count,
            "zip_used": self.zip_used,
            "transfer": self.transfer,
            "attempts": self.attempts,
            "throughput_mbps": throughput,
            "error_type": None,
            "error": None,
            "reason": self.reason,
            "extra": dict(self.extra) if self.extra else None,
        }

    def __enter__(self) -> Event:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.closed:
            self.close("failed" if exc is not None else "ok", error=exc)


class StatsWriter:
    """Appends events to ``<dir>/<run_id>.jsonl``; thread-safe; ``None`` dir writes nothing.

    Secrets never reach this writer: callers pass errors that were built without tokens,
    and ``redact`` strings are removed from every line as a last guard. ``summary=True``
    appends a run summary row (stage ``summary``) on ``close``; ``clock`` (seconds since
    the epoch) replaces both clocks, for simulated runs in tests and demos.
    """

    def __init__(
        self,
        stats_dir: str | os.PathLike[str] | None,
        run_id: str | None = None,
        *,
        redact: tuple[str, ...] = (),
        summary: bool = False,
        clock: Callable[[], float] | None = None,
        worker: str | None = None,
    ) -> None:
        self.run_id = run_id or new_run_id()
        self.host = socket.gethostname()
        # One file per process: a run spread over workers (Dask) writes <run_id>-<worker>.jsonl
        # from each, and the loaders read all of a run's files as one run (rows carry run_id).
        self.worker = worker
        self.dir = Path(stats_dir) if stats_dir is not None else None
        self._lock = threading.Lock()
        self._seq = 0
        # Run summary (opt-in so the rows of existing writers stay as they were): running
        # totals kept as rows pass, written as one ``summary`` row by ``close``.
        self._summary_on_close = summary
        self._summary_written = False
        self._tally = RunTally()
        self._clock = clock
        self._created = self.now()
        self._t0 = self.monotonic()
        self._redact = tuple(r for r in redact if r)
        self._fh = None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.jsonl_path, "ab", buffering=0)  # noqa: SIM115 - kept open for the run

    def now(self) -> datetime:
        """Wall-clock time of event boundaries (``clock`` replaces it in simulations)."""
        return datetime.fromtimestamp(self._clock(), UTC) if self._clock else utc_now()

    def monotonic(self) -> float:
        """Clock for durations: monotonic, so a wall-clock jump never gives a negative one."""
        return self._clock() if self._clock else time.monotonic()

    @property
    def jsonl_path(self) -> Path:
        assert self.dir is not None
        return self.dir / f"{self._stem}.jsonl"

    @property
    def csv_path(self) -> Path:
        assert self.dir is not None
        return self.dir / f"{self._stem}.csv"

    @property
    def _stem(self) -> str:
        return f"{self.run_id}-{self.worker}" if self.worker else self.run_id

    def open(
        self,
        stage: str,
        recid: str | None = None,
        file: str | None = None,
        *,
        write_started: bool = True,
        **attrs: Any,
    ) -> Event:
        event = Event(
            writer=self,
            stage=stage,
            recid=recid,
            file=file,
            event_id=uuid.uuid4().hex[:12],
            started=self.now(),
            t0=self.monotonic(),
        )
        for key, value in attrs.items():
            if hasattr(event, key):
                setattr(event, key, value)
            else:
                event.extra[key] = value
        if write_started:
            self.write(event._row("started"))
        return event

    def record(
        self, stage: str, status: Status, recid: str | None = None, file: str | None = None, **attrs: Any
    ) -> None:
        """Write a single terminal event with no ``started`` line (decisions, skips)."""
        error = attrs.pop("error", None)
        self.open(stage, recid, file, write_started=False, **attrs).close(status, error=error)

    def write(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._tally.add(row)
        if self._fh is None:
            return
        with self._lock:
            self._seq += 1
            row["seq"] = self._seq
            if self.worker:
                row["worker"] = self.worker
            line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
            for secret in self._redact:
                line = line.replace(secret.encode(), b"***")
            self._fh.write(line)

    def summary(self) -> dict[str, Any]:
        """Totals of the run so far (the ``extra`` of the summary row); needs no stats dir."""
        with self._lock:
            return self._tally.totals()

    def write_summary(self) -> dict[str, Any]:
        """Append the run summary row (stage ``summary``) once; returns the row.

        Its status is ``failed`` when a record failed or events are still open (an
        interrupted run), else ``ok``; ``bytes``/``file_count`` are what the run delivered
        (uploads, or downloads when it uploaded nothing); ``throughput_mbps`` is that over
        the writer's wall time.
        """
        wall = self.monotonic() - self._t0
        totals = self.summary()
        delivered = totals["delivered"]
        failed = totals["records"].get("failed", 0) > 0 or totals["open_events"] > 0
        row: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "host": self.host,
            "event_id": "summary-" + uuid.uuid4().hex[:4],
            "seq": None,
            "stage": "summary",
            "recid": None,
            "file": None,
            "status": "failed" if failed else "ok",
            "start": iso(self._created),
            "end": iso(self.now()),
            "duration_s": round(wall, 6),
            "bytes": delivered["bytes"],
            "file_count": delivered["files"],
            "zip_used": None,
            "transfer": None,
            "attempts": 1,
            "throughput_mbps": round(delivered["bytes"] / wall / 1e6, 3) if wall > 0 else None,
            "error_type": None,
            "error": None,
            "reason": None,
            "extra": totals,
        }
        if not self._summary_written:
            self._summary_written = True
            self.write(row)
        return row

    def close(self) -> None:
        """Close the JSONL file and export the CSV of the same rows."""
        if self._fh is None:
            return
        if self._summary_on_close and not self._summary_written:
            self.write_summary()
        with self._lock:
            self._fh.close()
            self._fh = None
        export_csv(self.jsonl_path, self.csv_path)

    def __enter__(self) -> StatsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "FIELDS",
    "SCHEMA_VERSION",
    "STAGES",
    "STATUSES",
    "TERMINAL",
    "Event",
    "RunTally",
    "Stage",
    "StatsWriter",
    "Status",
    "export_csv",
    "iso",
    "new_run_id",
    "read_jsonl",
    "utc_now",
]
