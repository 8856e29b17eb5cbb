"""``ferry mirror --cluster``: one Dask task per file, the client keeps everything else.

The client resolves the record (which version, which files), holds the prefix's mirror
lock, and switches ``latest/`` once every file's task is done and verified
(``pipeline.mirror``). A task runs ``FileStep.outcome`` for one file on a worker, the
same step a local mirror runs, and returns a small ``FileOutcome`` plus its stats rows.

Per worker process, built once per run (not per task): the source transport (its HTTPS
connection pool), the S3 target (its client and connections), the stats capture, on an
event loop thread of its own. So a task costs a HEAD and the transfer, not a session.
Credentials never travel: the worker's target reads them from the standard AWS chain
(environment, config files) of the worker itself.

A worker lost mid-file: Dask runs the task again elsewhere; the file is streamed again
from its start (an object is only completed with every byte md5-checked, so nothing
half-written is ever visible). Workers do not abort "abandoned" uploads themselves (the
uploads of other live workers would look abandoned to a worker started later); the
client, once every task is done, aborts what is still open under the version's prefix.

No request budget is shared here. ``ferry mirror`` writes to s3 targets only
(``ferry.cli.commands.mirror.target_config`` refuses a Zenodo or InvenioRDM target), and an
s3 target's default budget is S3's own rate, which S3 enforces by answering SlowDown (each
worker's S3 client retries with back-off, then the file step). A section with a lower
budget is refused with ``--cluster`` before a worker starts (``ferry mirror`` without it
applies the budget): sharing it would need ``ClusterLimiter`` of the bulk runner here,
one slot per worker, and the client's own requests counted too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ferry.core.checksums import Checksum
from ferry.core.config import Config, Limits, TargetConfig
from ferry.core.errors import FerryError
from ferry.core.model import FileEntry
from pipeline.mirror_file import FileOutcome, FileStep
from pipeline.runners.dask import WorkerRows
from pipeline.stream import WINDOW
from upload.targets.base import RemoteRecord
from upload.targets.s3 import S3Target
from upload.targets.s3_client import At

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MirrorSpec:
    """What a worker needs to build its live mirror (picklable; no secrets)."""

    config: Config
    target: TargetConfig
    limits: Limits
    run_id: str
    window: int = WINDOW
    retries: int = 4


@dataclass(frozen=True)
class FileTaskResult:
    outcome: FileOutcome
    worker: str
    rows: tuple[dict[str, Any], ...] = ()


# --- the worker side ------------------------------------------------------------------


class MirrorRuntime:
    """One per worker process and run: transport, target and stats, on a loop thread."""

    def __init__(self, spec: MirrorSpec) -> None:
        from pipeline.runners.dask_worker import CaptureStats, worker_name

        self.spec = spec
        self.worker = worker_name()
        self.stats = CaptureStats(spec.run_id, (), self.worker)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="ferry-mirror-loop", daemon=True).start()
        self.step: FileStep = asyncio.run_coroutine_threadsafe(self._open(), self.loop).result()

    async def _open(self) -> FileStep:
        from download.transport import Transport
        from pipeline.target_wiring import make_target

        spec, source = self.spec, self.spec.config.source
        transport = Transport.create(
            source.protocol, https_base=source.portal, limits=spec.limits, verify_tls=source.verify_tls
        )
        target = make_target(spec.target, spec.limits)
        assert isinstance(target, S3Target)  # the client checked the target's type
        target.abort_abandoned = False  # the client sweeps once all tasks are done
        return FileStep(
            target,
            transport.fetcher_for,
            self.stats,
            url_for=transport.url_for,
            window=spec.window,
            retries=spec.retries,
        )

    def run_file(self, recid: str, entry: FileEntry, expected: Checksum) -> FileTaskResult:
        async def one() -> FileOutcome:
            rec = await self.step.target.create(recid, {})  # S3: no request, a folder name
            return await self.step.outcome(rec, entry, expected)

        outcome = asyncio.run_coroutine_threadsafe(one(), self.loop).result()
        rows = self.stats.take(recid, entry.key)
        return FileTaskResult(outcome, self.worker, rows)


_RUNTIMES: dict[str, MirrorRuntime] = {}
_LOCK = threading.Lock()


def mirror_file_task(spec: MirrorSpec, recid: str, entry: FileEntry, expected: Checksum) -> FileTaskResult:
    """The Dask task: one file of the version ``recid`` into the target."""
    with _LOCK:
        runtime = _RUNTIMES.get(spec.run_id)
        if runtime is None:
            runtime = _RUNTIMES[spec.run_id] = MirrorRuntime(spec)
    return runtime.run_file(recid, entry, expected)


# --- the client side ------------------------------------------------------------------


class ClusterFiles:
    """``Mirror``'s files step on a cluster: every file a task, outcomes and rows collected."""

    def __init__(self, client: Any, spec: MirrorSpec, target: S3Target, rows: WorkerRows) -> None:
        self.client, self.spec, self.target, self.rows = client, spec, target, rows

    async def __call__(
        self, rec: RemoteRecord, files: Sequence[FileEntry], wanted: dict[str, Checksum]
    ) -> list[FileOutcome]:
        from distributed import as_completed

        futures = [
            self.client.submit(
                mirror_file_task,
                self.spec,
                rec.recid,
                entry,
                wanted[entry.key],
                key=f"ferry-mirror-{self.spec.run_id}-{rec.recid}-{i}",
                pure=False,
            )
            for i, entry in enumerate(files)
        ]
        by_key = {f.key: entry.key for f, entry in zip(futures, files, strict=True)}
        outcomes: list[FileOutcome] = []
        try:
            async for future in as_completed(futures):
                try:
                    done: FileTaskResult = await future
                # A task lost for good (KilledWorker after Dask's retries) or a worker-side
                # crash: that file fails, the others go on; latest/ then stays as it was.
                except Exception as exc:  # noqa: BLE001 - worker task boundary
                    outcomes.append(FileOutcome(by_key[future.key], "failed", error_kind="cluster", error=str(exc)))
                    continue
                self.rows.add(done.worker, done.rows)
                outcomes.append(done.outcome)
                if done.outcome.auth:
                    break  # nothing else can be written: stop the other tasks
        finally:
            pending = [f for f in futures if not f.done()]
            if pending:
                await self.client.cancel(pending)
            await self._sweep(rec)
        return outcomes

    async def _sweep(self, rec: RemoteRecord) -> None:
        """Abort the multipart uploads still open under the version: no task runs any more,
        so each is a killed worker's (S3 would bill its parts for ever)."""
        with contextlib.suppress(FerryError):  # housekeeping; the next run sweeps again
            client = await self.target.client()
            bucket = self.target.location.bucket
            for upload in await client.list_uploads(bucket, self.target.record_prefix(rec.recid), at=At(rec.recid)):
                if self.target.file_key(rec.recid, upload.key) is not None:
                    log.info("record %s: aborting %s, left open by a lost worker", rec.recid, upload.key)
                    await client.abort_multipart(bucket, upload.key, upload.upload_id, at=At(rec.recid))
