"""A simulated bulk run written through ``StatsWriter``: realistic stats without servers.

The tests, the notebooks' smoke runs and figure previews need stats that look like a real
bulk run (overlapping downloads and uploads under concurrency limits, zips, retries,
failures in every stage, an interrupted tail) with outcomes known in advance. Rows go
through the real writer with a simulated clock, so they have exactly the real schema.

Scheduling is a lane model: each stage has N lanes (its concurrency limit); a piece of
work starts on the lane that frees first, no earlier than the moment it is ready.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ferry.core.errors import (
    FerryError,
    NoFilesError,
    SourceFileMissing,
    TransferFailed,
    ValidationError,
    VerificationError,
)
from stats.events import Event, StatsWriter

Outcome = Literal[
    "ok",
    "download-failed",
    "zip-failed",
    "upload-failed",
    "verify-failed",
    "publish-failed",
    "no-files",
    "already-done",
    "interrupted",
]

# File sizes cycled through by position: from a 1.5 MB histogram file to a 730 MB DST.
SIZES = (1_500_000, 42_000_000, 310_000_000, 8_200_000, 125_000_000, 2_100_000, 730_000_000, 16_000_000)
ZIP_THRESHOLD = 5  # records with more files than this are zipped before upload
DEFAULT_START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class SynthRecord:
    recid: str
    sizes: tuple[int, ...]
    outcome: Outcome = "ok"

    @property
    def zipped(self) -> bool:
        return len(self.sizes) > ZIP_THRESHOLD


# Which position of ``synthetic_records`` gets which failure; the last two are interrupted.
SPECIAL: dict[int, Outcome] = {
    3: "download-failed",
    10: "zip-failed",
    11: "upload-failed",
    15: "publish-failed",
    19: "no-files",
    22: "already-done",
    23: "already-done",
    26: "verify-failed",
}


def synthetic_records(n: int = 30, *, first_recid: int = 80000, interrupted: int = 2) -> list[SynthRecord]:
    """``n`` records with 1-9 files each; failures at the ``SPECIAL`` positions and the
    last ``interrupted`` records cut off by a crash. With n=30: 20 ok, 6 failed,
    2 skipped (already done), 2 interrupted."""
    out = []
    for i in range(n):
        outcome: Outcome = "interrupted" if i >= n - interrupted else SPECIAL.get(i, "ok")
        count = 0 if outcome == "no-files" else 1 + (i * 7) % 9
        sizes = tuple(SIZES[(i * 3 + j) % len(SIZES)] for j in range(count))
        out.append(SynthRecord(str(first_recid + i), sizes, outcome))
    return out


class Lanes:
    """``n`` parallel workers; ``take`` books the earliest free one."""

    def __init__(self, n: int) -> None:
        self.free = [0.0] * n
        heapq.heapify(self.free)

    def take(self, ready: float, duration: float) -> tuple[float, float]:
        start = max(ready, heapq.heappop(self.free))
        heapq.heappush(self.free, start + duration)
        return start, start + duration


class _Sim:
    """Collects opens and closes at simulated times, then replays them in time order."""

    def __init__(self, writer_factory: Callable[[Callable[[], float]], StatsWriter], t0: float) -> None:
        self.now = t0
        self.writer = writer_factory(lambda: self.now)
        self.actions: list[tuple[float, int, Callable[[], None]]] = []
        self.events: dict[str, Event] = {}

    def at(self, t: float, action: Callable[[], None]) -> None:
        self.actions.append((t, len(self.actions), action))

    def span(
        self,
        key: str,
        stage: str,
        recid: str | None,
        file: str | None,
        start: float,
        end: float | None,
        status: str = "ok",
        *,
        error: BaseException | None = None,
        close: dict[str, Any] | None = None,
        **attrs: Any,
    ) -> None:
        """An event from ``start`` to ``end`` (``None``: never closed, as in a crash)."""

        def do_open() -> None:
            self.events[key] = self.writer.open(stage, recid, file, **attrs)

        def do_close() -> None:
            self.events[key].close(status, error=error, **(close or {}))  # type: ignore[arg-type]

        self.at(start, do_open)
        if end is not None:
            self.at(end, do_close)

    def point(self, t: float, stage: str, status: str, recid: str | None, file: str | None, **attrs: Any) -> None:
        self.at(t, lambda: self.writer.record(stage, status, recid, file, **attrs))  # type: ignore[arg-type]

    def replay(self) -> None:
        for t, _, action in sorted(self.actions, key=lambda a: (a[0], a[1])):
            self.now = t
            action()


def _rate(recid: str, j: int, base: float, spread: float) -> float:
    """A deterministic per-file rate in bytes/s (MB/s = base .. base + spread)."""
    return (base + (int(recid) * 31 + j * 17) % int(spread)) * 1e6


def simulate_run(
    stats_dir: str | os.PathLike[str],
    records: Iterable[SynthRecord],
    *,
    run_id: str = "sim-run",
    start: datetime = DEFAULT_START,
    publish: bool = True,
    downloads: int = 4,
    uploads: int = 2,
    summary: bool = True,
) -> Path:
    """Write the stats of a bulk run over ``records``; returns the JSONL path.

    If any record is ``interrupted`` the run ends like a kill -9: those events stay open,
    the run event is never closed, there is no summary row and no CSV export.
    """
    records = list(records)
    crashed = any(r.outcome == "interrupted" for r in records)
    sim = _Sim(
        lambda clock: StatsWriter(stats_dir, run_id, summary=summary and not crashed, clock=clock), start.timestamp()
    )
    t0 = start.timestamp()
    down, zipper, up = Lanes(downloads), Lanes(1), Lanes(uploads)
    ends: list[float] = []
    sim.span("run", "run", None, None, t0, None, selected=len(records))
    for i, rec in enumerate(records):
        ends.append(_simulate_record(sim, rec, t0 + 0.05 + i * 0.4, down, zipper, up, publish))
    finish = max([t0 + 1.0, *(e for e in ends if e == e)])
    if not crashed:
        failed = any(r.outcome not in ("ok", "already-done") for r in records)
        sim.at(finish + 0.01, lambda: sim.events["run"].close("failed" if failed else "ok"))
    sim.replay()
    sim.now = finish + 0.02
    sim.writer.close()
    if crashed:
        sim.writer.csv_path.unlink(missing_ok=True)  # a killed run never exported its CSV
    return sim.writer.jsonl_path


def _simulate_record(
    sim: _Sim, rec: SynthRecord, ready: float, down: Lanes, zipper: Lanes, up: Lanes, publish: bool
) -> float:
    """Schedule one record's events; returns when it ended (NaN if it never did)."""
    r, n = rec.recid, len(rec.sizes)
    files = [f"file_{j:02d}.root" for j in range(n)]
    sim.span(f"{r}/record", "record", r, None, ready, None)  # closed below, once the end is known

    def finish(t: float, status: str, error: BaseException | None = None, **close: Any) -> float:
        sim.at(t, lambda: sim.events[f"{r}/record"].close(status, error=error, **close))  # type: ignore[arg-type]
        return t

    t = ready + 0.05 + (int(r) % 5) * 0.01
    sim.span(f"{r}/resolve", "resolve", r, None, ready, t, file_count=n, transfer="api", close={"bytes": 0})
    if rec.outcome == "already-done":
        sim.point(t, "upload", "skipped", r, None, reason="already published on the target")
        return finish(t + 0.01, "skipped", reason="already published on the target", file_count=n)
    if rec.outcome == "no-files":
        return finish(t, "failed", NoFilesError("lists no files", recid=r), file_count=0)

    # Downloads: every file on the download lanes; one fails after three attempts.
    last = t
    for j, (name, size) in enumerate(zip(files, rec.sizes, strict=True)):
        duration = 0.05 + size / _rate(r, j, 60, 80)
        if rec.outcome == "interrupted":
            if j == 0:
                begin, _ = down.take(t, 1e9)  # holds its worker until the crash
                sim.span(f"{r}/d{j}", "download", r, name, begin, None, bytes=size, transfer="xrootd")
            continue
        begin, end = down.take(t, duration)
        fail = rec.outcome == "download-failed" and j == 0
        sim.span(
            f"{r}/d{j}",
            "download",
            r,
            name,
            begin,
            end,
            "failed" if fail else "ok",
            error=SourceFileMissing("no such file on the XRootD server", recid=r, file=name) if fail else None,
            bytes=size,
            transfer="xrootd",
            close={"attempts": 3 if fail else 1, "bytes": 0 if fail else size},
        )
        last = max(last, end)
    if rec.outcome == "interrupted":
        return float("nan")
    if rec.outcome == "download-failed":
        missing = SourceFileMissing("no such file on the XRootD server", recid=r, file=files[0])
        return finish(last, "failed", missing, file_count=n)

    # Zip: only records with many files; the others get a one-shot "skipped" decision.
    total = sum(rec.sizes)
    upload_files = list(zip(files, rec.sizes, strict=True))
    if rec.zipped:
        begin, end = zipper.take(last, 0.1 + total / 400e6)
        fail = rec.outcome == "zip-failed"
        sim.span(
            f"{r}/zip",
            "zip",
            r,
            f"{r}.zip",
            begin,
            end,
            "failed" if fail else "ok",
            error=OSError(28, "No space left on device") if fail else None,
            bytes=total,
            file_count=n,
            close={"bytes": 0 if fail else total},
        )
        if fail:
            return finish(end, "failed", OSError(28, "No space left on device"), file_count=n, zip_used=True)
        last = end
        upload_files = [(f"{r}.zip", total)]
    else:
        sim.point(last, "zip", "skipped", r, None, reason=f"{n} files <= threshold {ZIP_THRESHOLD}", file_count=n)

    t = last + 0.03
    sim.span(f"{r}/transform", "transform", r, None, last, t)
    last = t
    for j, (name, size) in enumerate(upload_files):
        duration = 0.1 + size / _rate(r, j, 30, 40)
        begin, end = up.take(last if j == 0 else t, duration)
        fail = rec.outcome == "upload-failed" and j == len(upload_files) - 1
        retried = (int(r) + j) % 7 == 0
        sim.span(
            f"{r}/u{j}",
            "upload",
            r,
            name,
            begin,
            end,
            "failed" if fail else "ok",
            error=TransferFailed("HTTP 502 from the target", status=502, recid=r, file=name) if fail else None,
            bytes=size,
            transfer="multipart" if size > 100_000_000 else "single",
            close={"attempts": 3 if fail else (2 if retried else 1), "bytes": 0 if fail else size},
        )
        last = max(last, end)
    err: FerryError | None
    if rec.outcome == "upload-failed":
        err = TransferFailed("HTTP 502 from the target", status=502, recid=r, file=upload_files[-1][0])
        return finish(last, "failed", err, file_count=n, zip_used=rec.zipped)

    t = last + 0.1
    fail = rec.outcome == "verify-failed"
    err = VerificationError("md5 on the target differs", recid=r, file=upload_files[0][0]) if fail else None
    sim.span(f"{r}/verify", "verify", r, None, last, t, "failed" if fail else "ok", error=err)
    if fail:
        return finish(t, "failed", err, file_count=n, zip_used=rec.zipped)
    last = t
    if publish:
        t = last + 0.4
        fail = rec.outcome == "publish-failed"
        err = (
            ValidationError("metadata rejected", errors={"metadata.creators": ["required"]}, recid=r) if fail else None
        )
        sim.span(f"{r}/publish", "publish", r, None, last, t, "failed" if fail else "ok", error=err)
        if fail:
            return finish(t, "failed", err, file_count=n, zip_used=rec.zipped)
        last = t
    return finish(last, "ok", file_count=n, zip_used=rec.zipped, bytes=sum(s for _, s in upload_files))
