"""The crash-safe ledger of a bulk run: what is done per recid and per file (SQLite, WAL).

The ledger is a cache of progress, the target is the truth: a re-run asks the target before
it writes. What the ledger must never lose is the fact that a *create* may have happened,
because a create that is forgotten becomes a second draft for the same recid. Hence:

- Every method is one transaction (``with conn``): a crash (kill -9, power loss) leaves
  either the whole change or none of it. SQLite's WAL journal makes that atomic.
- ``synchronous=NORMAL`` in WAL mode: a commit is atomic and survives a process crash
  (kill -9) because it is in the OS page cache; after a *power loss* the last few commits
  may be rolled back, but the file stays consistent. Losing "file X uploaded" is harmless
  (the re-run sees it on the target). Losing a create intent is not, so ``begin_create`` and
  ``set_remote`` commit with ``synchronous=FULL``: the WAL is fsynced before they return,
  which also makes every earlier commit durable. The intent is thus on disk *before* the
  POST that creates a draft is sent.
- One run per ledger: an exclusive ``flock`` on ``<ledger>.lock`` is held while open. The
  kernel drops it when the process dies, so a kill -9 never leaves a stale lock; a second
  concurrent run on the same ledger gets ``LedgerLocked`` naming the holder.
- One connection, used from a single worker thread by the async helpers (``await
  ledger.run(ledger.set_file, ...)``) so SQLite never blocks the event loop; the sync methods
  are also safe from any thread (a lock serialises them).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, Self, TypeVar

import orjson

from ferry.core.checksums import Checksum
from ferry.core.errors import DiskFull, FerryError, is_disk_full
from ferry.core.logs import mask_secrets

# 2: files.md5 became files.checksum, the verified (algorithm, value) pair as "alg:hex"
# (the hash the pipeline negotiated with the target). Version-1 ledgers are migrated in place.
SCHEMA_VERSION = 2

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

P = ParamSpec("P")
T = TypeVar("T")


class LedgerError(FerryError):
    """The ledger file is unusable (not SQLite, newer schema, wrong target) or misused."""


class LedgerLocked(LedgerError):
    """Another run holds this ledger."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _err(error: BaseException | str | None) -> str | None:
    if error is None:
        return None
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    # A server that echoes the request (Authorization included) into an error body puts
    # the token in the message: masked before it is stored (and before it is cut short).
    return mask_secrets(text)[:MAX_ERROR_CHARS]


_SCHEMA = f"""
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
    run_id TEXT
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

    @property
    def ok(self) -> bool:
        """Done on the target, with files and metadata (a record without either never is)."""
        return self.status in OK_STATUSES and bool(self.file_count) and self.has_metadata


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


_RECORD_COLS = ", ".join(RecordRow.__dataclass_fields__)
_FILE_COLS = ", ".join(FileRow.__dataclass_fields__)


def _file_row(row: Sequence[Any]) -> FileRow:
    values = list(row)
    values[3] = Checksum.parse(values[3]) if values[3] else None
    return FileRow(*values)


def _text(checksum: Checksum | None) -> str | None:
    return str(checksum) if checksum is not None else None


def _record_row(row: Sequence[Any]) -> RecordRow:
    values = list(row)
    values[9] = bool(values[9])  # has_metadata
    values[12] = bool(values[12])  # create_pending
    return RecordRow(*values)


class Ledger:
    """Progress of bulk runs in one SQLite file. Open with ``Ledger.open(path)``."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int | None, *, readonly: bool) -> None:
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self._readonly = readonly
        self._mutex = threading.RLock()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    # --- opening and closing ----------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, target: str | None = None, readonly: bool = False) -> Self:
        """Open (or create) the ledger at ``path`` and lock it for this process.

        ``target`` binds the ledger to one target name: record states mean nothing for
        another target, so reopening with a different one is refused. ``readonly=True``
        (for ``status``/``stats`` views) takes no lock and never writes.
        """
        path = Path(path)
        lock_fd = None
        if not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = _lock(path)
        elif not path.exists():
            raise LedgerError(f"ledger {path} does not exist")
        try:
            uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30)
            ledger = cls(path, conn, lock_fd, readonly=readonly)
            ledger._setup(target)
        except sqlite3.DatabaseError as exc:
            _unlock(lock_fd)
            raise LedgerError(f"ledger {path} is not a usable SQLite database: {exc}") from exc
        except BaseException:
            _unlock(lock_fd)
            raise
        return ledger

    def _setup(self, target: str | None) -> None:
        c = self._conn
        if not self._readonly:
            mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LedgerError(f"ledger {self.path}: cannot switch to WAL journal (got {mode})")
            c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA foreign_keys=ON")
        if self._readonly:
            self._check_version()
            return
        with self._mutex:
            # executescript runs outside our transactions; the schema is idempotent (IF NOT EXISTS).
            c.executescript(_SCHEMA)
        with self._tx():
            version = self._meta("schema_version")
            if version is None:
                c.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif version == "1":
                # md5 values were bare hex: they become "md5:<hex>" pairs in the renamed column.
                c.execute("ALTER TABLE files RENAME COLUMN md5 TO checksum")
                c.execute("UPDATE files SET checksum = 'md5:' || checksum WHERE checksum IS NOT NULL")
                c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            self._check_version()
            if target is not None:
                bound = self._meta("target")
                if bound is None:
                    c.execute("INSERT INTO meta VALUES ('target', ?)", (target,))
                elif bound != target:
                    raise LedgerError(
                        f"ledger {self.path} belongs to target {bound!r}, not {target!r}; use another ledger file"
                    )

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _check_version(self) -> None:
        version = self._meta("schema_version")
        if self._readonly and version == "1":
            raise LedgerError(f"ledger {self.path} has schema version 1: open it once for writing to migrate it")
        if version is not None and int(version) > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self.path} has schema version {version}, newer than this dataferry ({SCHEMA_VERSION})"
            )

    @property
    def target(self) -> str | None:
        with self._mutex:
            return self._meta("target")

    def close(self) -> None:
        """Checkpoint, close and unlock. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        with self._mutex:
            try:
                if not self._readonly:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.OperationalError as exc:
                # Optional: the WAL holds every commit, the next open checkpoints it. A full
                # disk here must not hide the run's own report.
                if not is_disk_full(exc):
                    raise
            finally:
                self._conn.close()
                _unlock(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------

    @contextmanager
    def _tx(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; ``durable`` fsyncs the WAL at commit (see the module doc)."""
        if self._closed:
            raise LedgerError(f"ledger {self.path} is closed")
        if self._readonly:
            raise LedgerError(f"ledger {self.path} was opened read-only")
        with self._mutex:
            c = self._conn
            if durable:
                c.execute("PRAGMA synchronous=FULL")
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    yield c
                    c.execute("COMMIT")
                except BaseException:
                    # A failed COMMIT (a full disk) leaves the transaction open: rolled back,
                    # so the ledger holds the whole change or none of it.
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if is_disk_full(exc):
                    raise DiskFull(f"the ledger {self.path}", path=self.path) from exc
                raise
            finally:
                if durable:
                    c.execute("PRAGMA synchronous=NORMAL")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._closed:
            raise LedgerError(f"ledger {self.path} is closed")
        with self._mutex:
            return self._conn.execute(sql, params).fetchall()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a ledger method in the ledger's own thread: ``await ledger.run(ledger.set_file, ...)``."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # --- runs -------------------------------------------------------------------------

    def start_run(self, run_id: str, *, command: str | None = None, target: str | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO runs (run_id, started_at, host, pid, command, target) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, _now(), socket.gethostname(), os.getpid(), command, target),
            )

    def end_run(self, run_id: str, status: str, summary: dict[str, Any] | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET ended_at = ?, status = ?, summary = ? WHERE run_id = ?",
                (_now(), status, orjson.dumps(summary).decode() if summary is not None else None, run_id),
            )

    def runs(self) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT run_id, started_at, ended_at, host, pid, command, target, status, summary FROM runs "
            "ORDER BY started_at"
        )
        keys = ("run_id", "started_at", "ended_at", "host", "pid", "command", "target", "status", "summary")
        out = []
        for row in rows:
            d = dict(zip(keys, row, strict=True))
            d["summary"] = orjson.loads(d["summary"]) if d["summary"] else None
            out.append(d)
        return out

    def interrupted_runs(self) -> list[str]:
        """Runs that started and never ended (the process died)."""
        return [r[0] for r in self._read("SELECT run_id FROM runs WHERE ended_at IS NULL ORDER BY started_at")]

    # --- records ----------------------------------------------------------------------

    def get(self, recid: str) -> RecordRow | None:
        rows = self._read(f"SELECT {_RECORD_COLS} FROM records WHERE recid = ?", (str(recid),))
        return _record_row(rows[0]) if rows else None

    def record(
        self,
        recid: str,
        *,
        file_count: int | None = None,
        bytes: int | None = None,
        has_metadata: bool | None = None,
        run_id: str | None = None,
    ) -> RecordRow:
        """The record's row, created as ``pending`` when new; given facts are updated."""
        recid = str(recid)
        with self._tx() as c:
            c.execute(
                "INSERT INTO records (recid, updated_at, file_count, bytes, has_metadata, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (recid) DO NOTHING",
                (recid, _now(), file_count, bytes, 1 if has_metadata is None else int(has_metadata), run_id),
            )
            self._update_facts(c, recid, file_count=file_count, bytes=bytes, has_metadata=has_metadata, run_id=run_id)
        row = self.get(recid)
        assert row is not None
        return row

    def add_records(
        self,
        items: Iterable[tuple[str, int | None, int | None]],
        *,
        run_id: str | None = None,
    ) -> int:
        """Register many ``(recid, file_count, bytes)`` in one transaction; returns how many were new."""
        now = _now()
        with self._tx() as c:
            before = c.total_changes
            c.executemany(
                "INSERT INTO records (recid, updated_at, file_count, bytes, run_id) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (recid) DO NOTHING",
                ((str(r), now, n, b, run_id) for r, n, b in items),
            )
            return c.total_changes - before

    @staticmethod
    def _update_facts(
        c: sqlite3.Connection,
        recid: str,
        *,
        file_count: int | None,
        bytes: int | None,
        has_metadata: bool | None,
        run_id: str | None,
    ) -> None:
        sets, params = [], []
        for col, value in (("file_count", file_count), ("bytes", bytes), ("run_id", run_id)):
            if value is not None:
                sets.append(f"{col} = ?")
                params.append(value)
        if has_metadata is not None:
            sets.append("has_metadata = ?")
            params.append(int(has_metadata))
        if sets:
            c.execute(f"UPDATE records SET {', '.join(sets)} WHERE recid = ?", (*params, recid))

    def set_record_status(
        self,
        recid: str,
        status: str,
        *,
        error: BaseException | str | None = None,
        attempt: bool = False,
        file_count: int | None = None,
        bytes: int | None = None,
        has_metadata: bool | None = None,
        run_id: str | None = None,
    ) -> RecordRow:
        """Move a record to ``status`` (creating its row if needed).

        ``attempt=True`` counts one more attempt (pass it when a (re)try starts). ``error``
        is kept as ``last_error`` (cleared by a later status without error). Refuses
        ``uploaded``/``published`` for a record with no files, no metadata, or a failed file:
        such a record is never counted as ok.
        """
        recid = str(recid)
        if status not in RECORD_STATUSES:
            raise LedgerError(f"unknown record status {status!r} (one of {', '.join(RECORD_STATUSES)})", recid=recid)
        with self._tx() as c:
            c.execute(
                "INSERT INTO records (recid, updated_at) VALUES (?, ?) ON CONFLICT (recid) DO NOTHING",
                (recid, _now()),
            )
            self._update_facts(c, recid, file_count=file_count, bytes=bytes, has_metadata=has_metadata, run_id=run_id)
            if status in OK_STATUSES:
                self._check_ok(c, recid, status)
            c.execute(
                "UPDATE records SET status = ?, last_error = ?, updated_at = ?, attempts = attempts + ? "
                "WHERE recid = ?",
                (status, _err(error), _now(), 1 if attempt else 0, recid),
            )
        row = self.get(recid)
        assert row is not None
        return row

    def _check_ok(self, c: sqlite3.Connection, recid: str, status: str) -> None:
        file_count, has_metadata = c.execute(
            "SELECT file_count, has_metadata FROM records WHERE recid = ?", (recid,)
        ).fetchone()
        if not has_metadata:
            raise LedgerError(f"cannot mark {status}: the record has no metadata", recid=recid)
        known = c.execute("SELECT count(*) FROM files WHERE recid = ?", (recid,)).fetchone()[0]
        # file_count 0 is the pipeline saying "the source lists none" (a metadata-only record,
        # pipeline/without_files.py); unknown (NULL) with no file rows is never done.
        if file_count is None and not known:
            raise LedgerError(f"cannot mark {status}: the record has no files", recid=recid)
        if not file_count:
            c.execute("UPDATE records SET file_count = ? WHERE recid = ?", (known, recid))
        bad = c.execute(
            "SELECT key, status FROM files WHERE recid = ? AND status IN ('failed', 'pending') ORDER BY key LIMIT 1",
            (recid,),
        ).fetchone()
        if bad is not None:
            raise LedgerError(f"cannot mark {status}: file is {bad[1]}", recid=recid, file=bad[0])

    def records_with_status(self, *statuses: str) -> list[str]:
        """Recids in any of ``statuses`` (all records when none is given), by recid."""
        for s in statuses:
            if s not in RECORD_STATUSES:
                raise LedgerError(f"unknown record status {s!r}")
        if statuses:
            marks = ", ".join("?" for _ in statuses)
            rows = self._read(f"SELECT recid FROM records WHERE status IN ({marks})", statuses)
        else:
            rows = self._read("SELECT recid FROM records")
        return sorted((r[0] for r in rows), key=_recid_key)

    def ok_recids(self) -> set[str]:
        """Records that are done (status uploaded/published, with files and metadata)."""
        rows = self._read(
            "SELECT recid FROM records "
            "WHERE status IN ('uploaded', 'published') AND file_count > 0 AND has_metadata = 1"
        )
        return {r[0] for r in rows}

    # --- create intent ----------------------------------------------------------------

    def begin_create(self, recid: str, *, run_id: str | None = None) -> str:
        """Note, durably, that a remote create is about to be sent; returns a client token.

        Call this *before* the POST that creates a draft, and ``set_remote`` right after it
        answers (or ``abandon_create`` if it certainly created nothing, e.g. a 4xx). While
        ``create_pending`` is set, a later run must search the target for this recid (the
        token may help) before creating again.
        """
        recid = str(recid)
        token = uuid.uuid4().hex
        with self._tx(durable=True) as c:
            c.execute(
                "INSERT INTO records (recid, updated_at) VALUES (?, ?) ON CONFLICT (recid) DO NOTHING",
                (recid, _now()),
            )
            c.execute(
                "UPDATE records SET create_token = ?, create_started_at = ?, create_pending = 1, updated_at = ?, "
                "run_id = coalesce(?, run_id) WHERE recid = ?",
                (token, _now(), _now(), run_id, recid),
            )
        return token

    def set_remote(self, recid: str, remote_id: str, state: str | None = None) -> None:
        """The target's id (and state: draft, published, ...) of this record; ends a create intent."""
        recid = str(recid)
        with self._tx(durable=True) as c:
            c.execute(
                "INSERT INTO records (recid, updated_at) VALUES (?, ?) ON CONFLICT (recid) DO NOTHING",
                (recid, _now()),
            )
            c.execute(
                "UPDATE records SET remote_id = ?, remote_state = ?, create_pending = 0, updated_at = ? "
                "WHERE recid = ?",
                (str(remote_id), state, _now(), recid),
            )

    def set_remote_state(self, recid: str, state: str) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE records SET remote_state = ?, updated_at = ? WHERE recid = ?", (state, _now(), str(recid))
            )

    def abandon_create(self, recid: str, error: BaseException | str | None = None) -> None:
        """The create certainly made nothing on the target (it was refused): forget the intent."""
        with self._tx() as c:
            c.execute(
                "UPDATE records SET create_pending = 0, last_error = coalesce(?, last_error), updated_at = ? "
                "WHERE recid = ?",
                (_err(error), _now(), str(recid)),
            )

    def pending_creates(self) -> list[RecordRow]:
        """Records whose create may or may not have happened (search the target first)."""
        rows = self._read(f"SELECT {_RECORD_COLS} FROM records WHERE create_pending = 1")
        return sorted((_record_row(r) for r in rows), key=lambda r: _recid_key(r.recid))

    # --- files ------------------------------------------------------------------------

    def set_files(self, recid: str, files: Iterable[tuple[str, int | None, Checksum | None]]) -> None:
        """Register a record's files ``(key, size, checksum)`` in one transaction (existing rows keep status).

        Also sets the record's ``file_count`` and ``bytes`` from the list.
        """
        recid = str(recid)
        items = list(files)
        now = _now()
        with self._tx() as c:
            c.execute(
                "INSERT INTO records (recid, updated_at) VALUES (?, ?) ON CONFLICT (recid) DO NOTHING", (recid, now)
            )
            c.executemany(
                "INSERT INTO files (recid, key, size, checksum, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (recid, key) DO UPDATE SET size = coalesce(excluded.size, size), "
                "checksum = coalesce(excluded.checksum, checksum)",
                ((recid, k, s, _text(m), now) for k, s, m in items),
            )
            c.execute(
                "UPDATE records SET file_count = ?, bytes = ? WHERE recid = ?",
                (len(items), sum(s or 0 for _, s, _ in items), recid),
            )

    def set_file(
        self,
        recid: str,
        key: str,
        status: str,
        *,
        size: int | None = None,
        checksum: Checksum | None = None,
        error: BaseException | str | None = None,
        attempt: bool = False,
    ) -> None:
        """Set one file's status (creating the row and its record row if needed)."""
        recid = str(recid)
        if status not in FILE_STATUSES:
            raise LedgerError(
                f"unknown file status {status!r} (one of {', '.join(FILE_STATUSES)})", recid=recid, file=key
            )
        now = _now()
        with self._tx() as c:
            c.execute(
                "INSERT INTO records (recid, updated_at) VALUES (?, ?) ON CONFLICT (recid) DO NOTHING", (recid, now)
            )
            c.execute(
                "INSERT INTO files (recid, key, size, checksum, status, attempts, last_error, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (recid, key) DO UPDATE SET "
                "size = coalesce(excluded.size, size), checksum = coalesce(excluded.checksum, checksum), "
                "status = excluded.status, "
                "attempts = attempts + ?, last_error = excluded.last_error, updated_at = excluded.updated_at",
                (recid, key, size, _text(checksum), status, 1 if attempt else 0, _err(error), now, 1 if attempt else 0),
            )

    def correct_from_target(
        self,
        recid: str,
        remote_id: str,
        files: Iterable[tuple[str, int | None, Checksum | None]],
        *,
        state: str = "published",
    ) -> RecordRow:
        """The target holds the record complete, every file verified there: that replaces what
        this ledger believed (a file marked failed, an open create intent) in one transaction.

        The target is the truth: another run (other --dest, other machine) may have finished
        a record this ledger saw fail; without this every later run would refuse to mark it
        done. Rows of files not in ``files`` go; the record ends ``published`` (``state``).
        """
        recid = str(recid)
        items = list(files)
        now = _now()
        with self._tx(durable=True) as c:
            c.execute(
                "INSERT INTO records (recid, updated_at) VALUES (?, ?) ON CONFLICT (recid) DO NOTHING", (recid, now)
            )
            keys = [k for k, _, _ in items]
            marks = ", ".join("?" for _ in keys)
            c.execute(f"DELETE FROM files WHERE recid = ? AND key NOT IN ({marks})", (recid, *keys))
            c.executemany(
                "INSERT INTO files (recid, key, size, checksum, status, updated_at) VALUES (?, ?, ?, ?, 'verified', ?) "
                "ON CONFLICT (recid, key) DO UPDATE SET size = coalesce(excluded.size, size), "
                "checksum = coalesce(excluded.checksum, checksum), status = 'verified', last_error = NULL, "
                "updated_at = excluded.updated_at",
                ((recid, k, size, _text(m), now) for k, size, m in items),
            )
            c.execute(
                "UPDATE records SET remote_id = ?, remote_state = ?, create_pending = 0, file_count = ?, bytes = ?, "
                "has_metadata = 1, updated_at = ? WHERE recid = ?",
                (str(remote_id), state, len(items), sum(size or 0 for _, size, _ in items), now, recid),
            )
            self._check_ok(c, recid, "published")
            c.execute("UPDATE records SET status = 'published', last_error = NULL WHERE recid = ?", (recid,))
        row = self.get(recid)
        assert row is not None
        return row

    def file_status(self, recid: str, key: str | None = None) -> list[FileRow]:
        """The record's file rows (by key), or just ``key``'s (an empty list when unknown)."""
        if key is None:
            rows = self._read(f"SELECT {_FILE_COLS} FROM files WHERE recid = ? ORDER BY key", (str(recid),))
        else:
            rows = self._read(f"SELECT {_FILE_COLS} FROM files WHERE recid = ? AND key = ?", (str(recid), key))
        return [_file_row(r) for r in rows]

    # --- overview ---------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts per record and file status, ok records/bytes, open create intents."""
        records = {s: 0 for s in RECORD_STATUSES}
        for status, n in self._read("SELECT status, count(*) FROM records GROUP BY status"):
            records[status] = n
        files = {s: 0 for s in FILE_STATUSES}
        for status, n in self._read("SELECT status, count(*) FROM files GROUP BY status"):
            files[status] = n
        ok, ok_bytes = self._read(
            "SELECT count(*), coalesce(sum(bytes), 0) FROM records "
            "WHERE status IN ('uploaded', 'published') AND file_count > 0 AND has_metadata = 1"
        )[0]
        pending = self._read("SELECT count(*) FROM records WHERE create_pending = 1")[0][0]
        return {
            "records": records,
            "files": files,
            "records_total": sum(records.values()),
            "files_total": sum(files.values()),
            "ok": ok,
            "ok_bytes": ok_bytes,
            "create_pending": pending,
        }


def _recid_key(recid: str) -> tuple[int, int, str]:
    return (0, int(recid), "") if recid.isdigit() else (1, 0, recid)


def _lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise LedgerLocked(
            f"ledger {path} is in use by {holder}; another run on the same ledger is going on "
            "(wait for it, or point this run at another ledger)"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise LedgerError(f"cannot lock ledger {path}: {exc.strerror}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
