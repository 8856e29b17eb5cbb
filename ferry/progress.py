"""Progress: counters fed through a small callback interface, drawn separately.

Work code only calls ``ProgressSink`` methods (downloads) and the ``upload_*`` methods
(uploads); totals may grow as records are resolved. ``Progress`` keeps one ``Flow`` per
direction and, while running, redraws them: on a terminal a one-line bar on stderr
refreshed a few times a second; otherwise one line every ``interval`` seconds, so logs stay
readable. Rates on those lines are current (bytes over the last ``RATE_WINDOW_S`` seconds);
the final lines, one per stage, give the average. ``quiet`` draws nothing at all. No
third-party dependency. ``NullProgress`` does nothing.

What counts as *active*: a transfer in progress. A file moved on its own is one; a batch
of small files fetched one after another by one worker (``batch_started``) is one too,
shown as "1 batch of N files", so with ``--jobs 2`` the count never exceeds 2.

Why one module of about 400 lines: the counters (``Flow``) and the display that feeds and
draws them (``Progress``, ``BulkProgress``) are one piece; split, each half would have
to know the other's fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

RATE_WINDOW_S = 10.0  # the "current" rate: bytes moved over the last this-many seconds
TICK_S = 0.5  # how often rates are sampled (and at most how often lines are drawn)


class ProgressSink(Protocol):
    def add_totals(self, *, records: int = 0, files: int = 0, bytes: int = 0) -> None: ...

    def file_started(self, name: str) -> None: ...

    def batch_started(self, names: Sequence[str]) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def file_finished(self, name: str, *, ok: bool, skipped_bytes: int = 0) -> None: ...

    def record_finished(self, *, ok: bool) -> None: ...


class NullProgress:
    def add_totals(self, *, records: int = 0, files: int = 0, bytes: int = 0) -> None:
        return None

    def file_started(self, name: str) -> None:
        return None

    def batch_started(self, names: Sequence[str]) -> None:
        return None

    def advance(self, nbytes: int) -> None:
        return None

    def file_finished(self, name: str, *, ok: bool, skipped_bytes: int = 0) -> None:
        return None

    def record_finished(self, *, ok: bool) -> None:
        return None


def human_bytes(n: float | None, *, digits: int = 1, missing: str = "-") -> str:
    """``n`` bytes in decimal units (kB = 1000 B), for people: "512 B", "1.5 MB".

    The one byte formatter of the project (progress, plans, ``ferry cache``, stats
    summaries). ``digits``: decimals above bytes (the stats summary shows 2); ``missing``:
    what an unknown size (None) shows as.
    """
    if n is None:
        return missing
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.{digits}f} {unit}"
        n /= 1000
    return f"{n:.{digits}f} TB"


def human_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


@dataclass
class Flow:
    """Files and bytes of one direction (download or upload), and what is moving now."""

    name: str
    files_total: int = 0
    files_done: int = 0
    files_failed: int = 0
    files_skipped: int = 0  # already there (verified on disk, or on the target)
    bytes_total: int = 0
    bytes_done: int = 0  # includes bytes found already there
    bytes_moved: int = 0  # bytes actually transferred in this run
    active: dict[str, None] = field(default_factory=dict)  # files moved one by one (ordered set)
    batches: dict[int, set[str]] = field(default_factory=dict)  # batch id -> its files not yet finished
    batch_of: dict[str, int] = field(default_factory=dict)
    first_s: float | None = None  # monotonic time of the first transfer
    last_s: float | None = None  # ... and of the last byte or finish
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    _next_batch: int = 0

    # --- events ---
    def started(self, name: str) -> None:
        self._leave_batch(name)  # a batch file retried on its own is its own transfer now
        self.active[name] = None
        self._touch()

    def _leave_batch(self, name: str) -> None:
        batch = self.batch_of.pop(name, None)
        if batch is not None:
            members = self.batches.get(batch, set())
            members.discard(name)
            if not members:
                self.batches.pop(batch, None)

    def batch(self, names: Sequence[str]) -> None:
        if not names:
            return
        self._next_batch += 1
        self.batches[self._next_batch] = set(names)
        for name in names:
            self.batch_of[name] = self._next_batch
        self._touch()

    def moved(self, nbytes: int) -> None:
        self.bytes_done += nbytes
        self.bytes_moved += nbytes
        self._touch()

    def finished(self, name: str, *, ok: bool, skipped_bytes: int = 0) -> None:
        self.active.pop(name, None)
        self._leave_batch(name)
        self.files_done += 1
        self.bytes_done += skipped_bytes
        self.files_failed += not ok
        self.files_skipped += bool(ok and skipped_bytes)
        if not skipped_bytes:
            self._touch()

    def _touch(self) -> None:
        now = time.monotonic()
        self.first_s = now if self.first_s is None else self.first_s
        self.last_s = now

    # --- numbers ---
    @property
    def transfers(self) -> int:
        """Transfers in progress: single files plus batches (each batch moves one file at a time)."""
        return len(self.active) + len(self.batches)

    def sample(self, now: float) -> None:
        self.samples.append((now, self.bytes_moved))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW_S:
            self.samples.popleft()

    def current_rate(self, now: float) -> float:
        """Bytes/s over the last ``RATE_WINDOW_S`` s (the average until a window has passed)."""
        if len(self.samples) >= 2:
            (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
            if t1 - t0 >= min(RATE_WINDOW_S, 1.0):
                return (b1 - b0) / (t1 - t0)
        return self.average_rate(now)

    def elapsed(self, now: float | None = None) -> float:
        if self.first_s is None:
            return 0.0
        end = self.last_s if now is None else now
        return max((end or self.first_s) - self.first_s, 0.0)

    def average_rate(self, now: float | None = None) -> float:
        seconds = self.elapsed(now)
        return self.bytes_moved / seconds if seconds > 0 else 0.0

    @property
    def seen(self) -> bool:
        return bool(self.files_total or self.files_done or self.transfers)

    # --- text ---
    def text(self, now: float, name: str | None = None) -> str:
        failed = f" ({self.files_failed} failed)" if self.files_failed else ""
        return (
            f"{name or self.name} {self.files_done}/{self.files_total}{'' if name == 'files' else ' files'}{failed} "
            f"{human_bytes(self.bytes_done)}/{human_bytes(self.bytes_total)} {human_bytes(self.current_rate(now))}/s"
        )

    def active_text(self, name: str | None = None) -> str:
        if not self.transfers:
            return ""
        parts = []
        if self.active:
            parts.append(f"{len(self.active)} file" + ("s" if len(self.active) != 1 else ""))
        if self.batches:
            files = sum(len(m) for m in self.batches.values())
            parts.append(f"{len(self.batches)} batch" + ("es" if len(self.batches) != 1 else "") + f" of {files} files")
        first = next(iter(self.active), None)
        shown = f": {first}" + (" ..." if self.transfers > 1 else "") if first else ""
        kinds = f" ({', '.join(parts)})" if self.batches else ""  # "(1 file, 2 batches of 30 files)"
        return f"{self.name if name is None else name} {self.transfers} active{kinds}{shown}".lstrip()

    def final(self) -> str:
        """The stage's last line: what moved, in how long, at what average rate."""
        ok = self.files_done - self.files_failed - self.files_skipped
        counts = [f"{ok} moved"]
        if self.files_skipped:
            counts.append(f"{self.files_skipped} already there")
        if self.files_failed:
            counts.append(f"{self.files_failed} failed")
        seconds = self.elapsed()
        average = f", average {human_bytes(self.average_rate())}/s" if self.bytes_moved and seconds > 0 else ""
        return (
            f"{self.name}: {self.files_done} file(s) ({', '.join(counts)}), "
            f"{human_bytes(self.bytes_moved)} transferred in {human_duration(seconds)}{average}"
        )


@dataclass
class Records:
    total: int = 0
    done: int = 0
    failed: int = 0


class Progress:
    """Counters plus a renderer. ``async with progress:`` draws until the block ends.

    ``mode``: ``auto`` (bar on a terminal, else a line every ``interval`` s), ``bar``
    (the bar even when the stream is not a terminal: ``-P``), ``lines``, ``quiet``
    (nothing). ``records_by_caller``: records are counted by the command
    (``add_records``/``record_done``) rather than by the downloader (upload, bulk: a
    record is done when its upload is verified, not when its download is).
    """

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 10.0,
        label: str = "download",
        mode: str = "auto",
        records_by_caller: bool = False,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            is_tty = self.stream.isatty() if tty is None else tty
            mode = "bar" if is_tty else "lines"
        if mode not in ("bar", "lines", "quiet"):
            raise ValueError(f"progress mode {mode!r}")
        self.mode = mode
        self.tty = mode == "bar"
        self.interval = 0.2 if self.tty else interval
        self.label = label
        self.records_by_caller = records_by_caller
        self.records = Records()
        self.down = Flow("down" if records_by_caller else label)
        self.up = Flow("up")
        self._t0 = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    # --- ProgressSink (downloads) ---
    def add_totals(self, *, records: int = 0, files: int = 0, bytes: int = 0) -> None:
        if not self.records_by_caller:
            self.records.total += records
        self.down.files_total += files
        self.down.bytes_total += bytes

    def file_started(self, name: str) -> None:
        self.down.started(name)

    def batch_started(self, names: Sequence[str]) -> None:
        self.down.batch(names)

    def advance(self, nbytes: int) -> None:
        self.down.moved(nbytes)

    def file_finished(self, name: str, *, ok: bool, skipped_bytes: int = 0) -> None:
        self.down.finished(name, ok=ok, skipped_bytes=skipped_bytes)

    def record_finished(self, *, ok: bool) -> None:
        if not self.records_by_caller:
            self._record(ok)

    # --- records, from the command ---
    def add_records(self, count: int) -> None:
        self.records.total += count

    def record_done(self, *, ok: bool) -> None:
        self._record(ok)

    def _record(self, ok: bool) -> None:
        self.records.done += 1
        self.records.failed += not ok

    # --- uploads (pipeline.context.UploadProgress) ---
    def upload_totals(self, *, files: int, bytes: int) -> None:
        self.up.files_total += files
        self.up.bytes_total += bytes

    def upload_started(self, name: str) -> None:
        self.up.started(name)

    def upload_advance(self, nbytes: int) -> None:
        self.up.moved(nbytes)

    def upload_finished(self, name: str, *, ok: bool, skipped_bytes: int = 0) -> None:
        self.up.finished(name, ok=ok, skipped_bytes=skipped_bytes)

    # --- rendering ---
    def _flows(self) -> list[Flow]:
        shown = [f for f in (self.down, self.up) if f.seen]
        return shown or [self.down]

    def line(self) -> str:
        now = time.monotonic()
        r = self.records
        failed = f" ({r.failed} failed)" if r.failed else ""
        flows = self._flows()
        # One direction only (``ferry download``): the label names it already.
        names = ["files" if len(flows) == 1 and f is self.down and not self.records_by_caller else None for f in flows]
        parts = [f"{self.label}: records {r.done}/{r.total}{failed}"]
        parts += [f.text(now, name) for f, name in zip(flows, names, strict=True)]
        parts += [t for t in (f.active_text("" if n else None) for f, n in zip(flows, names, strict=True)) if t]
        return " | ".join(parts)

    def fraction(self) -> float:
        if self.records_by_caller and self.records.total:
            frac = self.records.done / self.records.total
        else:
            d = self.down
            if d.bytes_total:
                frac = d.bytes_done / d.bytes_total
            else:
                frac = d.files_done / d.files_total if d.files_total else 0.0
        return min(max(frac, 0.0), 1.0)

    def bar(self) -> str:
        width = shutil.get_terminal_size((100, 20)).columns
        frac = self.fraction()
        full = int(frac * 20)
        text = f"[{'#' * full}{'-' * (20 - full)}] {frac * 100:5.1f}% " + self.line()
        return text[: max(width - 1, 20)]

    def draw(self) -> None:
        if self.mode == "quiet":
            return
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.bar())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def final_lines(self) -> list[str]:
        r = self.records
        lines = [f.final() for f in self._flows() if f.seen]
        if r.total or r.done:
            lines.append(f"records: {r.done} of {r.total} done" + (f", {r.failed} failed" if r.failed else ""))
        return lines

    def finish(self) -> None:
        """The bar's last frame ends with a newline; then one line per stage (average rates)."""
        if self.mode == "quiet":
            return
        if self.tty:
            self.draw()
            self.stream.write("\n")
        for text in self.final_lines():
            self.stream.write(text + "\n")
        self.stream.flush()

    def _sample(self) -> None:
        now = time.monotonic()
        self.down.sample(now)
        self.up.sample(now)

    async def _run(self) -> None:
        next_draw = time.monotonic() + self.interval
        while True:
            await asyncio.sleep(min(TICK_S, self.interval))
            self._sample()
            if time.monotonic() >= next_draw:
                self.draw()
                next_draw += self.interval

    async def __aenter__(self) -> Progress:
        self._t0 = time.monotonic()
        self._sample()
        if self.mode != "quiet":
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.finish()


class BulkProgress(Progress):
    """Progress of a run that uploads (``ferry bulk``, ``ferry upload``): records are the
    headline (a record is done only when its upload is verified: the runner calls
    ``add_records``/``record_done``); downloads and uploads each have their own files,
    bytes and rate."""

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 10.0,
        label: str = "bulk",
        mode: str = "auto",
    ) -> None:
        super().__init__(stream=stream, tty=tty, interval=interval, label=label, mode=mode, records_by_caller=True)


def display_options(args: Any) -> dict[str, Any]:
    """``Progress`` keyword arguments from the common flags (``-P``, ``-q``,
    ``--progress-interval``); a namespace without them gets the defaults."""
    if getattr(args, "quiet", False):
        mode = "quiet"
    elif getattr(args, "progress", False):
        mode = "bar"
    else:
        mode = "auto"
    interval = getattr(args, "progress_interval", None)
    return {"mode": mode, "interval": float(interval) if interval else 10.0}
