"""Runs one record through the real pipeline in dry-run mode, for the conformance suites."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from download.manifest import Manifest
from ferry.core.model import FileEntry, Record
from pipeline.context import PipelineContext
from pipeline.job import RecordJob
from stats.events import StatsWriter

if TYPE_CHECKING:
    from upload.targets.base import Target


class BodySource(Protocol):
    """What the probe needs of a suite backend (the suite's ``TargetBackend`` is one)."""

    def body(self, recid: str) -> dict[str, Any]: ...

    def query(self, recid: str) -> str: ...


class _BackendProfile:
    """The backend's own body and query, as a metadata profile."""

    name = "suite"

    def __init__(self, backend: BodySource) -> None:
        self.backend = backend

    def transform(self, record: Mapping[str, Any]) -> dict[str, Any]:
        recid = record["recid"] if isinstance(record, Mapping) else record.recid  # the pipeline passes a Record
        return self.backend.body(str(recid))

    def validate(self, body: Mapping[str, Any]) -> list[Any]:
        return []

    def find_query(self, recid: str) -> str:
        return self.backend.query(recid)


async def dry_run_record(target: Target | Any, backend: BodySource, tmp: Path, *, recid: str) -> str:
    """The outcome of a dry run of a two-file record into ``target`` (``"dry-run"``)."""

    async def no_fetch(record: Record, record_dir: Path) -> Manifest:
        raise AssertionError("a dry run must not download")

    files = tuple(FileEntry(key=f"f{i}.dat", uri=f"file:///nowhere/f{i}.dat", size=100 * (i + 1)) for i in range(2))
    record = Record(recid=recid, metadata={"recid": recid, "title": f"record {recid}"}, files=files)
    ctx = PipelineContext(
        target=target,
        profile=_BackendProfile(backend),
        dest=tmp / "dry-dest",
        fetch=no_fetch,
        stats=StatsWriter(None),
        dry_run=True,
        publish=True,
    )
    result = await RecordJob(ctx, record).run()
    if result.error is not None:
        raise result.error
    return result.status
