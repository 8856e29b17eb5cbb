"""The ledger's connection: opening (lock, WAL, schema, migration), transactions, closing.

The guarantees (one transaction per method, durable create intents, one run per ledger)
are described in pipeline/ledger.py; this is the plumbing that gives them.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, Self, TypeVar

from ferry.core.errors import DiskFull, is_disk_full
from pipeline.ledger_schema import (
    RECORD_COLS,
    SCHEMA,
    SCHEMA_VERSION,
    LedgerError,
    LedgerLocked,
    RecordRow,
    record_row,
)

P = ParamSpec("P")
T = TypeVar("T")


class LedgerStore:
    """One SQLite file, locked for this process. Open with ``Ledger.open(path)``."""

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
            c.executescript(SCHEMA)
        with self._tx():
            version = self._meta("schema_version")
            if version is None:
                c.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif version.isdigit() and int(version) < SCHEMA_VERSION:
                _migrate(c, int(version))
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
        if self._readonly and version is not None and version.isdigit() and int(version) < SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self.path} has schema version {version}: open it once for writing to migrate it"
            )
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

    def __enter__(self) -> Self:
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

    # --- reads every part needs -------------------------------------------------------

    def get(self, recid: str) -> RecordRow | None:
        rows = self._read(f"SELECT {RECORD_COLS} FROM records WHERE recid = ?", (str(recid),))
        return record_row(rows[0]) if rows else None

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


def _migrate(c: sqlite3.Connection, version: int) -> None:
    """An older ledger brought to ``SCHEMA_VERSION`` in place, inside the opening transaction."""
    if version < 2:
        # md5 values were bare hex: they become "md5:<hex>" pairs in the renamed column.
        c.execute("ALTER TABLE files RENAME COLUMN md5 TO checksum")
        c.execute("UPDATE files SET checksum = 'md5:' || checksum WHERE checksum IS NOT NULL")
    if version < 3:
        c.execute("ALTER TABLE records ADD COLUMN create_legacy INTEGER NOT NULL DEFAULT 0")
        # Their tokens may be carried by nothing on the target (pipeline/ledger_schema.py).
        c.execute("UPDATE records SET create_legacy = 1 WHERE create_pending = 1")
    c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))


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
