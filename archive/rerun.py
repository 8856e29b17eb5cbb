"""A re-run of a complete download: no network, no file read, no S3 client imported.

A revision is immutable once complete (its manifest is in the archive), so when a
download of it finished with every file verified, ``mark_complete`` writes
``DIR/.ferry/archive-complete.json``: which archive and revision, the sha256 of the
manifest it wrote to DIR, and what the archive held beyond the manifest (reported again
on a re-run without asking). ``complete_rerun`` accepts a re-run only when

- the marker names this archive and revision, and DIR's manifest has the recorded sha256
  (one small file of ours, read; none of the dataset's files is);
- every manifest row is in DIR with the size, mtime and inode the local state recorded
  for it with that row's sha256 (the state writes an entry for a fetched file only after
  a sync made it durable, or tagged unsynced with the boot id, which ``lookup`` trusts in
  that boot only: after a reboot this check fails and the full path hashes those files,
  see ``archive.durability``).

Anything else (no marker, another revision, a file edited, replaced or missing, an
unreadable state) returns None and the caller runs the full download, which finds and
fetches what differs. This module imports only what the check needs: the CLI imports it
before deciding whether the targets' code (aiobotocore: ~0.2 s) is needed at all.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from archive.manifest import MANIFEST_NAME, parse_manifest
from ferry.core.atomic import atomic_write_bytes
from ferry.core.errors import FerryError
from ferry.core.tree import STATE_DIR, ScanOptions, scan_tree
from ferry.core.tree_state import TreeState, state_path

log = logging.getLogger(__name__)

MARKER_NAME = "archive-complete.json"
_VERSION = 1


@dataclass
class DownloadResult:
    revision: str
    files: int = 0
    kept: int = 0
    fetched: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    missing_in_archive: list[str] = field(default_factory=list)
    unlisted_in_archive: list[str] = field(default_factory=list)
    local_extra: list[str] = field(default_factory=list)
    hashed_local: int = 0
    offline: bool = False  # a re-run decided from the marker and the state alone

    @property
    def ok(self) -> bool:
        return not (self.failed or self.missing_in_archive)


def marker_path(root: Path) -> Path:
    return root / STATE_DIR / MARKER_NAME


def mark_complete(root: Path, archive: str, recid: str, manifest: bytes, unlisted: list[str]) -> None:
    """Record that ``recid`` of ``archive`` is in ``root``, complete and verified (one
    revision per folder: the manifest in it is one revision's)."""
    record = {
        "version": _VERSION,
        "archive": archive,
        "revision": recid,
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "unlisted_in_archive": unlisted,
    }
    try:
        atomic_write_bytes(marker_path(root), orjson.dumps(record), tmp_dir=root / STATE_DIR / "tmp")
    except OSError as exc:  # as the state: a folder we cannot write to only costs the next run time
        log.warning("completion marker %s not written (%s): a re-run will ask the archive", marker_path(root), exc)


def forget_complete(root: Path) -> None:
    """A download is starting: until it ends verified, the folder is not a complete one."""
    marker_path(root).unlink(missing_ok=True)


def complete_rerun(root: Path, archive: str, recid: str) -> DownloadResult | None:
    """The result of re-running a complete download of ``recid`` into ``root``, from the
    marker and the state alone; None when the full download must run (module doc)."""
    try:
        record = orjson.loads(marker_path(root).read_bytes())
        if not (
            isinstance(record, dict)
            and record.get("version") == _VERSION
            and record.get("archive") == archive
            and record.get("revision") == recid
        ):
            return None
        data = (root / MANIFEST_NAME).read_bytes()
        if hashlib.sha256(data).hexdigest() != record.get("manifest_sha256"):
            return None
        manifest = parse_manifest(data, where=f"{root / MANIFEST_NAME}")
        if not state_path(root).is_file():
            return None  # opening the state would create an empty one
        local = scan_tree(root, ScanOptions(include_dotfiles=True))
        present = {f.path: f for f in local}
        with TreeState.for_tree(root) as state:
            for row in manifest:
                f = present.get(row.path)
                known = None if f is None else state.lookup(row.path, f.stat, ("sha256",))
                if known is None or known["sha256"] != row.sha256:
                    return None
    except (OSError, ValueError, FerryError, sqlite3.Error):
        return None  # unreadable or odd: the full path decides, and says why if it must
    unlisted = record.get("unlisted_in_archive")
    return DownloadResult(
        recid,
        files=len(manifest),
        kept=len(manifest),
        unlisted_in_archive=[str(k) for k in unlisted] if isinstance(unlisted, list) else [],
        local_extra=[f.path for f in local if f.path not in manifest],
        offline=True,
    )
