"""The ledger's per-file rows: registered, moved through their statuses, corrected from
the target (which is the truth when it holds the record complete)."""

from __future__ import annotations

from collections.abc import Iterable

from ferry.core.checksums import Checksum
from pipeline.ledger_schema import (
    FILE_COLS,
    FILE_STATUSES,
    FileRow,
    LedgerError,
    RecordRow,
    checksum_text,
    error_text,
    file_row,
    utc_now,
)
from pipeline.ledger_store import LedgerStore


class FileLedger(LedgerStore):
    """The file rows of each record."""

    def set_files(self, recid: str, files: Iterable[tuple[str, int | None, Checksum | None]]) -> None:
        """Register a record's files ``(key, size, checksum)`` in one transaction (existing rows keep status).

        Also sets the record's ``file_count`` and ``bytes`` from the list.
        """
        recid = str(recid)
        items = list(files)
        now = utc_now()
        with self._tx() as c:
            c.execute(
                "INSERT INTO records (recid, updated_at) VALUES (?, ?) ON CONFLICT (recid) DO NOTHING", (recid, now)
            )
            c.executemany(
                "INSERT INTO files (recid, key, size, checksum, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (recid, key) DO UPDATE SET size = coalesce(excluded.size, size), "
                "checksum = coalesce(excluded.checksum, checksum)",
                ((recid, k, s, checksum_text(m), now) for k, s, m in items),
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
        now = utc_now()
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
                (
                    recid,
                    key,
                    size,
                    checksum_text(checksum),
                    status,
                    1 if attempt else 0,
                    error_text(error),
                    now,
                    1 if attempt else 0,
                ),
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
        now = utc_now()
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
                ((recid, k, size, checksum_text(m), now) for k, size, m in items),
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
            rows = self._read(f"SELECT {FILE_COLS} FROM files WHERE recid = ? ORDER BY key", (str(recid),))
        else:
            rows = self._read(f"SELECT {FILE_COLS} FROM files WHERE recid = ? AND key = ?", (str(recid), key))
        return [file_row(r) for r in rows]
