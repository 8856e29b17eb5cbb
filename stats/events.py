"""Stats events: opened when work starts, closed with its outcome, appended as JSONL.

Schema (version ``SCHEMA_VERSION``; documented in ``stats/SCHEMA.md``): one JSON object a
line in ``<stats_dir>/<run_id>.jsonl``. An event is written twice: once with status
``started`` when the work begins, and once with its terminal status (``ok``, ``failed``,
``skipped``, ``dry-run``) when it ends; both lines share ``event_id``. A record's final
status is its last terminal event. Each line is flushed as it is written, so a crash loses
at most the line being written. ``close()`` of the writer exports the same rows as CSV.
"""

from __future__ import annotations

import csv
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import orjson

SCHEMA_VERSION = 1

Stage = Literal["run", "resolve", "download", "zip", "transform", "upload", "verify", "publish", "record"]
Status = Literal["started", "ok", "failed", "skipped", "dry-run"]
TERMINAL = ("ok", "failed", "skipped", "dry-run")

# Column order of the CSV export and the documented field list.
FIELDS = (
    "schema_version",
    "run_id",
    "host",
    "event_id",
    "seq",
    "stage",
    "recid",
    "file",
    "status",
    "start",
    "end",
    "duration_s",
    "bytes",
    "file_count",
    "zip_used",
    "transfer",
    "attempts",
    "throughput_mbps",
    "error_type",
    "error",
    "reason",
    "extra",
)


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
        duration = time.monotonic() - self.t0
        end = utc_now()
        row = self._row(status, end=end, duration=duration)
        if error is not None:
            if isinstance(error, BaseException):
                row["error_type"] = error_type or getattr(error, "kind", type(error).__name__)
                row["error"] = str(error) or type(error).__name__
            else:
                row["error_type"] = error_type or "error"
                row["error"] = error
        self.writer.write(row)

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
    and ``redact`` strings are removed from every line as a last guard.
    """

    def __init__(
        self, stats_dir: str | os.PathLike[str] | None, run_id: str | None = None, *, redact: tuple[str, ...] = ()
    ) -> None:
        self.run_id = run_id or new_run_id()
        self.host = socket.gethostname()
        self.dir = Path(stats_dir) if stats_dir is not None else None
        self._lock = threading.Lock()
        self._seq = 0
        self._redact = tuple(r for r in redact if r)
        self._fh = None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.jsonl_path, "ab", buffering=0)  # noqa: SIM115 - kept open for the run

    @property
    def jsonl_path(self) -> Path:
        assert self.dir is not None
        return self.dir / f"{self.run_id}.jsonl"

    @property
    def csv_path(self) -> Path:
        assert self.dir is not None
        return self.dir / f"{self.run_id}.csv"

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
            started=utc_now(),
            t0=time.monotonic(),
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
        if self._fh is None:
            return
        with self._lock:
            self._seq += 1
            row["seq"] = self._seq
            line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
            for secret in self._redact:
                line = line.replace(secret.encode(), b"***")
            self._fh.write(line)

    def close(self) -> None:
        """Close the JSONL file and export the CSV of the same rows."""
        if self._fh is None:
            return
        with self._lock:
            self._fh.close()
            self._fh = None
        export_csv(self.jsonl_path, self.csv_path)

    def __enter__(self) -> StatsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Rows of one JSONL file; a torn last line (crash mid-write) is skipped."""
    with open(path, "rb") as fh:
        for raw in fh:
            raw = raw.strip()
            if not raw:
                continue
            try:
                yield orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue


def export_csv(jsonl: str | os.PathLike[str], csv_path: str | os.PathLike[str]) -> Path:
    out = Path(csv_path)
    tmp = out.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in read_jsonl(jsonl):
            writer.writerow(_csv_cells(row))
    os.replace(tmp, out)
    return out


def _csv_cells(row: Mapping[str, Any]) -> dict[str, Any]:
    cells = dict(row)
    if cells.get("extra") is not None:
        cells["extra"] = orjson.dumps(cells["extra"]).decode()
    return cells
