"""The bulk runner: many records through the pipeline at once, bounded, resumable.

Records are started in the chosen order (priority by default) and flow through the
per-record pipeline concurrently: at most ``records_in_flight`` at once, each stage
bounded by the shared context (downloads, zip workers, uploads, bytes in flight, the
target's request rate), and never more than the staging budget downloaded ahead of the
uploads (with ``--stream`` nothing is staged, so that budget does not apply: a streamed
record holds only bytes in flight, bounded per file). The ledger records progress; the
target is the truth, so a re-run after kill -9 asks it before writing and finishes what
was left.

Stopping: the first SIGINT/SIGTERM stops starting records and lets those in flight
finish (or cancels them at once when the target is unavailable: they could only wait);
the second cancels them (the ledger stays consistent: every write is a transaction, and a
cancelled record is simply not finished). A run also has a bound: ``deadline`` seconds, or
``limits.breaker_trips`` circuit-breaker openings in a row (a target that stays down);
then it stops the same way and names every unfinished record (``BulkReport.stopped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from download.sources import staging_name
from download.sources.cache import OrderDecision
from ferry.core.errors import DiskFull, FerryError, is_disk_full
from ferry.core.model import Record
from ferry.core.retry import RetryPolicy
from pipeline.context import PipelineContext, RecordResult
from pipeline.job import RecordJob
from pipeline.limits import ByteBudget
from stats.events import Event, Status

log = logging.getLogger(__name__)

Resolve = Callable[[str], Awaitable[Record]]
DISK_FULL = "disk full"
OnResult = Callable[[RecordResult], None]


@dataclass
class BulkReport:
    results: dict[str, RecordResult] = field(default_factory=dict)
    not_started: list[str] = field(default_factory=list)  # stopped before their turn
    unfinished: list[str] = field(default_factory=list)  # started, cancelled by a stop
    interrupted: bool = False  # by a signal
    stopped: str | None = None  # why the run stopped early by itself (deadline, target down)
    # recid -> its folder under DEST (download.sources.staging_name), once resolved:
    # zenodo:123 is staged in DEST/zenodo-123, not DEST/123 (a CERN record's folder).
    staging: dict[str, str] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results.values() if r.status == status)

    @property
    def ok(self) -> bool:
        return (
            not self.interrupted
            and self.stopped is None
            and not self.not_started
            and not self.unfinished
            and all(r.status in ("ok", "skipped", "dry-run") for r in self.results.values())
        )

    def failure_lines(self) -> list[str]:
        return [line for r in self.results.values() for line in r.lines()]


class StopSignal:
    """First signal: stop starting work. Second: cancel what runs."""

    def __init__(self, cancel_now: Callable[[], bool] | None = None) -> None:
        self.stopping = asyncio.Event()
        self.count = 0
        self._tasks: set[asyncio.Task[object]] = set()
        # Asked at the first signal: True cancels at once (records paused on a target that
        # is down would otherwise hold the run for minutes).
        self.cancel_now = cancel_now

    def track(self, task: asyncio.Task[object]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def trigger(self) -> None:
        self.count += 1
        self.stopping.set()
        if self.count == 1 and not (self.cancel_now is not None and self.cancel_now()):
            log.warning("stopping: no new records will start; finishing the ones in flight (signal again to cancel)")
        else:
            log.warning("cancelling the records in flight")
            self.cancel_all()

    def cancel_all(self) -> None:
        self.stopping.set()
        for task in list(self._tasks):
            task.cancel()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.trigger)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)


class BulkRunner:
    def __init__(
        self,
        ctx: PipelineContext,
        resolve: Resolve,
        *,
        staging: ByteBudget | None = None,
        record_retries: int = 2,
        on_result: OnResult | None = None,
        stop: StopSignal | None = None,
        deadline: float | None = None,
    ) -> None:
        self.ctx = ctx
        self.resolve = resolve
        self.staging = staging or ByteBudget(ctx.limits.staging_bytes)
        self.record_retries = record_retries
        self.on_result = on_result
        breaker = ctx.breaker
        self.stop = stop or StopSignal(cancel_now=lambda: breaker is not None and breaker.state != "closed")
        self.in_flight = asyncio.Semaphore(ctx.limits.records_in_flight)
        self.deadline = deadline
        self.stopped: str | None = None
        if breaker is not None:
            breaker.cool_down_s = ctx.limits.breaker_cool_down
            breaker.add_listener(self._breaker_changed)

    def _breaker_changed(self, old: str, new: str) -> None:
        breaker, limit = self.ctx.breaker, self.ctx.limits.breaker_trips
        if new == "open" and breaker is not None and breaker.trips_in_a_row >= limit:
            self._give_up(f"the target stayed unavailable (circuit breaker opened {limit} times in a row)")

    def _give_up(self, reason: str) -> None:
        """Stop by itself: start nothing more, cancel what runs (it is resumable)."""
        if self.stopped is None:
            self.stopped = reason
            log.warning("stopping the run: %s", reason)
        self.stop.cancel_all()

    async def run(self, order: Sequence[OrderDecision]) -> BulkReport:
        report = BulkReport()
        run_event = await self._open_run(len(order))
        timer = None
        if self.deadline is not None:
            timer = asyncio.get_running_loop().call_later(
                self.deadline, self._give_up, f"the deadline ({self.deadline:g} s) was reached"
            )
        try:
            with self.stop.installed():
                tasks = await self._start_records(order, report)
                done = await asyncio.gather(*tasks, return_exceptions=True)
                for outcome in done:
                    if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                        raise outcome
        finally:
            if timer is not None:
                timer.cancel()
            await self._close_run(report, run_event)
        return report

    async def _open_run(self, selected: int) -> Event:
        ctx = self.ctx
        run_event = ctx.stats.open("run", None, file_count=selected, reason=f"{selected} record(s) selected")
        if ctx.ledger is not None and ctx.run_id is not None and not ctx.dry_run:
            await ctx.ledger.run(ctx.ledger.start_run, ctx.run_id, command="bulk")
        return run_event

    async def _start_records(self, order: Sequence[OrderDecision], report: BulkReport) -> list[asyncio.Task[object]]:
        """Start each record in order once it is admitted; after a stop request, none."""
        tasks: list[asyncio.Task[object]] = []
        for decision in order:
            if self.stop.stopping.is_set():
                report.not_started.append(decision.recid)
                continue
            # Admission: wait for a slot, or for a stop request.
            acquired = await self._admit()
            if not acquired:
                report.not_started.append(decision.recid)
                continue
            task: asyncio.Task[object] = asyncio.create_task(self._one(decision, report))
            self.stop.track(task)
            tasks.append(task)
        return tasks

    async def _close_run(self, report: BulkReport, run_event: Event) -> None:
        """The run's end: its summary in the stats and the ledger, however it ended."""
        ctx = self.ctx
        report.interrupted = self.stop.count > 0
        report.stopped = self.stopped
        status: Status = "failed" if not report.ok else ("dry-run" if ctx.dry_run else "ok")
        summary: dict[str, object] = {s: report.count(s) for s in ("ok", "failed", "skipped", "dry-run")}
        summary |= {
            "not_started": len(report.not_started),
            "unfinished": len(report.unfinished),
            "interrupted": report.interrupted,
            "stopped": report.stopped,
        }
        run_event.close(status, reason=_summary_text(summary), summary=summary)
        if ctx.ledger is not None and ctx.run_id is not None and not ctx.dry_run:
            try:
                await ctx.ledger.run(ctx.ledger.end_run, ctx.run_id, status, summary)
            except DiskFull as exc:  # the run row stays 'running': read as interrupted, harmless
                log.warning("could not record the end of the run: %s", exc)

    async def _admit(self) -> bool:
        acquire = asyncio.ensure_future(self.in_flight.acquire())
        stopped = asyncio.ensure_future(self.stop.stopping.wait())
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if acquire.done() and not acquire.cancelled():
            stopped.cancel()
            if self.stop.stopping.is_set():
                self.in_flight.release()
                return False
            return True
        acquire.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acquire
        if acquire.done() and not acquire.cancelled():
            self.in_flight.release()
        return False

    async def _one(self, decision: OrderDecision, report: BulkReport) -> None:
        recid = decision.recid
        try:
            await self._one_record(decision, report)
        except asyncio.CancelledError:
            report.unfinished.append(recid)
            raise
        except DiskFull as exc:  # from a ledger write outside the record's own stages
            report.unfinished.append(recid)
            self._give_up(f"{DISK_FULL}: record {recid}: {exc.message}")
        finally:
            self.in_flight.release()

    async def _one_record(self, decision: OrderDecision, report: BulkReport) -> None:
        ctx = self.ctx
        recid = decision.recid
        try:
            with ctx.stats.open("resolve", recid, reason=decision.reason, priority=decision.position):
                record = await self.resolve(recid)
            report.staging[recid] = report.staging[record.recid] = staging_name(record)
        except FerryError as exc:
            if exc.recid is None:
                exc.recid = recid
            result = RecordResult(recid=recid, status="failed", stage="resolve", error=exc)
            ctx.stats.record("record", "failed", recid, error=exc, stage_reached="resolve")
            if ctx.ledger is not None and not ctx.dry_run:
                await ctx.ledger.run(ctx.ledger.set_record_status, recid, "failed", error=exc, attempt=True)
            self._done(report, result)
            return
        reservation = None
        if not ctx.dry_run and ctx.stream is None:
            # The staging budget is local disk. A streamed record (--stream) stages nothing:
            # what it holds is bytes in flight, each file's source window (pipeline/stream.py)
            # under the run's upload limits (upload slots, upload_bytes_in_flight) and the
            # target's own part budget; records_in_flight bounds how many are admitted.
            reservation = await self.staging.reserve(record.total_size)
        try:
            result = await self._with_retries(record)
        finally:
            if reservation is not None:
                reservation.release()
        self._done(report, result)

    async def _with_retries(self, record: Record) -> RecordResult:
        policy = RetryPolicy(attempts=self.record_retries + 1, base=self.ctx.limits.backoff_base * 4)
        breaker = self.ctx.breaker
        attempt = 0
        while True:
            opened = breaker.opened if breaker is not None else 0
            result = await RecordJob(self.ctx, record).run()
            retryable = result.error is not None and result.error.retryable
            if result.status != "failed" or not retryable or self.stop.stopping.is_set():
                return result
            if breaker is not None and (breaker.opened > opened or breaker.state != "closed"):
                # The target failed most requests and the run paused: this failure says
                # nothing about the record, so it costs no attempt. The next try waits for
                # the breaker (its first target call does), which paces the loop: a target
                # that stays down keeps the run paused, probing, until it is back or stopped.
                log.info("record %s failed while the target was unavailable (%s); retrying", record.recid, result.error)
                continue
            attempt += 1
            if attempt >= policy.attempts:
                return result
            delay = policy.backoff(attempt)
            log.info("record %s failed (%s); retrying the record in %.1fs", record.recid, result.error, delay)
            await asyncio.sleep(delay)

    def _done(self, report: BulkReport, result: RecordResult) -> None:
        report.results[result.recid] = result
        if result.error is not None and is_disk_full(result.error):
            # Every other record would fail the same way and leave more partial files:
            # stop, name the record and what it needed; a re-run resumes once there is space.
            self._give_up(f"{DISK_FULL}: record {result.recid}: {result.error.message}")
        if self.on_result is not None:
            self.on_result(result)


def _summary_text(summary: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in summary.items())


def remove_partials(dest: Path, report: BulkReport) -> int:
    """After a run stopped on a full disk, once everything has stopped writing (the event
    loop and its threads are gone): the half-downloaded ``.part`` files of the records not
    finished go (they hold the space the run lacked; a re-run fetches them again), and so do
    ``.partial`` bundles a cancelled zip left. Returns the bytes freed."""
    if not (report.stopped or "").startswith(DISK_FULL):
        return 0
    failed = [r.recid for r in report.results.values() if r.status == "failed"]
    freed = 0
    for recid in [*report.unfinished, *failed]:
        # Never resolved: nothing was staged for it, and DEST/<recid> may be another record's.
        if (name := report.staging.get(recid)) is None:
            continue
        record_dir = dest / name
        for path in [*record_dir.rglob("*.part"), *record_dir.glob(".ferry/*.zip.partial")]:
            with contextlib.suppress(OSError):
                freed += path.stat().st_size
                path.unlink()
    return freed
