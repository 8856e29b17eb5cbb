"""Progress: counters fed through a small callback interface, drawn separately.

Work code only calls ``ProgressSink`` methods (totals may grow as records are resolved);
``Progress`` keeps the counters and, while running, redraws them: on a terminal a one-line
bar on stderr (records, files, bytes, rate, active files) refreshed a few times a second;
otherwise one summary line every ``interval`` seconds, so logs stay readable. No
third-party dependency. ``NullProgress`` does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Protocol, TextIO


class ProgressSink(Protocol):
    def add_totals(self, *, records: int = 0, files: int = 0, bytes: int = 0) -> None: ...

    def file_started(self, name: str) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def file_finished(self, name: str, *, ok: bool, skipped_bytes: int = 0) -> None: ...

    def record_finished(self, *, ok: bool) -> None: ...


class NullProgress:
    def add_totals(self, *, records: int = 0, files: int = 0, bytes: int = 0) -> None:
        return None

    def file_started(self, name: str) -> None:
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


@dataclass
class Counters:
    records_total: int = 0
    records_done: int = 0
    records_failed: int = 0
    files_total: int = 0
    files_done: int = 0
    files_failed: int = 0
    bytes_total: int = 0
    bytes_done: int = 0  # includes bytes found already verified on disk
    bytes_moved: int = 0  # bytes actually transferred in this run
    active: dict[str, None] = field(default_factory=dict)  # insertion-ordered set


class Progress:
    """Counters plus a renderer. ``async with progress:`` draws until the block ends."""

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 10.0,
        label: str = "download",
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = 0.2 if self.tty else interval
        self.label = label
        self.c = Counters()
        self._t0 = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._drawn = False

    # --- ProgressSink ---
    def add_totals(self, *, records: int = 0, files: int = 0, bytes: int = 0) -> None:
        self.c.records_total += records
        self.c.files_total += files
        self.c.bytes_total += bytes

    def file_started(self, name: str) -> None:
        self.c.active[name] = None

    def advance(self, nbytes: int) -> None:
        self.c.bytes_done += nbytes
        self.c.bytes_moved += nbytes

    def file_finished(self, name: str, *, ok: bool, skipped_bytes: int = 0) -> None:
        self.c.active.pop(name, None)
        self.c.files_done += 1
        self.c.bytes_done += skipped_bytes
        if not ok:
            self.c.files_failed += 1

    def record_finished(self, *, ok: bool) -> None:
        self.c.records_done += 1
        if not ok:
            self.c.records_failed += 1

    # --- rendering ---
    def line(self) -> str:
        c = self.c
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        rate = c.bytes_moved / elapsed
        failed = f", {c.files_failed} failed" if c.files_failed else ""
        text = (
            f"{self.label}: records {c.records_done}/{c.records_total}, files {c.files_done}/{c.files_total}{failed}, "
            f"{human_bytes(c.bytes_done)}/{human_bytes(c.bytes_total)}, {human_bytes(rate)}/s"
        )
        if c.active:
            names = list(c.active)
            text += f", {len(names)} active: {names[0]}" + (" ..." if len(names) > 1 else "")
        return text

    def bar(self) -> str:
        width = shutil.get_terminal_size((100, 20)).columns
        c = self.c
        frac = c.bytes_done / c.bytes_total if c.bytes_total else (c.files_done / c.files_total if c.files_total else 0)
        frac = min(max(frac, 0.0), 1.0)
        cells = 20
        full = int(frac * cells)
        bar = "#" * full + "-" * (cells - full)
        text = f"[{bar}] {frac * 100:5.1f}% " + self.line()
        return text[: max(width - 1, 20)]

    def draw(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.bar())
            self._drawn = True
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Final state: the bar's last frame ends with a newline; non-TTY prints a last line."""
        if self.tty:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
        elif time.monotonic() - self._t0 >= self.interval:
            self.draw()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.draw()

    async def __aenter__(self) -> Progress:
        self._t0 = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.finish()


@dataclass
class Flow:
    """Files and bytes of one direction (download or upload)."""

    files_total: int = 0
    files_done: int = 0
    files_failed: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_moved: int = 0
    active: dict[str, None] = field(default_factory=dict)

    def text(self, name: str, elapsed: float) -> str:
        failed = f" ({self.files_failed} failed)" if self.files_failed else ""
        rate = human_bytes(self.bytes_moved / elapsed)
        return (
            f"{name} {self.files_done}/{self.files_total} files{failed} "
            f"{human_bytes(self.bytes_done)}/{human_bytes(self.bytes_total)} {rate}/s"
        )


class BulkProgress(Progress):
    """Progress of a bulk run: records are the headline; downloads and uploads each have
    their own files, bytes and rate (a record is done only when its upload is verified).

    The downloader feeds it through the ``ProgressSink`` methods it already calls (its
    record counts are ignored: a bulk record is finished when the runner says so, after
    its upload is verified); the runner calls ``add_records``/``record_done``; the pipeline
    feeds uploads through the ``upload_*`` methods.
    """

    def __init__(self, *, stream: TextIO | None = None, tty: bool | None = None, interval: float = 10.0) -> None:
        super().__init__(stream=stream, tty=tty, interval=interval, label="bulk")
        self.down = Flow()
        self.up = Flow()

    # records, from the runner
    def add_records(self, count: int) -> None:
        self.c.records_total += count

    def record_done(self, *, ok: bool) -> None:
        Progress.record_finished(self, ok=ok)

    # downloads (ProgressSink)
    def add_totals(self, *, records: int = 0, files: int = 0, bytes: int = 0) -> None:
        self.down.files_total += files
        self.down.bytes_total += bytes

    def record_finished(self, *, ok: bool) -> None:
        return None  # the downloader's view of a record; see record_done

    def file_started(self, name: str) -> None:
        self.down.active[name] = None

    def advance(self, nbytes: int) -> None:
        self.down.bytes_done += nbytes
        self.down.bytes_moved += nbytes

    def file_finished(self, name: str, *, ok: bool, skipped_bytes: int = 0) -> None:
        self.down.active.pop(name, None)
        self.down.files_done += 1
        self.down.bytes_done += skipped_bytes
        self.down.files_failed += not ok

    # uploads
    def upload_totals(self, *, files: int, bytes: int) -> None:
        self.up.files_total += files
        self.up.bytes_total += bytes

    def upload_started(self, name: str) -> None:
        self.up.active[name] = None

    def upload_advance(self, nbytes: int) -> None:
        self.up.bytes_done += nbytes
        self.up.bytes_moved += nbytes

    def upload_finished(self, name: str, *, ok: bool, skipped_bytes: int = 0) -> None:
        self.up.active.pop(name, None)
        self.up.files_done += 1
        self.up.bytes_done += skipped_bytes
        self.up.files_failed += not ok

    def line(self) -> str:
        c = self.c
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        failed = f" ({c.records_failed} failed)" if c.records_failed else ""
        text = (
            f"records {c.records_done}/{c.records_total}{failed} | "
            f"{self.down.text('down', elapsed)} | {self.up.text('up', elapsed)}"
        )
        active = [*(f"down {n}" for n in self.down.active), *(f"up {n}" for n in self.up.active)]
        if active:
            text += f" | {len(active)} active: {active[0]}" + (" ..." if len(active) > 1 else "")
        return text

    def bar(self) -> str:
        width = shutil.get_terminal_size((100, 20)).columns
        c = self.c
        frac = c.records_done / c.records_total if c.records_total else 0.0
        full = int(min(max(frac, 0.0), 1.0) * 20)
        text = f"[{'#' * full}{'-' * (20 - full)}] {frac * 100:5.1f}% " + self.line()
        return text[: max(width - 1, 20)]
