"""The stats schema's names: its version, the stages, the statuses and the row fields.

The meaning of each field is documented in ``stats/SCHEMA.md``; the writer
(``stats.events``) and the loaders (``stats.load``) both take the names from here.
"""

from __future__ import annotations

from typing import Literal

SCHEMA_VERSION = 1

Stage = Literal["run", "resolve", "download", "zip", "transform", "upload", "verify", "publish", "record", "summary"]
# Every stage name the schema knows, in pipeline order (loaders use it for categories).
STAGES: tuple[str, ...] = (
    "run",
    "resolve",
    "download",
    "zip",
    "transform",
    "upload",
    "verify",
    "publish",
    "record",
    "summary",
)
STATUSES: tuple[str, ...] = ("started", "ok", "failed", "skipped", "dry-run")
Status = Literal["started", "ok", "failed", "skipped", "dry-run"]
TERMINAL = ("ok", "failed", "skipped", "dry-run")

# Column order of the CSV export and the documented field list.
FIELDS = (
    "schema_version",
    "run_id",
    "host",
    "event_id",
    "seq",
    "stage",
    "recid",
    "file",
    "status",
    "start",
    "end",
    "duration_s",
    "bytes",
    "file_count",
    "zip_used",
    "transfer",
    "attempts",
    "throughput_mbps",
    "error_type",
    "error",
    "reason",
    "extra",
    "worker",  # optional (absent in single-process runs): which process wrote the row
)
