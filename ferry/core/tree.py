"""The files of a dataset folder, as a manifest sees them.

A scan lists regular files under ``root`` by POSIX relative path, sorted, with what the
local state keys on (size, mtime_ns, inode). Left out: the manifest itself, our own state
folder ``.ferry/`` at the top, dotfiles (unless asked for) and ``--exclude`` globs. A glob
without ``/`` matches a name at any depth (``*.tmp``, ``__pycache__``); with ``/`` it
matches the whole relative path (``raw/2024/*``); a matching folder is not entered.

Symbolic links: one that resolves inside the folder to a file is listed under its own
name with the target's content; one to a folder inside is not followed (its files are
listed under their real path already, and following could loop); one that leaves the
folder, or is broken, is refused: an archive must not carry files from elsewhere.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat as statmod
from dataclasses import dataclass, field
from pathlib import Path

from ferry.core.errors import InputError, UnsafePathError
from ferry.core.model import safe_relpath

log = logging.getLogger(__name__)

STATE_DIR = ".ferry"  # our own state (archive-state.sqlite, partial downloads): never data
# The archive's manifest (archive/manifest.py names it from here): a scan never lists it as data.
MANIFEST_NAME = "djarchive-manifest.csv"


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class TreeFile:
    path: str  # POSIX relative path (the manifest's third field)
    full: Path  # where it is read from
    stat: FileStat


@dataclass(frozen=True)
class ScanOptions:
    excludes: tuple[str, ...] = ()
    include_dotfiles: bool = False
    skip: frozenset[str] = field(default_factory=frozenset)  # relative paths never listed (an --output inside)
    # Top-level names that are not data: the manifest (a target lists it as a file like any other).
    reserved: frozenset[str] = frozenset({MANIFEST_NAME})


def _excluded(rel: str, name: str, opts: ScanOptions) -> bool:
    for pattern in opts.excludes:
        subject = rel if "/" in pattern else name
        if fnmatch.fnmatchcase(subject, pattern.strip("/")):
            return True
    return False


def scan_tree(root: Path, opts: ScanOptions | None = None) -> list[TreeFile]:
    """Every file a manifest of ``root`` lists, sorted by path. Blocking: call from a thread."""
    try:
        real_root = root.resolve(strict=True)
    except FileNotFoundError:
        raise InputError(f"no such folder: {root}") from None
    if not real_root.is_dir():
        raise InputError(f"not a folder: {root}")
    out: list[TreeFile] = []
    _walk(root, real_root, "", opts or ScanOptions(), out)
    out.sort(key=lambda f: f.path)
    return out


def _walk(top: Path, real_root: Path, prefix: str, opts: ScanOptions, out: list[TreeFile]) -> None:
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"cannot list folder {top}: {exc.strerror or exc}") from exc
    for entry in entries:
        name = entry.name
        rel = f"{prefix}{name}"
        if not prefix and (name == STATE_DIR or name in opts.reserved):
            continue
        if rel in opts.skip or (name.startswith(".") and not opts.include_dotfiles) or _excluded(rel, name, opts):
            continue
        full = Path(entry.path)
        if entry.is_symlink():
            _symlink(full, rel, real_root, out)
        elif entry.is_dir(follow_symlinks=False):
            _walk(full, real_root, rel + "/", opts, out)
        elif entry.is_file(follow_symlinks=False):
            out.append(TreeFile(_checked(rel), full, FileStat.of(entry.stat(follow_symlinks=False))))
        else:
            log.warning("%s: not a regular file (device, socket or pipe), left out", rel)


def _symlink(full: Path, rel: str, real_root: Path, out: list[TreeFile]) -> None:
    target = Path(os.path.realpath(full))
    if target != real_root and real_root not in target.parents:
        raise UnsafePathError(f"symbolic link {rel} points outside the folder (to {target})", file=rel)
    try:
        st = target.stat()
    except OSError:
        raise InputError(f"symbolic link {rel} is broken (points to {target})", file=rel) from None
    if statmod.S_ISDIR(st.st_mode):
        log.info("%s: link to a folder inside the dataset, not followed", rel)
    elif statmod.S_ISREG(st.st_mode):
        out.append(TreeFile(_checked(rel), full, FileStat.of(st)))


def _checked(rel: str) -> str:
    safe = safe_relpath(rel, where="dataset folder")
    if safe != rel:  # pragma: no cover - scandir names have no empty or '.' parts
        raise UnsafePathError(f"file name {rel!r} cannot be stored as a path", file=rel)
    return rel
