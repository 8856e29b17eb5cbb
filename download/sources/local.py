"""A folder as a source (``dir:PATH`` or a path): its files as one record.

The record's id is the folder's name; each file's key is its POSIX path inside the folder
and its URI ``file:///...`` (fetched by ``download.fetchers.file``). Sizes and checksums
(sha256 and md5) are computed once while the tree is read and kept in the folder's local
state (``ferry.core.tree_state``, ``DIR/.ferry/archive-state.sqlite``): resolving an unchanged tree
again hashes nothing. The same rules as ``ferry manifest`` say which files belong (no
dotfiles, not the manifest, not ferry's state; links out of the folder refused).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from archive.build import digest_tree
from ferry.core.checksums import Checksum
from ferry.core.errors import NoFilesError, RecordNotFound
from ferry.core.model import FileEntry, Record
from ferry.core.tree import ScanOptions

if TYPE_CHECKING:
    from download.sources import SourceDeps

ALGORITHMS = ("sha256", "md5")


class LocalSource:
    def __init__(self, *, options: ScanOptions | None = None) -> None:
        self.options = options or ScanOptions()

    async def resolve(self, recid: str) -> Record:
        return await asyncio.to_thread(self._resolve, recid)

    def _resolve(self, recid: str) -> Record:
        root = Path(recid.removeprefix("dir:")).expanduser()
        if not root.is_dir():
            raise RecordNotFound(f"no folder {root}", recid=recid)
        digest = digest_tree(root, self.options, algorithms=ALGORITHMS)
        real = root.resolve()
        files = tuple(
            FileEntry(
                key=f.path,
                uri=(real / f.path).as_uri(),
                size=f.stat.size,
                checksums=tuple(Checksum(a, digest.checksums[f.path][a]) for a in ALGORITHMS),
            )
            for f in digest.files
        )
        if not files:
            raise NoFilesError(f"folder {root} holds no files", recid=real.name)
        return Record(recid=real.name, metadata={"path": str(real), "title": real.name}, files=files, source="dir")

    async def close(self) -> None:
        return None


def open_source(deps: SourceDeps) -> LocalSource:
    return LocalSource()
