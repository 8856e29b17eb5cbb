"""The ledger's SQLite schema, its row types and statuses, and the values stored in it.

See pipeline/ledger.py for what the ledger guarantees; this module holds only what every
part of it (pipeline/ledger_store.py, ledger_files.py, ledger.py) shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ferry.core.checksums import Checksum
from ferry.core.errors import FerryError
from ferry.core.logs import mask_secrets

# 2: files.md5 became files.checksum, the verified (algorithm, value) pair as "alg:hex"
# (the hash the pipeline negotiated with the target).
# 3: records.create_legacy: set on the create intents a ledger of schema 1 or 2 held when it
# was migrated. Such a token may be carried by the record it created (``ferry push`` has
# written it as a marker since 2026-12-04, still schema 2) or by nothing at all (before), so
# the look for that create cannot rely on the token alone (pipeline/push_create.py).
# Older ledgers are migrated in place when opened for writing.
SCHEMA_VERSION = 3

RECORD_STATUSES = (
    "pending",
    "downloading",
    "downloaded",
    "zipped",
    "uploading",
    "uploaded",
    "published",
    "failed",
    "skipped",
)
FILE_STATUSES = ("pending", "downloaded", "uploaded", "verified", "failed")
# A record counts as done ("ok") only in these states, and only with files and metadata.
OK_STATUSES = ("uploaded", "published")
MAX_ERROR_CHARS = 2000


class LedgerError(FerryError):
    """The ledger file is unusable (not SQLite, newer schema, wrong target) or misused."""


class LedgerLocked(LedgerError):
    """Another run holds this ledger."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_text(error: BaseException | str | None) -> str | None:
    if error is None:
        return None
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    # A server that echoes the request (Authorization included) into an error body puts
    # the token in the message: masked before it is stored (and before it is cut short).
    return mask_secrets(text)[:MAX_ERROR_CHARS]


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    command TEXT,
    target TEXT,
    status TEXT NOT NULL DEFAULT 'running',
    summary TEXT
);
CREATE TABLE IF NOT EXISTS records (
    recid TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ({", ".join(repr(s) for s in RECORD_STATUSES)})),
    remote_id TEXT,
    remote_state TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at TEXT NOT NULL,
    file_count INTEGER,
    bytes INTEGER,
    has_metadata INTEGER NOT NULL DEFAULT 1,
    create_token TEXT,
    create_started_at TEXT,
    create_pending INTEGER NOT NULL DEFAULT 0,
    run_id TEXT,
    create_legacy INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS records_status ON records (status);
CREATE TABLE IF NOT EXISTS files (
    recid TEXT NOT NULL REFERENCES records (recid) ON DELETE CASCADE,
    key TEXT NOT NULL,
    size INTEGER,
    checksum TEXT,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ({", ".join(repr(s) for s in FILE_STATUSES)})),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (recid, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_status ON files (status);
"""


@dataclass(frozen=True)
class RecordRow:
    recid: str
    status: str
    remote_id: str | None
    remote_state: str | None
    attempts: int
    last_error: str | None
    updated_at: str
    file_count: int | None
    bytes: int | None
    has_metadata: bool
    create_token: str | None
    create_started_at: str | None
    create_pending: bool  # a create was begun and its outcome is unknown: search the target first
    run_id: str | None
    # The pending create was begun by a dataferry whose ledger had schema 1 or 2: its token
    # may not be the marker the record carries (a record made before markers carries none).
    create_legacy: bool = False

    @property
    def ok(self) -> bool:
        """Done on the target, with metadata, and files checked (``file_count`` 0: a metadata-only
        record, pipeline/without_files.py; unknown files, ``None``, never are)."""
        return self.status in OK_STATUSES and self.file_count is not None and self.has_metadata


@dataclass(frozen=True)
class FileRow:
    recid: str
    key: str
    size: int | None
    checksum: Checksum | None  # the verified value, in the hash negotiated with the target
    status: str
    attempts: int
    last_error: str | None
    updated_at: str


RECORD_COLS = ", ".join(RecordRow.__dataclass_fields__)
FILE_COLS = ", ".join(FileRow.__dataclass_fields__)


def file_row(row: Sequence[Any]) -> FileRow:
    values = list(row)
    values[3] = Checksum.parse(values[3]) if values[3] else None
    return FileRow(*values)


def checksum_text(checksum: Checksum | None) -> str | None:
    return str(checksum) if checksum is not None else None


def record_row(row: Sequence[Any]) -> RecordRow:
    values = list(row)
    values[9] = bool(values[9])  # has_metadata
    values[12] = bool(values[12])  # create_pending
    values[14] = bool(values[14])  # create_legacy
    return RecordRow(*values)


def recid_key(recid: str) -> tuple[int, int, str]:
    return (0, int(recid), "") if recid.isdigit() else (1, 0, recid)
