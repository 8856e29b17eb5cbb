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

import os
import socket
import sqlite3
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from pipeline.ledger_files import FileLedger
from pipeline.ledger_schema import (
    FILE_STATUSES,
    OK_STATUSES,
    RECORD_COLS,
    RECORD_STATUSES,
    LedgerError,
    RecordRow,
    error_text,
    recid_key,
    record_row,
    utc_now,
)


class Ledger(FileLedger):
    """Progress of bulk runs in one SQLite file. Open with ``Ledger.open(path)``.

    Opening, locking and transactions: pipeline/ledger_store.py; file rows:
    pipeline/ledger_files.py; schema and row types: pipeline/ledger_schema.py.
    """

    # --- runs -------------------------------------------------------------------------

    def start_run(self, run_id: str, *, command: str | None = None, target: str | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO runs (run_id, started_at, host, pid, command, target) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, utc_now(), socket.gethostname(), os.getpid(), command, target),
            )

    def end_run(self, run_id: str, status: str, summary: dict[str, Any] | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET ended_at = ?, status = ?, summary = ? WHERE run_id = ?",
                (utc_now(), status, orjson.dumps(summary).decode() if summary is not None else None, run_id),
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
                (recid, utc_now(), file_count, bytes, 1 if has_metadata is None else int(has_metadata), run_id),
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
        now = utc_now()
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
                (recid, utc_now()),
            )
            self._update_facts(c, recid, file_count=file_count, bytes=bytes, has_metadata=has_metadata, run_id=run_id)
            if status in OK_STATUSES:
                self._check_ok(c, recid, status)
            c.execute(
                "UPDATE records SET status = ?, last_error = ?, updated_at = ?, attempts = attempts + ? "
                "WHERE recid = ?",
                (status, error_text(error), utc_now(), 1 if attempt else 0, recid),
            )
        row = self.get(recid)
        assert row is not None
        return row

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
        return sorted((r[0] for r in rows), key=recid_key)

    def ok_recids(self) -> set[str]:
        """Records that are done (status uploaded/published, with metadata; files checked, or none: metadata-only)."""
        rows = self._read(
            "SELECT recid FROM records "
            "WHERE status IN ('uploaded', 'published') AND file_count IS NOT NULL AND has_metadata = 1"
        )
        return {r[0] for r in rows}

    # --- create intent ----------------------------------------------------------------

    def begin_create(self, recid: str, *, run_id: str | None = None, token: str | None = None) -> str:
        """Note, durably, that a remote create is about to be sent; returns a client token
        (``token`` when given: a caller that writes the token into the record as its marker
        keeps the same one across tries, so every try's record carries the same marker).

        Call this *before* the POST that creates a draft, and ``set_remote`` right after it
        answers (or ``abandon_create`` if it certainly created nothing, e.g. a 4xx). While
        ``create_pending`` is set, a later run must search the target for this recid (the
        token may help) before creating again.
        """
        recid = str(recid)
        token = token or uuid.uuid4().hex
        with self._tx(durable=True) as c:
            c.execute(
                "INSERT INTO records (recid, updated_at) VALUES (?, ?) ON CONFLICT (recid) DO NOTHING",
                (recid, utc_now()),
            )
            c.execute(
                "UPDATE records SET create_token = ?, create_started_at = ?, create_pending = 1, create_legacy = 0, "
                "updated_at = ?, run_id = coalesce(?, run_id) WHERE recid = ?",
                (token, utc_now(), utc_now(), run_id, recid),
            )
        return token

    def set_remote(self, recid: str, remote_id: str, state: str | None = None) -> None:
        """The target's id (and state: draft, published, ...) of this record; ends a create intent."""
        recid = str(recid)
        with self._tx(durable=True) as c:
            c.execute(
                "INSERT INTO records (recid, updated_at) VALUES (?, ?) ON CONFLICT (recid) DO NOTHING",
                (recid, utc_now()),
            )
            c.execute(
                "UPDATE records SET remote_id = ?, remote_state = ?, create_pending = 0, create_legacy = 0, "
                "updated_at = ? WHERE recid = ?",
                (str(remote_id), state, utc_now(), recid),
            )

    def set_remote_state(self, recid: str, state: str) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE records SET remote_state = ?, updated_at = ? WHERE recid = ?", (state, utc_now(), str(recid))
            )

    def abandon_create(self, recid: str, error: BaseException | str | None = None) -> None:
        """The create certainly made nothing on the target (it was refused): forget the intent."""
        with self._tx() as c:
            c.execute(
                "UPDATE records SET create_pending = 0, create_legacy = 0, last_error = coalesce(?, last_error), "
                "updated_at = ? WHERE recid = ?",
                (error_text(error), utc_now(), str(recid)),
            )

    def pending_creates(self) -> list[RecordRow]:
        """Records whose create may or may not have happened (search the target first)."""
        rows = self._read(f"SELECT {RECORD_COLS} FROM records WHERE create_pending = 1")
        return sorted((record_row(r) for r in rows), key=lambda r: recid_key(r.recid))

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
            "WHERE status IN ('uploaded', 'published') AND file_count IS NOT NULL AND has_metadata = 1"
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
