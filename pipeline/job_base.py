"""What every stage of ``RecordJob`` stands on: its state, and its calls to the target,
the ledger and the stats.

Every call to the target goes through ``_call`` (seen by the circuit breaker); the
ledger is written only through ``_ledger``/``_file_state`` (nothing when there is none).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson

from download.sources import staging_name
from ferry.core.checksums import Checksum
from ferry.core.errors import RateLimited, TargetError, TargetUnavailable
from ferry.core.model import Record
from pipeline.context import PipelineContext, RecordResult

T = TypeVar("T")


class JobBase:
    """One record's state in the pipeline, and its bookkeeping."""

    def __init__(self, ctx: PipelineContext, record: Record) -> None:
        self.ctx = ctx
        self.record = record
        self.recid = record.recid
        self.record_dir = ctx.dest / staging_name(record)  # zenodo:123 and CERN 123 apart
        self.stage = "resolve"
        self.result = RecordResult(recid=record.recid, status="failed", stage="resolve", source_files=len(record.files))
        self._manifest_lock = asyncio.Lock()  # md5s learnt during the upload are saved one at a time
        self.notes: list[str] = []  # where the record's own claims disagree with its files
        self.oversize_note: str | None = None  # what pipeline/oversize.py decided, when over a limit

    def event_extra(self) -> dict[str, Any]:
        """Facts for the record's stats event beyond the schema's columns (its ``extra``)."""
        extra: dict[str, Any] = {}
        if not self.record.files:
            extra["metadata_only"] = True
        if self.notes:
            extra["distribution"] = list(self.notes)
        if self.oversize_note:
            extra["oversize"] = self.oversize_note
        return extra

    # --- bookkeeping --------------------------------------------------------------------

    async def _call(self, op: Callable[[], Awaitable[T]], *, wait: bool = True) -> T:
        """One call to the target, seen by the circuit breaker (``wait``: wait for it first).

        Every call goes through here, not only uploads: when the target is down, the search
        or the create fails first, and without this the breaker would never open while each
        record burnt its retries and was lost. Only unavailability (5xx, connection errors,
        429 after the HTTP layer's own retries) counts as a failure; any other answer, even
        a 404 or a validation error, shows the target is up.
        """
        breaker = self.ctx.breaker
        if breaker is None:
            return await op()
        if wait:
            await breaker.wait_closed()
        try:
            result = await op()
        except (TargetUnavailable, RateLimited):
            breaker.record_failure()
            raise
        except TargetError:
            breaker.record_success()
            raise
        breaker.record_success()
        return result

    async def _ledger(self, status: str, **facts: Any) -> None:
        if self.ctx.ledger is not None:
            await self.ctx.ledger.run(
                self.ctx.ledger.set_record_status,
                self.recid,
                status,
                has_metadata=True,
                run_id=self.ctx.run_id,
                **facts,
            )

    async def _file_state(
        self, key: str, status: str, error: BaseException | None = None, *, checksum: Checksum | None = None
    ) -> None:
        if self.ctx.ledger is not None:
            await self.ctx.ledger.run(self.ctx.ledger.set_file, self.recid, key, status, error=error, checksum=checksum)


def short_json(body: Mapping[str, Any], limit: int = 400) -> str:
    text = orjson.dumps(body).decode()
    return text if len(text) <= limit else text[:limit] + "..."
