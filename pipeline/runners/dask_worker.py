"""The worker side of a cluster run: one ``RecordJob`` per Dask task, same pipeline as local.

A worker process builds its live run once (``open_run`` from the picklable ``RunSpec``) on
an event loop of its own, and runs each record task there, so the per-stage limits of the
spec apply per worker and several records of one worker overlap as in a local run.
Staging is on the worker's own disk (``DEST/workers/<worker>/``) and cleaned once a
record is verified on the target. Three things are shared with the other workers through
the scheduler (``Client.set_metadata``), never through a shared filesystem:

- create intents: before a draft is created the intent is published, so a record retried
  on another worker (its first worker was killed) searches the target patiently first,
  as after a local kill -9 (``SharedIntentLedger``);
- a 429's pause: seen by one worker, it holds the requests of all (``ClusterLimiter``);
- the request budget: split in equal shares, one per worker slot, whose spending is
  published so that a replacement worker takes over a share, not a fresh one.

Stats rows are captured per record and returned with the task's result; the client
writes them (one file per worker), so a worker lost mid-record leaves no half-counted
record behind. The client's ledger is the run's memory: a task carries what it knows of
its record (published as X with these verified files) and returns what the worker
verified, so a re-run skips a finished record after one look at the target, on any
worker, without downloading it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import get_client, get_worker

from ferry.core.checksums import Checksum
from ferry.core.errors import FerryError
from ferry.core.model import Record
from pipeline.job import RecordJob
from pipeline.ledger import Ledger
from pipeline.ledger_schema import RecordRow
from pipeline.limits import RateLimiter
from pipeline.runtime import Run, RunParts, RunSpec, open_run
from stats.events import StatsWriter

PAUSE_POLL_S = 1.0  # how often a worker looks for a pause another worker published
# Request stamps a worker may have sent but not yet published on the scheduler. Publishing
# before every request cost a scheduler round trip each (~0.1 s per record of ~10 requests,
# measured: bench_cluster, docs/benchmarks.md); a worker taking over a slot counts this
# many requests as spent, so a predecessor killed with them unpublished cannot overspend.
UNPUBLISHED_MAX = 8

# A record's verified files as the ledgers keep them: (key, size, checksum).
VerifiedFiles = tuple[tuple[str, int | None, Checksum | None], ...]


@dataclass(frozen=True)
class KnownRecord:
    """What the client's ledger knows of a record finished earlier (the target stays the judge)."""

    remote_id: str
    files: VerifiedFiles


async def published_files(ledger: Ledger, recid: str) -> VerifiedFiles:
    """The record's files when ``ledger`` has it published with every file verified, else ()."""
    row = await ledger.run(ledger.get, recid)
    if row is None or row.status != "published" or not row.remote_id:
        return ()
    files = await ledger.run(ledger.file_status, recid)
    if not files or any(f.status != "verified" or f.checksum is None for f in files):
        return ()
    return tuple((f.key, f.size, f.checksum) for f in files)


@dataclass(frozen=True)
class TaskOutcome:
    """What a record task returns to the client (picklable, no live objects, no secrets)."""

    recid: str
    status: str
    stage: str
    worker: str
    error: str | None = None
    error_kind: str | None = None
    remote_id: str | None = None
    file_count: int = 0
    bytes_uploaded: int = 0
    source_files: int = 0
    parts: int = 0
    zip_used: bool | None = None
    failed_files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    rows: tuple[dict[str, Any], ...] = ()
    published_files: VerifiedFiles = ()  # the worker's ledger after the task, for the client's


def _meta_key(run_id: str, *parts: str) -> list[str]:
    return ["ferry", run_id, *parts]


class ClusterLimiter:
    """One share of the target's request budget, plus pauses shared by all workers.

    The budget is split in ``slots`` equal shares. A worker claims a free slot (a Dask lock
    per slot, released by the scheduler when its holder dies) and starts from the slot's
    published request times, so a restarted or replacement worker cannot spend a share
    twice. Request times are published on the scheduler in the background, at most
    ``UNPUBLISHED_MAX`` behind (a request waits for the publish past that), and a slot
    taken over from an earlier holder starts with that many requests counted as spent.
    """

    def __init__(self, per_minute: int, per_hour: int, *, run_id: str, client: Any, slots: int) -> None:
        self.run_id = run_id
        self._client = client
        self.slot = self._claim(slots)
        self.local = RateLimiter(max(1, per_minute // slots), max(1, per_hour // slots))
        spent = client.get_metadata(self._slot_key, None)
        offset = time.monotonic() - time.time()  # wall-clock stamps -> this process's clock
        if spent is not None:  # an earlier holder: its last requests may be unpublished
            now = time.monotonic()
            self.local.preload([*(float(t) + offset for t in spent), *([now] * UNPUBLISHED_MAX)])
        else:
            client.set_metadata(self._slot_key, [])  # held: a successor will know
        self._polled = 0.0
        self._publishing = asyncio.Lock()
        self._unpublished = 0
        self._flusher: asyncio.Task[None] | None = None

    @property
    def _slot_key(self) -> list[str]:
        return _meta_key(self.run_id, "slot", str(self.slot))

    def _claim(self, slots: int) -> int:
        from distributed import Lock

        while True:
            for slot in range(slots):
                lock = Lock(f"ferry-{self.run_id}-slot-{slot}")
                if lock.acquire(blocking=False):
                    self._lock = lock  # held for the worker's life
                    return slot
            time.sleep(1.0)  # every share is taken: a dead holder's lease expires soon

    def pause_for(self, seconds: float) -> None:
        self.local.pause_for(seconds)
        until = time.time() + seconds
        # Published for the other workers; a failure to publish only loses the sharing.
        threading.Thread(target=self._publish, args=(until,), daemon=True).start()

    def _publish(self, until: float) -> None:
        with contextlib.suppress(Exception):
            self._client.set_metadata(_meta_key(self.run_id, "pause_until"), until)

    async def __aenter__(self) -> None:
        now = time.monotonic()
        if now - self._polled >= PAUSE_POLL_S:
            self._polled = now
            until = await asyncio.to_thread(self._client.get_metadata, _meta_key(self.run_id, "pause_until"), 0.0)
            remaining = float(until) - time.time()
            if remaining > 0:
                self.local.pause_for(remaining)
        await self.local.acquire()
        self._unpublished += 1
        if self._unpublished > UNPUBLISHED_MAX:
            await self._publish_stamps()  # too far behind: this request waits for it
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._unpublished:
            await self._publish_stamps()

    async def _publish_stamps(self) -> None:
        # One publish at a time, each a snapshot taken under the lock: a later snapshot holds
        # every earlier stamp, so an older list can never overwrite a newer one.
        async with self._publishing:
            taken = self._unpublished
            if not taken:
                return
            offset = time.time() - time.monotonic()
            stamps = [t + offset for t in self.local.stamps()]
            await asyncio.to_thread(self._client.set_metadata, self._slot_key, stamps)
            self._unpublished -= taken

    async def __aexit__(self, *exc: object) -> None:
        return None


class SharedIntentLedger(Ledger):
    """The worker's own ledger, with create intents and remote ids also kept on the scheduler."""

    run_id: str = ""
    client: Any = None  # the worker's (synchronous) Dask client, usable from any thread

    def _shared(self, recid: str) -> Any:
        return self.client.get_metadata(_meta_key(self.run_id, "create", str(recid)), None)

    def _share(self, recid: str, value: str) -> None:
        self.client.set_metadata(_meta_key(self.run_id, "create", str(recid)), value)

    def get(self, recid: str) -> RecordRow | None:
        row = super().get(recid)
        shared = self._shared(recid)
        if shared is None or (row is not None and row.remote_id):
            return row
        row = row or self.record(recid)
        if shared == "pending":
            return dataclasses.replace(row, create_pending=True)
        return dataclasses.replace(row, remote_id=str(shared))

    def begin_create(self, recid: str, *, run_id: str | None = None, token: str | None = None) -> str:
        self._share(recid, "pending")  # first: a kill right after the POST must find it
        return super().begin_create(recid, run_id=run_id, token=token)

    def set_remote(self, recid: str, remote_id: str, state: str | None = None) -> None:
        super().set_remote(recid, remote_id, state)
        self._share(recid, remote_id)


class CaptureStats(StatsWriter):
    """Stats rows kept in memory per (record, file), handed back with each task's result:
    a record task takes all its record's rows, a mirror's file task only its file's (the
    other files of the record may be in flight on the same worker)."""

    def __init__(self, run_id: str | None, redact: tuple[str, ...], worker: str) -> None:
        super().__init__(None, run_id, redact=redact, worker=worker)
        self._rows: dict[tuple[str | None, str | None], list[dict[str, Any]]] = {}

    def write(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._tally.add(row)
            self._seq += 1
            row["seq"] = self._seq
            row["worker"] = self.worker
            for secret in self._redact:
                for key, value in row.items():
                    if isinstance(value, str) and secret in value:
                        row[key] = value.replace(secret, "***")
            self._rows.setdefault((row.get("recid"), row.get("file")), []).append(row)

    def take(self, recid: str, file: str | None = None) -> tuple[dict[str, Any], ...]:
        """The rows of ``recid`` (only of its ``file`` when given), plus rows of no record."""
        with self._lock:
            keys = [(recid, file)] if file is not None else [k for k in self._rows if k[0] == recid]
            keys += [k for k in self._rows if k[0] is None]
            return tuple(row for k in keys for row in self._rows.pop(k, []))


def worker_name() -> str:
    name = str(get_worker().name)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "worker"


class WorkerRuntime:
    """One live run per worker process and run id, on its own event loop thread."""

    def __init__(self, spec: RunSpec, workers: int) -> None:
        self.spec = spec
        self.worker = worker_name()
        self.client = get_client()  # in the task's thread: the worker's own client
        tcfg = spec.config.target(spec.options.target)
        run_id = spec.options.run_id or ""
        # Claimed here, in the task's thread, where the Dask lock finds its worker.
        self.limiter = ClusterLimiter(
            tcfg.requests_per_minute, tcfg.requests_per_hour, run_id=run_id, client=self.client, slots=workers
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ferry-worker-loop", daemon=True)
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()
        self.stats: CaptureStats | None = None
        self.run: Run = asyncio.run_coroutine_threadsafe(self._open(), self.loop).result()

    async def _open(self) -> Run:
        spec, run_id = self.spec, self.spec.options.run_id or ""

        def stats(run: str | None, redact: tuple[str, ...]) -> StatsWriter:
            self.stats = CaptureStats(run, redact, self.worker)
            return self.stats

        def ledger(path: Path, target: str) -> Ledger:
            opened = SharedIntentLedger.open(path, target=target)
            opened.run_id, opened.client = run_id, self.client
            return opened

        dest = Path(spec.options.dest) / "workers" / self.worker
        opts = dataclasses.replace(spec.options, dest=dest, ledger=None, delete_staged=True, stats_dir=None)
        parts = RunParts(limiter=self.limiter, stats=stats, ledger=ledger)
        return await self._stack.enter_async_context(open_run(spec.config, opts, limits=spec.limits, parts=parts))

    def run_record(self, record: Record, known: KnownRecord | None) -> TaskOutcome:
        return asyncio.run_coroutine_threadsafe(self._one(record, known), self.loop).result()

    async def _one(self, record: Record, known: KnownRecord | None) -> TaskOutcome:
        ledger = self.run.ctx.ledger
        if known is not None and ledger is not None:
            # Start from what the client knows; the job still asks the target before skipping.
            await ledger.run(ledger.correct_from_target, record.recid, known.remote_id, known.files)
        result = await RecordJob(self.run.ctx, record).run()
        error: FerryError | None = result.error
        assert self.stats is not None
        done = await published_files(ledger, record.recid) if ledger is not None else ()
        return TaskOutcome(
            recid=result.recid,
            status=result.status,
            stage=result.stage,
            worker=self.worker,
            error=str(error) if error is not None else None,
            error_kind=error.kind if error is not None else None,
            remote_id=result.remote_id,
            file_count=result.file_count,
            bytes_uploaded=result.bytes_uploaded,
            source_files=result.source_files,
            parts=result.parts,
            zip_used=result.zip_used,
            failed_files=dict(result.failed_files),
            rows=self.stats.take(record.recid),
            published_files=done,
        )


_RUNTIMES: dict[str, WorkerRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()


def record_task(spec: RunSpec, workers: int, record: Record, known: KnownRecord | None = None) -> TaskOutcome:
    """The Dask task: run one record through the pipeline on this worker."""
    key = spec.options.run_id or ""
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get(key)
        if runtime is None:
            runtime = _RUNTIMES[key] = WorkerRuntime(spec, workers)
    return runtime.run_record(record, known)
