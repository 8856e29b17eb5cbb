"""``--include GLOB`` / ``--exclude GLOB``: a one-off run over some of a record's files.

The same glob rule as ``ferry manifest --exclude``: a pattern with a ``/`` is matched
against the whole key (``raw/*.root``), one without against the file name (``*.root``
matches ``raw/a.root`` too). With any ``--include``, a file must match one of them;
then any ``--exclude`` it matches drops it. A record none of whose files is left is an
error naming the record and the patterns (never a record sent as if it had no files,
which would make it a metadata-only record).

Used by the commands that move a record's files (download, upload, bulk, copy) by
wrapping their source, and by ``ferry push`` on the files it selected.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from download.base import Source
from ferry.core.errors import InputError
from ferry.core.model import Record


@dataclass(frozen=True)
class FileFilter:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    def keeps(self, key: str) -> bool:
        if self.include and not any(_match(key, p) for p in self.include):
            return False
        return not any(_match(key, p) for p in self.exclude)

    def keys(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if self.keeps(k)]

    def describe(self) -> str:
        parts = [f"--include {p}" for p in self.include] + [f"--exclude {p}" for p in self.exclude]
        return " ".join(parts)

    def record(self, record: Record) -> Record:
        """The record with only the files kept; InputError when it had files and none is."""
        if not self or not record.files:
            return record
        kept = tuple(f for f in record.files if self.keeps(f.key))
        if not kept:
            raise InputError(
                f"none of the {len(record.files)} file(s) of record {record.recid} matches {self.describe()}",
                recid=record.recid,
            )
        return dataclasses.replace(record, files=kept)


def _match(key: str, pattern: str) -> bool:
    pattern = pattern.strip("/")
    subject = key if "/" in pattern else key.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(subject, pattern)


class FilteredSource:
    """A source whose records hold only the files a ``FileFilter`` keeps."""

    def __init__(self, inner: Source, keep: FileFilter) -> None:
        self.inner = inner
        self.keep = keep

    async def resolve(self, recid: str) -> Record:
        return self.keep.record(await self.inner.resolve(recid))

    async def close(self) -> None:
        await self.inner.close()


def filtered(source: Source, keep: FileFilter) -> Source:
    return FilteredSource(source, keep) if keep else source


def add_filter_flags(parser: argparse.ArgumentParser, what: str = "a record's files") -> None:
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help=f"only {what} matching GLOB (repeatable; a GLOB with '/' matches the whole path, else the name)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help=f"leave out {what} matching GLOB (repeatable; applied after --include)",
    )


def filter_from(args: argparse.Namespace) -> FileFilter:
    include = tuple(getattr(args, "include", None) or ())
    exclude = tuple(getattr(args, "exclude", None) or ())
    for pattern in (*include, *exclude):
        if not pattern.strip("/"):
            raise InputError(f"--include/--exclude: an empty pattern ({pattern!r}) matches nothing useful")
    return FileFilter(include, exclude)
