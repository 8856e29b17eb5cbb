"""Bulk runs on a Dask cluster: one task per record, the same pipeline as a local run.

The client (this process) holds the order (task priorities), the ledger and the progress
display; each task runs ``RecordJob`` on a worker (``pipeline.runners.dask_worker``). A
worker lost mid-record (killed, preempted) makes Dask run the task again elsewhere; the
create intent the first worker published on the scheduler makes the second look on the
target patiently before creating, so the record is never created twice.

The request budget is split explicitly: each of the N workers spends 1/N of the target's
``requests_per_minute``/``_hour`` (a shared token server would add a scheduler round trip
per request; a split cannot exceed the budget however the tasks fall). A 429 seen by one
worker is published as a pause that every worker honours within a second.

Stats: each task returns its record's rows; the client appends them to
``<run_id>-<worker>.jsonl`` in ``--stats-dir`` (one file per worker, read back as one run),
plus its own ``run`` rows. Tokens never travel: workers read them from the configured
file or environment variable (so on a real cluster both must exist on the workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from download.sources.cache import OrderDecision
from ferry.core.errors import ConfigError, FerryError, InputError
from ferry.core.model import Record
from pipeline.bulk import BulkReport
from pipeline.context import RecordResult
from pipeline.ledger import Ledger
from pipeline.runners.dask_worker import KnownRecord, TaskOutcome, VerifiedFiles, published_files, record_task
from pipeline.runtime import RunSpec
from stats.events import StatsWriter, Status

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'dataferry[cluster]'"
_LOCAL = re.compile(r"^local(?::(\d+))?$")


def parse_cluster(text: str) -> tuple[str, int | str]:
    """``local:N`` -> ("local", N); ``tcp://host:port`` -> ("address", it); a jobqueue name."""
    m = _LOCAL.match(text)
    if m:
        n = int(m.group(1) or 2)
        if n < 1:
            raise InputError(f"--cluster {text}: at least one worker")
        return "local", n
    if text.startswith(("tcp://", "tls://", "ws://", "wss://")):
        return "address", text
    if text in ("htcondor", "slurm", "pbs", "sge", "lsf"):
        return "jobqueue", text
    raise InputError(f"--cluster {text!r}: give local:N, tcp://HOST:PORT or a batch system (htcondor, slurm)")


@contextlib.asynccontextmanager
async def connect(cluster: str, *, threads: int, config_file: str | None = None) -> AsyncIterator[Any]:
    """An asynchronous Dask client for ``--cluster``; the cluster it started is closed after."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # the optional extra
        raise ConfigError(f"--cluster needs Dask distributed: {INSTALL_HINT}") from exc
    kind, value = parse_cluster(cluster)
    if kind == "address":
        async with Client(str(value), asynchronous=True) as client:
            yield client
        return
    if kind == "local":
        import dask

        # A killed local worker's budget slot is free again after this (default 30 s).
        dask.config.set({"distributed.scheduler.locks.lease-timeout": "8s"})
        # A task goes to a worker only when one of its threads is free: with Dask's default
        # (1.1) a worker holds one queued task, and at the end of a run a record could wait
        # ~1.2 s behind a busy worker's record while another worker idled (measured).
        dask.config.set({"distributed.scheduler.worker-saturation": 1.0})
        _fork_workers_warm()
        made: Any = await LocalCluster(
            n_workers=int(value),
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            asynchronous=True,
        )
    else:
        made = await _jobqueue_cluster(str(value), config_file)
    try:
        async with Client(made, asynchronous=True) as client:
            yield client
    finally:
        await made.close()


def _fork_workers_warm() -> None:
    """Local workers forked from one warm server process instead of spawned
    (``pipeline.runners.forkserver``; already running when the command started it early)."""
    import dask
    from distributed.utils import get_mp_context

    from pipeline.runners.forkserver import WORKER_MODULES

    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
    get_mp_context().set_forkserver_preload(list(WORKER_MODULES))  # no effect once it runs


async def _jobqueue_cluster(kind: str, config_file: str | None) -> Any:
    try:
        import dask_jobqueue
        import yaml
    except ImportError as exc:
        raise ConfigError(f"--cluster {kind} needs dask-jobqueue: pip install dask-jobqueue pyyaml") from exc
    if not config_file:
        raise InputError(f"--cluster {kind} needs --cluster-config site.yaml (see docs/cluster.md)")
    try:
        text = await asyncio.to_thread(Path(config_file).read_text, encoding="utf-8")
        settings = yaml.safe_load(text) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"--cluster-config {config_file}: {exc}") from exc
    jobs = int(settings.pop("jobs", 1))
    cls = {"htcondor": "HTCondorCluster", "slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster"}
    made = getattr(dask_jobqueue, cls.get(kind, "LSFCluster"))(asynchronous=True, **settings)
    await made
    made.scale(jobs=jobs)
    return made


class WorkerRows:
    """The stats rows workers send back, appended to one JSONL file per worker."""

    def __init__(self, stats_dir: str | None, run_id: str) -> None:
        self.dir = Path(stats_dir) if stats_dir else None
        self.run_id = run_id
        self._files: dict[str, Any] = {}

    def add(self, worker: str, rows: Sequence[dict[str, Any]]) -> None:
        if self.dir is None or not rows:
            return
        fh = self._files.get(worker)
        if fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            fh = self._files[worker] = open(self.dir / f"{self.run_id}-{worker}.jsonl", "ab")  # noqa: SIM115
        fh.write(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in rows))
        fh.flush()

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()


def _result(outcome: TaskOutcome) -> RecordResult:
    error = FerryError(outcome.error, recid=outcome.recid) if outcome.error else None
    return RecordResult(
        recid=outcome.recid,
        status=outcome.status,  # type: ignore[arg-type]  # one of Outcome, from the worker's RecordResult
        stage=outcome.stage,
        error=error,
        remote_id=outcome.remote_id,
        file_count=outcome.file_count,
        bytes_uploaded=outcome.bytes_uploaded,
        source_files=outcome.source_files,
        parts=outcome.parts,
        zip_used=outcome.zip_used,
        failed_files=dict(outcome.failed_files),
    )


async def run_on_cluster(
    client: Any,
    spec: RunSpec,
    order: Sequence[OrderDecision],
    records: Callable[[str], Record],
    *,
    stats: StatsWriter,
    ledger: Ledger | None,
    on_result: Callable[[RecordResult], None] | None = None,
) -> BulkReport:
    """Run every record of ``order`` as a task; the report as a local bulk run gives it."""
    from distributed import as_completed

    workers = max(1, len((await client.scheduler.identity())["workers"]))
    rows = WorkerRows(spec.options.stats_dir, stats.run_id)
    report = BulkReport()
    run_event = stats.open("run", None, file_count=len(order), reason=f"{len(order)} record(s) on {workers} worker(s)")
    if ledger is not None:
        await ledger.run(ledger.start_run, stats.run_id, command="bulk --cluster")
    futures = [
        client.submit(
            record_task,
            spec,
            workers,
            records(d.recid),
            await _known(ledger, d.recid),
            key=f"ferry-{stats.run_id}-{d.recid}",
            priority=len(order) - d.position,  # Dask runs higher priorities first
            pure=False,
        )
        for d in order
    ]
    by_key = {f.key: d.recid for f, d in zip(futures, order, strict=True)}
    try:
        async for future in as_completed(futures):
            recid = by_key[future.key]
            try:
                outcome: TaskOutcome = await future
            # A task's failure on a worker comes back as whatever it raised there (or the
            # scheduler's KilledWorker): one record fails and is reported, the others go on.
            except Exception as exc:  # noqa: BLE001 - worker task boundary; the record is reported failed
                result = RecordResult(recid=recid, status="failed", stage="cluster", error=FerryError(str(exc)))
                verified: VerifiedFiles = ()
            else:
                rows.add(outcome.worker, outcome.rows)
                result, verified = _result(outcome), outcome.published_files
            await _note(ledger, result, verified)
            report.results[recid] = result
            if on_result is not None:
                on_result(result)
    finally:
        rows.close()
        status: Status = "ok" if report.ok else "failed"
        summary = {s: report.count(s) for s in ("ok", "failed", "skipped", "dry-run")} | {"workers": workers}
        run_event.close(status, reason=", ".join(f"{k}={v}" for k, v in summary.items()), summary=summary)
        if ledger is not None:
            await ledger.run(ledger.end_run, stats.run_id, status, summary)
    return report


async def _known(ledger: Ledger | None, recid: str) -> KnownRecord | None:
    """What the client's ledger holds of a record published earlier, for its task."""
    if ledger is None:
        return None
    files = await published_files(ledger, recid)
    row = await ledger.run(ledger.get, recid) if files else None
    return KnownRecord(row.remote_id, files) if row is not None and row.remote_id else None


async def _note(ledger: Ledger | None, result: RecordResult, verified: VerifiedFiles = ()) -> None:
    """The client's ledger follows the workers' results (the target stays the truth)."""
    if ledger is None:
        return
    if verified and result.remote_id and result.status in ("ok", "skipped"):
        # Published with every file verified on the worker: the client keeps the same facts.
        await ledger.run(ledger.correct_from_target, result.recid, result.remote_id, verified)
        return
    if result.remote_id:
        await ledger.run(ledger.set_remote, result.recid, result.remote_id)
    status = {"ok": "published", "skipped": "skipped", "failed": "failed"}.get(result.status)
    if status == "published" and result.file_count:
        await ledger.run(ledger.set_record_status, result.recid, "uploaded", file_count=result.file_count)
    elif status is not None:
        await ledger.run(ledger.set_record_status, result.recid, status, error=result.error)
