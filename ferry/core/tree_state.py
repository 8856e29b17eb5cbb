"""Local state of a dataset folder: checksums known for (path, size, mtime_ns, inode).

Lives in ``DIR/.ferry/archive-state.sqlite``. A re-run over an unchanged tree finds every
file here and reads none of them; any change of size, mtime or inode (an edit, a
replacing copy or rename) misses and the file is hashed again. ``--rehash`` ignores it.

A file whose mtime is less than ``RACY_NS`` before its hashing started is not stored: it
could still be written to within the same timestamp tick (coarse kernel clocks, network
file systems) and keep its mtime, so the stored checksum would lie next time (git calls
this the racy-clean problem). Files we wrote ourselves (downloads) are stored always:
their bytes are the ones we hashed as we wrote them.

A file we wrote whose bytes may still be only in the page cache is stored with the
machine's boot id (``put(..., synced=False)``): the page cache survives a kill -9 but
not a power cut or a crash of the machine, so such an entry is trusted only while the
machine runs the boot that wrote it, and a run after a reboot hashes the file again.
``settle`` clears the tag once a sync has covered the file. Where no boot id is known
(not Linux) nothing is stored unsynced.

When the state cannot be written (a read-only folder) the run goes on without it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from pathlib import Path

import orjson

from ferry.core.tree import STATE_DIR, FileStat

log = logging.getLogger(__name__)

STATE_NAME = "archive-state.sqlite"
RACY_NS = 1_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY,  -- file-system bytes: a name need not be UTF-8
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    checksums TEXT NOT NULL,
    boot TEXT  -- NULL: on disk when stored; else the boot id it is trusted under (module doc)
)
"""
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str | None:
    """This boot of the machine (Linux: a random id made at each boot); None elsewhere."""
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def state_path(root: Path) -> Path:
    return root / STATE_DIR / STATE_NAME


class TreeState:
    """Checksums by path, valid while the file's (size, mtime_ns, inode) are unchanged.

    Use from one thread at a time (it may be handed to a worker thread and back);
    ``save`` commits. ``path=None``: memory only.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db = self._open(path)
        self._dirty = 0
        self.boot = boot_id()

    @staticmethod
    def _open(path: Path | None) -> sqlite3.Connection:
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(path, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                # A kill -9 loses nothing committed in WAL mode with NORMAL; only a power cut
                # may lose the last commits, and then files are just hashed again.
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_SCHEMA)
                if "boot" not in {r[1] for r in db.execute("PRAGMA table_info(files)")}:
                    db.execute("ALTER TABLE files ADD COLUMN boot TEXT")  # a state from before the tag
                db.commit()
                return db
            except (OSError, sqlite3.Error) as exc:
                log.warning("local state %s not usable (%s): checksums are not kept for the next run", path, exc)
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.execute(_SCHEMA)
        return db

    @classmethod
    def for_tree(cls, root: Path) -> TreeState:
        return cls(state_path(root))

    def lookup(self, rel: str, st: FileStat, algorithms: tuple[str, ...]) -> dict[str, str] | None:
        """The known checksums when the file is unchanged, all of ``algorithms`` are known
        and the entry is not an unsynced one of an earlier boot (module doc)."""
        row = self._db.execute(
            "SELECT size, mtime_ns, inode, checksums, boot FROM files WHERE path = ?", (_key(rel),)
        ).fetchone()
        if row is None or (row[0], row[1], row[2]) != (st.size, st.mtime_ns, st.inode):
            return None
        if row[4] is not None and row[4] != self.boot:
            return None
        known: dict[str, str] = orjson.loads(row[3])
        if any(a not in known for a in algorithms):
            return None
        return known

    def put(
        self,
        rel: str,
        st: FileStat,
        checksums: dict[str, str],
        *,
        hashed_at_ns: int | None = None,
        synced: bool = True,
    ) -> bool:
        """Remember ``checksums``; ``hashed_at_ns``: when reading began (None: we wrote it);
        ``synced=False``: we wrote it and no sync has covered it yet (needs a boot id).

        Returns False when the entry is too fresh to be trusted later (see the module doc).
        """
        if hashed_at_ns is not None and st.mtime_ns > hashed_at_ns - RACY_NS:
            self.forget(rel)
            return False
        if not synced and self.boot is None:
            raise ValueError("an unsynced entry needs the boot id, and this machine has none")
        self._db.execute(
            "INSERT OR REPLACE INTO files (path, size, mtime_ns, inode, checksums, boot) VALUES (?, ?, ?, ?, ?, ?)",
            (
                _key(rel),
                st.size,
                st.mtime_ns,
                st.inode,
                orjson.dumps(dict(sorted(checksums.items()))).decode(),
                None if synced else self.boot,
            ),
        )
        self._dirty += 1
        if self._dirty >= 500:
            self.save()  # a kill loses at most a few hundred files' work
        return True

    def unsynced(self) -> list[bytes]:
        """The entries stored unsynced in this boot (keys for ``settle``)."""
        if self.boot is None:
            return []
        return [p for (p,) in self._db.execute("SELECT path FROM files WHERE boot = ?", (self.boot,))]

    def settle(self, keys: list[bytes]) -> None:
        """A sync that began after ``keys`` were stored (``unsynced``) has ended: they are on disk."""
        self._db.executemany("UPDATE files SET boot = NULL WHERE path = ? AND boot = ?", ((k, self.boot) for k in keys))
        self._dirty += len(keys)

    def forget(self, rel: str) -> None:
        self._db.execute("DELETE FROM files WHERE path = ?", (_key(rel),))
        self._dirty += 1

    def prune(self, keep: set[str]) -> None:
        """Drop entries of files no longer in the tree."""
        wanted = {_key(p) for p in keep}
        gone = [p for (p,) in self._db.execute("SELECT path FROM files") if p not in wanted]
        self._db.executemany("DELETE FROM files WHERE path = ?", ((p,) for p in gone))
        self._dirty += len(gone)

    def save(self) -> None:
        try:
            self._db.commit()
        except sqlite3.Error as exc:
            log.warning("local state %s not saved: %s", self.path, exc)
        self._dirty = 0

    def close(self) -> None:
        self.save()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def __enter__(self) -> TreeState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def now_ns() -> int:
    return time.time_ns()


def _key(rel: str) -> bytes:
    return rel.encode("utf-8", "surrogateescape")
