"""djarchive's manifest: ``DIR/djarchive-manifest.csv``, one row per file, no header.

Each row is ``"size","sha256","path"`` with the path relative to DIR in POSIX form. We
write it as proper CSV (every field quoted, an inner quote doubled, ``\\n`` line ends), so
a name holding a comma, a quote, a newline or any unicode round-trips. For plain names
the bytes are exactly what djarchive writes, so its users switch without converting.

djarchive reads a manifest by stripping each line and splitting it on commas after
dropping every quote. A name that this cannot read back (a comma, quote, line break or
trailing white space in it, or bytes that are not UTF-8) is still written correctly
here, and ``djarchive_unreadable`` says why, so the caller can warn. Reading accepts
djarchive's own files as they are: quoted or unquoted fields, ``\\r\\n`` line ends.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ferry.core.atomic import atomic_write_bytes
from ferry.core.errors import InputError
from ferry.core.model import safe_relpath
from ferry.core.tree import MANIFEST_NAME as MANIFEST_NAME  # re-exported: the archive's name for it

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Names are file-system bytes; ones that are not UTF-8 travel as lone surrogates
# (os.fsdecode) and are written back as the same bytes.
_ENCODING, _ERRORS = "utf-8", "surrogateescape"


@dataclass(frozen=True, order=True)
class ManifestRow:
    path: str  # POSIX, relative to the dataset folder, safe (ferry.core.model.safe_relpath)
    size: int
    sha256: str  # lowercase hex


class ManifestError(InputError):
    """A manifest cannot be read: bad row, bad value, duplicate path (names file and line)."""


class Manifest:
    """The rows of one manifest, by path; iterates in path order (the order written)."""

    def __init__(self, rows: Iterable[ManifestRow] = ()) -> None:
        self._rows: dict[str, ManifestRow] = {}
        for row in rows:
            if row.path in self._rows:
                raise ManifestError(f"the path {row.path!r} appears twice", file=row.path)
            self._rows[row.path] = row

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(sorted(self._rows.values()))

    def __contains__(self, path: object) -> bool:
        return path in self._rows

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifest) and self._rows == other._rows

    def __hash__(self) -> int:
        return hash(tuple(self))

    def get(self, path: str) -> ManifestRow | None:
        return self._rows.get(path)

    @property
    def total_size(self) -> int:
        return sum(r.size for r in self._rows.values())

    def to_bytes(self) -> bytes:
        buf = io.StringIO(newline="")
        writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for row in self:
            writer.writerow((row.size, row.sha256, row.path))
        return buf.getvalue().encode(_ENCODING, _ERRORS)


def djarchive_unreadable(path: str) -> str | None:
    """Why djarchive's reader would get ``path`` wrong, or None when it reads it back."""
    if "," in path:
        return "it contains a comma"
    if '"' in path:
        return "it contains a double quote"
    if "\n" in path or "\r" in path:
        return "it contains a line break"
    if path != path.rstrip():
        return "it ends with white space"
    try:
        path.encode(_ENCODING)
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    return None


def shown(path: str) -> str:
    """``path`` for a one-line message: quoted when it holds a line break or control code."""
    return repr(path) if any(ord(c) < 32 or ord(c) == 127 for c in path) else path


def parse_manifest(data: bytes, *, where: str) -> Manifest:
    """Parse manifest bytes; ``where`` names the manifest in errors (a path or an object key)."""
    text = data.decode(_ENCODING, _ERRORS)
    if text.startswith("\ufeff"):
        text = text[1:]  # a BOM left by an editor: not part of the first size
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: dict[str, tuple[int, ManifestRow]] = {}
    try:
        for fields in reader:
            line = reader.line_num
            if not fields or fields == [""]:
                continue  # a blank line (a trailing one is common in hand-edited files)
            row = _row(fields, where=where, line=line)
            if row.path in rows:
                first = rows[row.path][0]
                raise ManifestError(
                    f"{where} line {line}: the path {row.path!r} is listed twice (first on line {first})",
                    file=row.path,
                )
            rows[row.path] = (line, row)
    except csv.Error as exc:
        raise ManifestError(f"{where} line {reader.line_num}: not valid CSV: {exc}") from exc
    return Manifest(r for _, r in rows.values())


def _row(fields: list[str], *, where: str, line: int) -> ManifestRow:
    if len(fields) != 3:
        raise ManifestError(f"{where} line {line}: expected 3 fields (size, sha256, path), found {len(fields)}")
    size_text, sha, path = fields[0].strip(), fields[1].strip().lower(), fields[2]
    if not size_text.isascii() or not size_text.isdigit():
        raise ManifestError(f"{where} line {line}: size {fields[0]!r} is not a whole number of bytes")
    if not _SHA256.match(sha):
        raise ManifestError(f"{where} line {line}: {fields[1]!r} is not a sha256 (64 hex digits)")
    try:
        safe = safe_relpath(path)
    except InputError as exc:
        raise ManifestError(f"{where} line {line}: {exc.message}") from None
    if safe != path:
        # A path we would store under another name ("a//b", "./a") breaks verification.
        raise ManifestError(f"{where} line {line}: path {path!r} is not in normal form (would be {safe!r})")
    return ManifestRow(path=path, size=int(size_text), sha256=sha)


def read_manifest(path: Path) -> Manifest:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {path}") from None
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from exc
    return parse_manifest(data, where=str(path))


def write_manifest(manifest: Manifest, path: Path) -> None:
    """Write atomically: a reader (or a crash) sees the old manifest or the new one."""
    atomic_write_bytes(path, manifest.to_bytes())


def manifest_path(root: Path, output: str | os.PathLike[str] | None = None) -> Path:
    return Path(output) if output is not None else root / MANIFEST_NAME
