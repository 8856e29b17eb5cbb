"""Rows of a stats file after they are written: the writer's running totals (``RunTally``,
for the summary row), reading a JSONL file back (a torn last line skipped), the CSV export."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from ferry.core.atomic import AtomicWriter
from stats.schema import FIELDS


class RunTally:
    """Running totals of one writer's rows, for the summary row.

    Memory grows with the number of records (one status each) and of events in flight,
    never with the number of files.
    """

    def __init__(self) -> None:
        self.events = 0
        self.stages: dict[str, dict[str, float]] = {}
        self.records: dict[str, str] = {}
        self.open: set[str] = set()

    def add(self, row: Mapping[str, Any]) -> None:
        stage, status, event_id = row.get("stage"), row.get("status"), row.get("event_id")
        if stage == "summary" or not isinstance(stage, str) or not isinstance(status, str):
            return
        if status == "started":
            if isinstance(event_id, str):
                self.open.add(event_id)
            return
        self.events += 1
        self.open.discard(str(event_id))
        totals = self.stages.setdefault(stage, {"bytes": 0, "files": 0, "busy_s": 0.0})
        totals[status] = totals.get(status, 0) + 1
        totals["busy_s"] = round(totals["busy_s"] + (row.get("duration_s") or 0.0), 6)
        if status == "ok":
            totals["bytes"] += row.get("bytes") or 0
            if row.get("file") is not None:
                totals["files"] += 1
        if stage == "record" and row.get("recid") is not None:
            self.records[str(row["recid"])] = status  # the last terminal record event wins

    def totals(self) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        for status in self.records.values():
            by_status[status] = by_status.get(status, 0) + 1
        moved = self.stages.get("upload") or self.stages.get("download") or {"bytes": 0, "files": 0}
        return {
            "events": self.events,
            "open_events": len(self.open),
            "records": by_status,
            "stages": {stage: dict(values) for stage, values in self.stages.items()},
            "delivered": {"bytes": int(moved["bytes"]), "files": int(moved["files"])},
        }


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Rows of one JSONL file; a torn last line (crash mid-write) is skipped."""
    with open(path, "rb") as fh:
        for raw in fh:
            raw = raw.strip()
            if not raw:
                continue
            try:
                yield orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue


def export_csv(jsonl: str | os.PathLike[str], csv_path: str | os.PathLike[str]) -> Path:
    out = Path(csv_path)
    with AtomicWriter(out) as fh:  # a reader never sees half a CSV
        writer = csv.DictWriter(_Utf8(fh), fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in read_jsonl(jsonl):
            writer.writerow(_csv_cells(row))
    return out


class _Utf8:
    """The text side of a binary writer, for csv (which writes str)."""

    def __init__(self, out: AtomicWriter) -> None:
        self.out = out

    def write(self, text: str) -> int:
        return self.out.write(text.encode("utf-8"))


def _csv_cells(row: Mapping[str, Any]) -> dict[str, Any]:
    cells = dict(row)
    if cells.get("extra") is not None:
        cells["extra"] = orjson.dumps(cells["extra"]).decode()
    return cells
