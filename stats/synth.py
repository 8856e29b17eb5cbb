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

    @property
    def target_files(self) -> tuple[tuple[str, int], ...]:
        """What goes on the target: the files, or the zip bundle and its manifest (as
        upload/zip/state.py's ``upload_keys``)."""
        if not self.zipped:
            return tuple((f"file_{j:02d}.root", size) for j, size in enumerate(self.sizes))
        return (
            (f"{self.recid}.zip", sum(self.sizes)),
            (f"{self.recid}_bundle_manifest.json", 200 + 120 * len(self.sizes)),
        )


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
    record = _RecordSim(sim, rec, down, zipper, up)
    record.open(ready)
    phases = [record.resolve, record.download, record.zip, record.upload, record.verify]
    if publish:
        phases.append(record.publish)
    for phase in phases:
        ended = phase()
        if ended is not None:
            return ended
    return record.succeed()


class _RecordSim:
    """One record's events, phase by phase. Each phase schedules its events and returns
    when the record ended there (it failed, was skipped or cut off), or ``None`` if the
    record goes on to the next phase from ``self.last``."""

    def __init__(self, sim: _Sim, rec: SynthRecord, down: Lanes, zipper: Lanes, up: Lanes) -> None:
        self.sim, self.rec, self.down, self.zipper, self.up = sim, rec, down, zipper, up
        self.r, self.n = rec.recid, len(rec.sizes)
        self.files = [f"file_{j:02d}.root" for j in range(self.n)]
        self.upload_files = list(zip(self.files, rec.sizes, strict=True))
        # extra.uploaded_files of the record event, as pipeline/context.py's RecordResult.event_files:
        # 0 until the files to put are known (after the zip stage), then how many they are.
        self.uploaded = 0
        self.ready = self.last = 0.0

    def open(self, ready: float) -> None:
        self.ready = ready
        self.sim.span(f"{self.r}/record", "record", self.r, None, ready, None)  # closed by finish

    def finish(self, t: float, status: str, error: BaseException | None = None, **close: Any) -> float:
        close.setdefault("uploaded_files", self.uploaded)
        self.sim.at(t, lambda: self.sim.events[f"{self.r}/record"].close(status, error=error, **close))  # type: ignore[arg-type]
        return t

    def fail(self, t: float, error: BaseException, **close: Any) -> float:
        return self.finish(t, "failed", error, file_count=self.n, **close)

    def succeed(self) -> float:
        size = sum(s for _, s in self.upload_files)
        return self.finish(self.last, "ok", file_count=self.n, zip_used=self.rec.zipped, bytes=size)

    def resolve(self) -> float | None:
        r, n = self.r, self.n
        t = self.ready + 0.05 + (int(r) % 5) * 0.01
        self.sim.span(
            f"{r}/resolve", "resolve", r, None, self.ready, t, file_count=n, transfer="api", close={"bytes": 0}
        )
        if self.rec.outcome == "already-done":
            self.sim.point(t, "upload", "skipped", r, None, reason="already published on the target")
            # found published with its files: those on the target are counted (pipeline/job.py)
            held = len(self.rec.target_files)
            return self.finish(
                t + 0.01, "skipped", reason="already published on the target", file_count=n, uploaded_files=held
            )
        if self.rec.outcome == "no-files":
            return self.finish(t, "failed", NoFilesError("lists no files", recid=r), file_count=0)
        self.last = t
        return None

    def download(self) -> float | None:
        """Every file on the download lanes; one fails after three attempts."""
        r, t, outcome = self.r, self.last, self.rec.outcome
        for j, (name, size) in enumerate(zip(self.files, self.rec.sizes, strict=True)):
            if outcome == "interrupted":
                if j == 0:
                    begin, _ = self.down.take(t, 1e9)  # holds its worker until the crash
                    self.sim.span(f"{r}/d{j}", "download", r, name, begin, None, bytes=size, transfer="xrootd")
                continue
            begin, end = self.down.take(t, 0.05 + size / _rate(r, j, 60, 80))
            fail = outcome == "download-failed" and j == 0
            self.sim.span(
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
            self.last = max(self.last, end)
        if outcome == "interrupted":
            return float("nan")
        if outcome == "download-failed":
            return self.fail(
                self.last, SourceFileMissing("no such file on the XRootD server", recid=r, file=self.files[0])
            )
        return None

    def zip(self) -> float | None:
        """Only records with many files; the others get a one-shot "skipped" decision."""
        r, n = self.r, self.n
        if not self.rec.zipped:
            reason = f"{n} files <= threshold {ZIP_THRESHOLD}"
            self.sim.point(self.last, "zip", "skipped", r, None, reason=reason, file_count=n)
            return None
        total = sum(self.rec.sizes)
        begin, end = self.zipper.take(self.last, 0.1 + total / 400e6)
        fail = self.rec.outcome == "zip-failed"
        self.sim.span(
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
            return self.fail(end, OSError(28, "No space left on device"), zip_used=True)
        self.last = end
        self.upload_files = list(self.rec.target_files)
        return None

    def upload(self) -> float | None:
        """The metadata transform, then every file (or the bundle and its manifest) on the upload lanes."""
        r = self.r
        t = self.last + 0.03
        self.uploaded = len(self.upload_files)
        self.sim.span(f"{r}/transform", "transform", r, None, self.last, t)
        self.last = t
        for j, (name, size) in enumerate(self.upload_files):
            begin, end = self.up.take(self.last if j == 0 else t, 0.1 + size / _rate(r, j, 30, 40))
            fail = self.rec.outcome == "upload-failed" and j == len(self.upload_files) - 1
            retried = (int(r) + j) % 7 == 0
            self.sim.span(
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
            self.last = max(self.last, end)
        if self.rec.outcome == "upload-failed":
            err = TransferFailed("HTTP 502 from the target", status=502, recid=r, file=self.upload_files[-1][0])
            return self.fail(self.last, err, zip_used=self.rec.zipped)
        return None

    def verify(self) -> float | None:
        err = None
        if self.rec.outcome == "verify-failed":
            err = VerificationError("md5 on the target differs", recid=self.r, file=self.upload_files[0][0])
        return self._checkpoint("verify", 0.1, err)

    def publish(self) -> float | None:
        err = None
        if self.rec.outcome == "publish-failed":
            err = ValidationError("metadata rejected", errors={"metadata.creators": ["required"]}, recid=self.r)
        return self._checkpoint("publish", 0.4, err)

    def _checkpoint(self, stage: str, duration: float, err: FerryError | None) -> float | None:
        """A record-level stage that takes ``duration`` and fails with ``err`` if given."""
        t = self.last + duration
        self.sim.span(f"{self.r}/{stage}", stage, self.r, None, self.last, t, "failed" if err else "ok", error=err)
        if err is not None:
            return self.fail(t, err, zip_used=self.rec.zipped)
        self.last = t
        return None
