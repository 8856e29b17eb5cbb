"""The target conformance suite (``upload.targets.base.Target``), joined by every target.

    class TestMyTarget(TargetSuite):
        @pytest.fixture
        def backend(self, my_server, tmp_path) -> TargetBackend:
            return TargetBackend("mine", make=lambda: MyTarget(...), body=..., query=...)

Cases check what the pipeline relies on, with the hash the target declares (never md5 by
assumption): put/list/verify; a corrupt or short upload is never accepted as complete;
re-putting an identical file is a no-op; errors name the record and the file; a dry run
makes no writing call (counted through a proxy around the target); a cancelled upload
leaves nothing that looks complete; publishing and versions where declared.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ferry.core.checksums import Checksum
from ferry.core.errors import Conflict, FerryError, TargetError, VerificationError
from upload.targets.base import Target

# The methods that change something on a target: a dry run must call none of them.
WRITING = frozenset({"create", "update_metadata", "put_file", "put_stream", "delete_file", "publish", "new_version"})


@dataclass
class TargetBackend:
    """How the suite builds and talks to one target."""

    name: str
    make: Callable[[], Target]
    body: Callable[[str], dict[str, Any]] = lambda recid: {}  # the profile's body for a recid
    query: Callable[[str], str] = lambda recid: recid  # the profile's find query
    cannot: frozenset[str] = field(default_factory=frozenset)  # e.g. {"new_version"}
    large: int = 200 * 1024  # a size the target sends in parts, when it can


def digest(algorithm: str, data: bytes) -> Checksum:
    if algorithm == "adler32":
        return Checksum("adler32", f"{zlib.adler32(data):08x}")
    return Checksum(algorithm, hashlib.new(algorithm, data).hexdigest())


def data_file(tmp: Path, name: str, size: int, seed: int = 0) -> tuple[Path, bytes]:
    """A file of ``size`` deterministic bytes (different per ``seed``)."""
    block = hashlib.sha256(f"{name}:{seed}".encode()).digest()
    data = (block * (size // len(block) + 1))[:size]
    path = tmp / "suite-data" / f"{seed}-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, data


class CountingTarget:
    """A proxy that counts calls per method and forwards everything to the real target."""

    def __init__(self, inner: Target) -> None:
        self._inner = inner
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return value(*args, **kwargs)

        return counted

    def writes(self) -> Mapping[str, int]:
        return {k: v for k, v in self.calls.items() if k in WRITING}


class TargetSuite:
    """Subclass in a test module and provide a ``backend`` fixture."""

    @pytest.fixture
    async def target(self, backend: TargetBackend) -> AsyncIterator[Target]:
        made = backend.make()
        try:
            yield made
        finally:
            await made.aclose()

    @staticmethod
    def needs(backend: TargetBackend, target: Target, ability: str) -> None:
        declared = getattr(target.abilities, ability, True)
        if ability in backend.cannot or declared is False:
            pytest.skip(f"{backend.name} cannot {ability}")

    @staticmethod
    async def record(target: Target, backend: TargetBackend, recid: str = "81009") -> Any:
        return await target.create(recid, backend.body(recid))

    @staticmethod
    def hash_of(target: Target, data: bytes) -> Checksum:
        return digest(target.abilities.hashes[0], data)

    # --- records ----------------------------------------------------------------------

    async def test_declares_abilities_it_can_back(self, target: Target) -> None:
        abilities = target.abilities
        assert abilities.hashes, "a target must report at least one hash"
        assert not abilities.publish or abilities.drafts, "publishing needs drafts"
        assert not abilities.versions or abilities.publish, "versions are of published records"

    async def test_find_nothing_then_the_created_record(self, target: Target, backend: TargetBackend) -> None:
        assert await target.find("4242", backend.query("4242")) is None
        rec = await self.record(target, backend, "4242")
        assert rec.recid == "4242" and rec.id
        assert rec.state == ("draft" if target.abilities.drafts else "open")
        found = await target.find("4242", backend.query("4242"))
        assert found is not None and found.id == rec.id
        assert await target.find("4243", backend.query("4243")) is None

    async def test_get_by_the_targets_id(self, target: Target, backend: TargetBackend) -> None:
        rec = await self.record(target, backend)
        got = await target.get("81009", rec.id)
        assert got is not None and got.id == rec.id and got.recid == "81009"

    # --- files ------------------------------------------------------------------------

    async def test_put_is_verified_and_listed(self, target: Target, backend: TargetBackend, tmp_path: Path) -> None:
        rec = await self.record(target, backend)
        path, data = data_file(tmp_path, "small.json", 3000)
        expected = self.hash_of(target, data)
        sent: list[int] = []
        got = await target.put_file(rec, "small.json", path, 3000, expected, progress=sent.append)
        assert got.key == "small.json" and got.matches(3000, expected)
        assert sum(sent) >= 3000
        assert (await target.list_files(rec))["small.json"].matches(3000, expected)

    async def test_put_large_file(self, target: Target, backend: TargetBackend, tmp_path: Path) -> None:
        rec = await self.record(target, backend)
        size = backend.large + 123
        path, data = data_file(tmp_path, "big.root", size)
        if target.abilities.multipart and "multipart" not in backend.cannot:
            assert target.plan_file(size) != target.plan_file(10), "a large file goes another way than a small one"
        got = await target.put_file(rec, "big.root", path, size, self.hash_of(target, data))
        assert got.matches(size, self.hash_of(target, data))

    async def test_put_without_a_checksum_computes_and_verifies_it(
        self, target: Target, backend: TargetBackend, tmp_path: Path
    ) -> None:
        # A fresh zip bundle's checksum is not known before its upload: the target computes
        # its best hash from the bytes it sends and returns it to be recorded.
        rec = await self.record(target, backend)
        for key, size in {"small.zip": 3000, "big.zip": backend.large + 77, "empty.zip": 0}.items():
            path, data = data_file(tmp_path, key, size, seed=size)
            got = await target.put_file(rec, key, path, size, None)
            assert got.key == key and got.matches(size, self.hash_of(target, data))

    async def test_keys_with_folders_and_empty_files(
        self, target: Target, backend: TargetBackend, tmp_path: Path
    ) -> None:
        rec = await self.record(target, backend)
        nested, data = data_file(tmp_path, "b c.txt", 700)
        empty, nothing = data_file(tmp_path, "empty.txt", 0)
        key = "run 1/b c.txt" if target.abilities.sub_paths else "b c.txt"
        await target.put_file(rec, key, nested, 700, self.hash_of(target, data))
        await target.put_file(rec, "empty.txt", empty, 0, self.hash_of(target, nothing))
        files = await target.list_files(rec)
        assert files[key].matches(700, self.hash_of(target, data))
        assert files["empty.txt"].matches(0, self.hash_of(target, nothing))

    async def test_identical_put_is_a_no_op_and_changed_file_replaced(
        self, target: Target, backend: TargetBackend, tmp_path: Path
    ) -> None:
        rec = await self.record(target, backend)
        first, data = data_file(tmp_path, "x.txt", 2000, seed=1)
        await target.put_file(rec, "x.txt", first, 2000, self.hash_of(target, data))
        again = await target.put_file(rec, "x.txt", first, 2000, self.hash_of(target, data))
        assert again.matches(2000, self.hash_of(target, data))
        second, other = data_file(tmp_path, "x2.txt", 2500, seed=2)
        replaced = await target.put_file(rec, "x.txt", second, 2500, self.hash_of(target, other))
        assert replaced.matches(2500, self.hash_of(target, other))
        files = await target.list_files(rec)
        assert list(files) == ["x.txt"] and files["x.txt"].matches(2500, self.hash_of(target, other))

    async def test_corrupt_upload_is_never_complete(
        self, target: Target, backend: TargetBackend, tmp_path: Path
    ) -> None:
        rec = await self.record(target, backend)
        path, _ = data_file(tmp_path, "bad.txt", 1500)
        algorithm = target.abilities.hashes[0]
        wrong = digest(algorithm, b"something else")
        with pytest.raises(VerificationError) as info:
            await target.put_file(rec, "bad.txt", path, 1500, wrong)
        assert info.value.file == "bad.txt" and info.value.recid == rec.recid
        files = await target.list_files(rec)
        assert "bad.txt" not in files or not files["bad.txt"].matches(1500, wrong)

    async def test_short_upload_is_never_complete(self, target: Target, backend: TargetBackend, tmp_path: Path) -> None:
        # The file on disk is shorter than the size the caller vouches for (it was cut).
        rec = await self.record(target, backend)
        whole = b"x" * 4000
        path = tmp_path / "short.txt"
        path.write_bytes(whole[:2500])
        with pytest.raises(FerryError):
            await target.put_file(rec, "short.txt", path, 4000, self.hash_of(target, whole))
        files = await target.list_files(rec)
        assert "short.txt" not in files or not files["short.txt"].matches(4000, self.hash_of(target, whole))

    async def test_errors_name_record_and_file(self, target: Target, backend: TargetBackend, tmp_path: Path) -> None:
        rec = await self.record(target, backend)
        path = tmp_path / "nope.bin"
        path.write_bytes(b"12345")
        with pytest.raises(FerryError) as info:
            await target.put_file(rec, "nope.bin", path, 5, digest(target.abilities.hashes[0], b"other"))
        assert "81009" in str(info.value) and "nope.bin" in str(info.value)

    async def test_delete_file_and_missing_delete(self, target: Target, backend: TargetBackend, tmp_path: Path) -> None:
        rec = await self.record(target, backend)
        path, data = data_file(tmp_path, "gone.txt", 100)
        await target.put_file(rec, "gone.txt", path, 100, self.hash_of(target, data))
        await target.delete_file(rec, "gone.txt")
        assert "gone.txt" not in await target.list_files(rec)
        await target.delete_file(rec, "gone.txt")  # already gone: fine

    async def test_cancelled_upload_leaves_nothing_that_looks_complete(
        self, target: Target, backend: TargetBackend, tmp_path: Path
    ) -> None:
        rec = await self.record(target, backend)
        size = backend.large * 4
        path, data = data_file(tmp_path, "cut.bin", size)
        expected = self.hash_of(target, data)
        started = asyncio.Event()
        task = asyncio.create_task(
            target.put_file(rec, "cut.bin", path, size, expected, progress=lambda n: started.set())
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, FerryError):
            await task
        there = (await target.list_files(rec)).get("cut.bin")
        # Either nothing, something unfinished, or (it won the race) the whole verified file.
        assert there is None or not there.completed or there.matches(size, expected)
        if there is not None and there.completed:
            assert there.size == size

    # --- publishing and versions, where declared ---------------------------------------

    async def test_publish_then_locked_then_new_version(
        self, target: Target, backend: TargetBackend, tmp_path: Path
    ) -> None:
        self.needs(backend, target, "publish")
        rec = await self.record(target, backend)
        path, data = data_file(tmp_path, "data.txt", 4000)
        await target.put_file(rec, "data.txt", path, 4000, self.hash_of(target, data))
        outcome = await target.publish(rec)
        assert outcome.state == "published" and outcome.record_id == rec.id
        published = await target.find("81009", backend.query("81009"))
        assert published is not None and published.state == "published" and published.id == rec.id
        with pytest.raises(Conflict):
            await target.put_file(published, "more.txt", path, 4000, self.hash_of(target, data))
        if not target.abilities.versions or "new_version" in backend.cannot:
            return
        draft = await target.new_version(published)
        assert draft.state == "draft" and draft.id != rec.id and draft.recid == "81009"
        assert (await target.list_files(draft))["data.txt"].matches(4000, self.hash_of(target, data))
        with contextlib.suppress(TargetError):  # asking again gives the same draft, never a second
            again = await target.new_version(published)
            assert again.id == draft.id

    # --- the pipeline on top: a dry run writes nothing ----------------------------------

    async def test_dry_run_makes_no_writing_call(self, target: Target, backend: TargetBackend, tmp_path: Path) -> None:
        from ferry.testing.pipeline_probe import dry_run_record

        counting = CountingTarget(target)
        rec = await self.record(target, backend, "5150")  # something to find, too
        await dry_run_record(counting, backend, tmp_path, recid=rec.recid)
        await dry_run_record(counting, backend, tmp_path, recid="5151")
        assert counting.writes() == {}, f"a dry run wrote: {counting.writes()}"
        assert sum(counting.calls.values()) > 0  # and it did ask the target
