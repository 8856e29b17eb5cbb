"""The source conformance suite (``download.base.Source``), joined by every source.

    class TestMySource(SourceSuite):
        @pytest.fixture
        def backend(self, my_server) -> SourceBackend:
            return SourceBackend("mine", make=lambda: MySource(...), known="42",
                                 files={"a.txt": 5}, unknown="43")

Cases check what the download engine and the pipeline rely on from any source: a resolved
record has safe, unique keys, a size and at least one checksum per file; the bytes its
URIs serve, fetched through the transport (the engine, and the bare fetcher), have the
declared size and checksums; an unknown id is a ferry error naming it; a file that cannot
be fetched verified is an error naming the record and the file; resolving twice (or twice
at once) gives equal records; ``close`` may be called any number of times.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from download.base import Source
from download.engine import Downloader
from download.sources import SOURCES, split_spec, staging_name
from download.transport import Transport
from ferry.core.checksums import HEX_LENGTHS, MultiHasher
from ferry.core.config import Limits
from ferry.core.errors import FerryError, InputError, RecordNotFound
from ferry.core.model import Record, safe_relpath

# Few, quick retries: a case that expects a failure should not wait out real backoffs.
LIMITS = Limits(retries=1, backoff_base=0.01, backoff_max=0.05)


@dataclass
class SourceBackend:
    """How the suite opens one source and what it should find there."""

    name: str
    make: Callable[[], Source]
    known: str  # an id the source resolves, as its resolve() takes it
    files: Mapping[str, int]  # the known record's files: key -> size
    unknown: str  # an id the source does not have
    transport: Callable[[], Transport] = lambda: Transport.create("root", limits=LIMITS)
    spec: str | None = None  # the known record as named on the command line (split_spec)
    registry: str | None = None  # the SOURCES name of this source (Record.source says it)
    broken: str | None = None  # an id that resolves but one file cannot be fetched verified...
    broken_file: str | None = None  # ...this one
    spoil: Callable[[Record], None] | None = None  # damages it after resolve (else it is bad already)
    cannot: frozenset[str] = field(default_factory=frozenset)


class _MemorySink:
    """A ``ChunkSink`` that keeps the chunks in memory (small files only)."""

    def __init__(self) -> None:
        self.chunks: dict[int, bytes] = {}

    async def reserve(self, nbytes: int) -> None:
        return None

    def release(self, nbytes: int) -> None:
        return None

    async def put(self, offset: int, data: bytes, *, reserved: int) -> None:
        self.chunks[offset] = bytes(data)

    def joined(self) -> bytes:
        out = bytearray()
        for offset in sorted(self.chunks):
            assert offset == len(out), f"a gap or an overlap at byte {offset}"
            out += self.chunks[offset]
        return bytes(out)


def _check_bytes(data: bytes, record: Record, key: str) -> None:
    (entry,) = [f for f in record.files if f.key == key]
    assert len(data) == entry.size, f"{key}: {len(data)} bytes, declared {entry.size}"
    hasher = MultiHasher(tuple(c.algorithm for c in entry.checksums))
    hasher.update(data)
    got = hasher.hexdigests()
    for c in entry.checksums:
        assert got[c.algorithm] == c.value, f"{key}: {c.algorithm} {got[c.algorithm]}, declared {c.value}"


class SourceSuite:
    """Subclass in a test module and provide a ``backend`` fixture."""

    @pytest.fixture
    async def source(self, backend: SourceBackend) -> AsyncIterator[Source]:
        made = backend.make()
        try:
            yield made
        finally:
            await made.close()

    @staticmethod
    def needs(backend: SourceBackend, ability: str) -> None:
        if ability in backend.cannot:
            pytest.skip(f"{backend.name} cannot {ability}")

    # --- resolution ---------------------------------------------------------------------

    async def test_resolve_gives_safe_keys_sizes_and_checksums(self, source: Source, backend: SourceBackend) -> None:
        record = await source.resolve(backend.known)
        assert record.recid and safe_relpath(record.recid) == record.recid, "the recid names the record folder"
        keys = [f.key for f in record.files]
        assert len(set(keys)) == len(keys), f"keys repeat: {keys}"
        assert {f.key: f.size for f in record.files} == dict(backend.files)
        for f in record.files:
            assert safe_relpath(f.key) == f.key, f"unsafe or unnormalised key {f.key!r}"
            assert f.uri, f"{f.key} has no URI"
            assert f.checksums, f"{f.key} has no checksum"
            for c in f.checksums:
                assert c.algorithm in HEX_LENGTHS and len(c.value) == HEX_LENGTHS[c.algorithm], c
        assert record.total_size == sum(backend.files.values())
        if backend.registry is not None:
            assert backend.registry in SOURCES and record.source == backend.registry

    async def test_the_spec_names_this_source(self, backend: SourceBackend) -> None:
        if backend.spec is None or backend.registry is None:
            pytest.skip(f"{backend.name} declares no command-line spec")
        assert split_spec(backend.spec)[0] == backend.registry

    async def test_resolve_twice_gives_equal_records(self, source: Source, backend: SourceBackend) -> None:
        first = await source.resolve(backend.known)
        again = await source.resolve(backend.known)
        assert again == first
        both = await asyncio.gather(source.resolve(backend.known), source.resolve(backend.known))
        assert both[0] == both[1] == first

    async def test_unknown_id_is_an_error_naming_it(self, source: Source, backend: SourceBackend) -> None:
        with pytest.raises((RecordNotFound, InputError)) as info:
            await source.resolve(backend.unknown)
        assert isinstance(info.value, FerryError)
        assert info.value.recid is not None
        shown = str(info.value)
        assert backend.unknown.strip().rsplit(":", 1)[-1] in shown, shown

    async def test_close_is_idempotent(self, backend: SourceBackend) -> None:
        unused = backend.make()
        await unused.close()
        await unused.close()
        used = backend.make()
        await used.resolve(backend.known)
        await used.close()
        await used.close()

    # --- the bytes ----------------------------------------------------------------------

    async def test_engine_download_matches_declared_sizes_and_checksums(
        self, source: Source, backend: SourceBackend, tmp_path: Path
    ) -> None:
        record = await source.resolve(backend.known)
        async with Downloader(backend.transport(), limits=LIMITS) as downloader:
            result = await downloader.download_record(record, tmp_path / "dl")
        assert result.ok, result.error_lines()
        assert result.record_dir == tmp_path / "dl" / staging_name(record)  # DEST/<recid> for CERN
        for f in record.files:
            _check_bytes((result.record_dir / f.key).read_bytes(), record, f.key)

    async def test_fetcher_serves_the_declared_bytes(self, source: Source, backend: SourceBackend) -> None:
        record = await source.resolve(backend.known)
        transport = backend.transport()
        try:
            for f in sorted(record.files, key=lambda f: f.size or 0)[:3]:  # the small ones suffice
                url = transport.url_for(f.uri)
                sink = _MemorySink()
                size = await transport.fetcher_for(url).fetch(url, sink, start=0, expected_size=f.size)
                assert size == f.size
                _check_bytes(sink.joined(), record, f.key)
        finally:
            await transport.close()

    async def test_a_bad_file_is_an_error_naming_record_and_file(
        self, source: Source, backend: SourceBackend, tmp_path: Path
    ) -> None:
        if backend.broken is None or backend.broken_file is None:
            pytest.skip(f"{backend.name} declares no record with a bad file")
        record = await source.resolve(backend.broken)
        if backend.spoil is not None:
            backend.spoil(record)
        async with Downloader(backend.transport(), limits=LIMITS) as downloader:
            result = await downloader.download_record(record, tmp_path / "dl")
        assert not result.ok
        assert [f.key for f in result.failures] == [backend.broken_file]
        assert not (result.record_dir / backend.broken_file).exists(), "an unverified file under its final name"
        (line,) = result.error_lines()
        assert record.recid in line and backend.broken_file in line, line
        others = [f.key for f in record.files if f.key != backend.broken_file]
        assert all((result.record_dir / k).exists() for k in others), "the other files still complete"
