"""The small protocols of the download side: a source resolves records, a fetcher moves bytes.

A ``Source`` turns a recid into a ``ferry.core.model.Record`` (files, sizes, expected
checksums, safe keys). A ``ByteFetcher`` speaks one transfer protocol (``root``,
``https``): it copies the bytes of a URL from an offset into a ``ChunkSink`` and says how
big the remote file is. Everything else (where files go, resume, verification, retries,
manifests, stats) is policy and lives in ``download.engine``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ferry.core.model import Record


@runtime_checkable
class Source(Protocol):
    """Resolves recids into records."""

    async def resolve(self, recid: str) -> Record: ...

    async def close(self) -> None: ...


class ChunkSink(Protocol):
    """Where a fetcher puts bytes.

    ``reserve`` is awaited before a read is issued, so the bytes held in memory across all
    transfers stay bounded. Reservations must be taken in offset order: chunks that
    arrive early wait (holding theirs) for the gap before them, and the chunk filling the
    gap must already hold its own, or the transfer would wait forever. ``put`` writes a
    chunk at its offset (chunks may arrive in any order) and takes over its reservation,
    releasing it once the chunk is written and hashed (or on failure).
    """

    async def reserve(self, nbytes: int) -> None: ...

    def release(self, nbytes: int) -> None: ...

    async def put(self, offset: int, data: bytes, *, reserved: int) -> None: ...


class ByteFetcher(Protocol):
    """Copies one remote file (or its tail from ``start``) into a sink."""

    scheme: str

    async def fetch(self, url: str, sink: ChunkSink, *, start: int, expected_size: int | None) -> int:
        """Stream ``url`` from byte ``start`` to its end into ``sink``; return the remote size."""
        ...

    async def read_small(self, url: str, *, max_size: int) -> bytes:
        """Read a small metadata file (a file index) whole; refuse anything over ``max_size``."""
        ...

    async def close(self) -> None: ...
