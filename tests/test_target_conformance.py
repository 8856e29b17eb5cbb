"""The shared conformance suite every upload target passes (``upload.targets.base.Target``).

A target joins by adding one ``TargetCase`` to ``CASES``: a factory that builds the target
against a real server on loopback (using whatever pytest fixtures it needs), the metadata
body and search query its profile would produce, and the list of abilities it lacks
(``cannot``). Tests needing an ability a target lacks are skipped with that reason, so the
list is the target's honest declaration of what it does not do.

Abilities: ``multipart`` (plan_file may say "M"), ``publish``, ``new_version``,
``pending_files`` (the target keeps unfinished uploads visible in list_files).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ferry.core.errors import Conflict, TargetError, VerificationError
from tests.test_invenio_support import (
    KiB,
    data_file,
    make_target,
    particles_body,
    particles_query,
    rdm_body,
    rdm_query,
)
from upload.targets.base import Target

TargetFactory = Callable[[pytest.FixtureRequest, Path], Target]


@dataclass(frozen=True)
class TargetCase:
    name: str
    make: TargetFactory
    body: Callable[[str], dict[str, Any]]
    query: Callable[[str], str]
    cannot: frozenset[str] = field(default_factory=frozenset)
    large: int = 200 * KiB  # a size this target sends as multipart, when it can


def _invenio(model: str | None) -> TargetFactory:
    def make(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
        repository = request.getfixturevalue("repository")
        return make_target(repository, tmp_path, model=model)

    return make


CASES = [
    TargetCase("invenio", _invenio(None), rdm_body, rdm_query),
    TargetCase("invenio-nrp", _invenio("particles"), particles_body, particles_query),
]


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> TargetCase:
    param: TargetCase = request.param
    return param


@pytest.fixture
async def target(case: TargetCase, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    made = case.make(request, tmp_path)
    try:
        yield made
    finally:
        await made.aclose()


def needs(case: TargetCase, ability: str) -> None:
    if ability in case.cannot:
        pytest.skip(f"{case.name} cannot {ability}")


async def _draft(target: Target, case: TargetCase, recid: str = "81009") -> Any:
    return await target.create(recid, case.body(recid))


async def test_find_nothing_then_the_created_draft(target: Target, case: TargetCase) -> None:
    assert await target.find("4242", case.query("4242")) is None
    rec = await _draft(target, case, "4242")
    assert rec.state == "draft" and rec.recid == "4242" and rec.id
    found = await target.find("4242", case.query("4242"))
    assert found is not None and found.id == rec.id and found.state == "draft"
    assert await target.find("4243", case.query("4243")) is None


async def test_get_by_the_targets_id(target: Target, case: TargetCase) -> None:
    rec = await _draft(target, case)
    got = await target.get("81009", rec.id)
    assert got is not None and got.id == rec.id and got.state == "draft" and got.recid == "81009"
    assert await target.get("81009", "nosuch-id00") is None


async def test_put_small_file_is_verified_and_listed(target: Target, case: TargetCase, tmp_path: Path) -> None:
    rec = await _draft(target, case)
    path, md5 = data_file(tmp_path, "small.json", 3000)
    sent: list[int] = []
    got = await target.put_file(rec, "small.json", path, 3000, md5, progress=sent.append)
    assert got.key == "small.json" and got.size == 3000 and got.md5 == md5 and got.completed
    assert sum(sent) >= 3000
    files = await target.list_files(rec)
    assert files["small.json"].matches(3000, md5)


async def test_put_large_file(target: Target, case: TargetCase, tmp_path: Path) -> None:
    rec = await _draft(target, case)
    path, md5 = data_file(tmp_path, "big.root", case.large + 123)
    expected = "L" if "multipart" in case.cannot else "M"
    assert target.plan_file(case.large + 123) == expected
    assert target.plan_file(10) == "L"
    got = await target.put_file(rec, "big.root", path, case.large + 123, md5)
    assert got.matches(case.large + 123, md5)


async def test_put_without_md5_computes_and_verifies_it(target: Target, case: TargetCase, tmp_path: Path) -> None:
    # A zip bundle's md5 is not known before its upload: the target computes it from the
    # bytes it sends, checks the server's against it, and returns it to be recorded.
    rec = await _draft(target, case)
    sizes = {"small.zip": 3000, "big.zip": case.large + 77, "empty.zip": 0}
    for key, size in sizes.items():
        path, md5 = data_file(tmp_path, key, size, seed=size)
        sent: list[int] = []
        got = await target.put_file(rec, key, path, size, None, progress=sent.append)
        assert got.key == key and got.matches(size, md5) and sum(sent) >= size
    files = await target.list_files(rec)
    assert sorted(files) == sorted(sizes) and all(f.completed and f.md5 for f in files.values())


async def test_keys_with_folders_and_empty_files(target: Target, case: TargetCase, tmp_path: Path) -> None:
    rec = await _draft(target, case)
    nested, md5 = data_file(tmp_path, "a/b c.txt", 700)
    empty, empty_md5 = data_file(tmp_path, "empty.txt", 0)
    await target.put_file(rec, "run 1/b c.txt", nested, 700, md5)
    await target.put_file(rec, "empty.txt", empty, 0, empty_md5)
    files = await target.list_files(rec)
    assert files["run 1/b c.txt"].matches(700, md5)
    assert files["empty.txt"].matches(0, empty_md5)


async def test_same_file_again_is_kept_and_changed_file_replaced(
    target: Target, case: TargetCase, tmp_path: Path
) -> None:
    rec = await _draft(target, case)
    first, md5 = data_file(tmp_path, "x.txt", 2000, seed=1)
    await target.put_file(rec, "x.txt", first, 2000, md5)
    again = await target.put_file(rec, "x.txt", first, 2000, md5)
    assert again.matches(2000, md5)
    second, md5b = data_file(tmp_path, "x2.txt", 2500, seed=2)
    replaced = await target.put_file(rec, "x.txt", second, 2500, md5b)
    assert replaced.matches(2500, md5b)
    files = await target.list_files(rec)
    assert list(files) == ["x.txt"] and files["x.txt"].md5 == md5b


async def test_wrong_md5_raises_and_leaves_no_wrong_copy(target: Target, case: TargetCase, tmp_path: Path) -> None:
    rec = await _draft(target, case)
    path, md5 = data_file(tmp_path, "bad.txt", 1500)
    with pytest.raises(VerificationError) as info:
        await target.put_file(rec, "bad.txt", path, 1500, "0" * 32)
    assert info.value.file == "bad.txt" and info.value.recid == rec.recid
    assert info.value.expected == "md5:" + "0" * 32 and md5 in str(info.value.actual)
    files = await target.list_files(rec)
    assert "bad.txt" not in files or not files["bad.txt"].matches(1500, "0" * 32)


async def test_delete_file_and_missing_delete(target: Target, case: TargetCase, tmp_path: Path) -> None:
    rec = await _draft(target, case)
    path, md5 = data_file(tmp_path, "gone.txt", 100)
    await target.put_file(rec, "gone.txt", path, 100, md5)
    await target.delete_file(rec, "gone.txt")
    assert "gone.txt" not in await target.list_files(rec)
    await target.delete_file(rec, "gone.txt")  # already gone: fine


async def test_update_metadata_keeps_the_record(target: Target, case: TargetCase) -> None:
    rec = await _draft(target, case)
    updated = await target.update_metadata(rec, case.body("81009") | {})
    assert updated.id == rec.id and updated.state == "draft"
    body = case.body("81009")
    body["metadata"]["title"] = "A better title"
    again = await target.update_metadata(rec, body)
    assert again.id == rec.id
    found = await target.find("81009", case.query("81009"))
    assert found is not None and found.id == rec.id


async def test_publish_then_locked_then_new_version(target: Target, case: TargetCase, tmp_path: Path) -> None:
    needs(case, "publish")
    rec = await _draft(target, case)
    path, md5 = data_file(tmp_path, "data.txt", 4000)
    await target.put_file(rec, "data.txt", path, 4000, md5)
    outcome = await target.publish(rec)
    assert outcome.state == "published" and outcome.record_id == rec.id
    published = await target.find("81009", case.query("81009"))
    assert published is not None and published.state == "published" and published.id == rec.id
    by_id = await target.get("81009", rec.id)
    assert by_id is not None and by_id.state == "published"
    with pytest.raises(Conflict):
        await target.put_file(published, "more.txt", path, 4000, md5)
    if "new_version" in case.cannot:
        return
    draft = await target.new_version(published)
    assert draft.state == "draft" and draft.id != rec.id and draft.recid == "81009"
    assert (await target.list_files(draft))["data.txt"].matches(4000, md5)
    # Asking again gives the same next draft, never a second one.
    with contextlib.suppress(TargetError):
        again = await target.new_version(published)
        assert again.id == draft.id
    found = await target.find("81009", case.query("81009"))
    assert found is not None and found.id == draft.id and found.state == "draft"


async def test_errors_name_record_and_file(target: Target, case: TargetCase, tmp_path: Path) -> None:
    rec = await _draft(target, case)
    missing = tmp_path / "nope.bin"
    missing.write_bytes(b"12345")
    with pytest.raises(VerificationError) as info:
        await target.put_file(rec, "nope.bin", missing, 5, "f" * 32)
    assert "81009" in str(info.value) and "nope.bin" in str(info.value)
