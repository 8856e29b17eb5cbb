"""The InvenioRDM/NRP target against the sandbox repository: faults, limits, workflows, secrets."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ferry.core.checksums import Checksum
from ferry.core.config import ConfigError
from ferry.core.errors import (
    AuthError,
    QuotaError,
    TargetUnavailable,
    TransferFailed,
    ValidationError,
    VerificationError,
)
from pipeline.limits import RateLimiter
from tests.checksum_support import md5_sum
from tests.fixtures_repository import RepositoryHandle
from tests.test_invenio_support import (
    KiB,
    data_file,
    log_rows,
    make_target,
    particles_body,
    particles_query,
    rdm_body,
    rdm_query,
)
from upload.targets.http import FileRange, StreamMd5, file_md5, maybe_applied

RECID = "81009"


def _by_recid(repository: RepositoryHandle) -> dict[str, Any]:
    slot: dict[str, Any] = repository.state()["by_recid"].get(RECID, {"drafts": 0, "records": 0, "ids": []})
    return slot


async def test_l_and_m_uploads_send_octet_stream_parts_and_poll_checksum(
    repository: RepositoryHandle, tmp_path: Path
) -> None:
    repository.configure(checksum_delay_ms=200)  # the multipart md5 appears later: the client must poll
    async with make_target(repository, tmp_path) as target:
        rec = await target.create(RECID, rdm_body(RECID))
        small, small_md5 = data_file(tmp_path, "small.json", 10 * KiB)
        large, large_md5 = data_file(tmp_path, "large.root", 100 * KiB + 5)
        assert target.plan_file(10 * KiB) == "L" and target.plan_file(100 * KiB + 5) == "M"
        assert (await target.put_file(rec, "small.json", small, 10 * KiB, md5_sum(small_md5))).checksum(
            "md5"
        ) == small_md5
        assert (await target.put_file(rec, "large.root", large, 100 * KiB + 5, md5_sum(large_md5))).checksum(
            "md5"
        ) == large_md5
    parts = log_rows(repository, "PUT", "large.root/content/")
    assert len(parts) == 7  # 16 KiB parts for 100 KiB + 5 bytes
    assert len(log_rows(repository, "PUT", "small.json/content")) == 1
    polls = log_rows(repository, "GET", "/draft/files/large.root")
    assert len(polls) >= 1
    assert repository.state()["by_recid"][RECID]["drafts"] == 1


async def test_nrp_discovery_creates_at_the_model(repository: RepositoryHandle, tmp_path: Path) -> None:
    async with make_target(repository, tmp_path, model="particles", community="delphi", workflow="basic") as target:
        rec = await target.create(RECID, particles_body(RECID))
        assert "/api/particles/" in rec.links["self"]
        parent = (await _raw_get(repository, rec.links["self"]))["parent"]
        assert parent["communities"]["default"] == "delphi" and parent["workflow"] == "basic"
        found = await target.find(RECID, particles_query(RECID))
        assert found is not None and found.id == rec.id
    assert log_rows(repository, "GET", "/.well-known/repository")
    assert log_rows(repository, "POST", "/api/particles")
    assert not log_rows(repository, "POST", "/api/records")


async def test_plain_records_without_model_never_asks_discovery(repository: RepositoryHandle, tmp_path: Path) -> None:
    async with make_target(repository, tmp_path) as target:
        await target.create(RECID, rdm_body(RECID))
    assert not log_rows(repository, "GET", "/.well-known")
    assert [r["path"] for r in log_rows(repository, "POST")] == ["/api/records"]


async def test_unknown_model_and_non_nrp_server_are_config_errors(
    repository_factory: Callable[..., RepositoryHandle], tmp_path: Path
) -> None:
    repo = repository_factory()
    async with make_target(repo, tmp_path, model="muons") as target:
        with pytest.raises(ConfigError, match="particles"):
            await target.find(RECID, "x")
    plain = repository_factory(nrp=False)
    async with make_target(plain, tmp_path, model="particles") as target:
        with pytest.raises(ConfigError, match="well-known"):
            await target.find(RECID, "x")


async def test_wrong_token_is_auth_error_without_the_token(
    repository: RepositoryHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "wrong-token-0123456789abcdef"
    target = make_target(repository, tmp_path, token=bad)
    async with target:
        with pytest.raises(AuthError) as info:
            await target.create(RECID, rdm_body(RECID))
    assert info.value.status in (401, 403) and info.value.recid == RECID
    for text in (str(info.value), repr(info.value), repr(target), repr(target.config), caplog.text):
        assert bad not in text
    assert len(log_rows(repository, "POST")) == 1  # an auth failure is not retried


async def test_token_never_logged_in_a_full_run(
    repository: RepositoryHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    repository.configure(force_429=1, retry_after=0)
    async with make_target(repository, tmp_path) as target:
        rec = await target.create(RECID, rdm_body(RECID))
        path, md5 = data_file(tmp_path, "a.txt", 100 * KiB)
        await target.put_file(rec, "a.txt", path, 100 * KiB, md5_sum(md5))
        await target.publish(rec)
    assert caplog.records  # something was logged at DEBUG
    assert repository.token not in caplog.text


async def test_429_burst_honours_retry_after_and_pauses_the_limiter(
    repository: RepositoryHandle, tmp_path: Path
) -> None:
    limiter = RateLimiter(1000, 10000)
    repository.configure(force_429=3, retry_after=1)
    async with make_target(repository, tmp_path, limiter=limiter) as target:
        assert await target.find(RECID, rdm_query(RECID)) is None
        sent = target.requests_sent
    rows = log_rows(repository, "GET", "/api/user/records")
    assert [r["status"] for r in rows] == [429, 429, 429, 200]
    # Each retry came at least Retry-After (1 s) after the 429 that asked for it.
    for before, after in itertools.pairwise(rows):
        assert after["ts"] - before["ts"] >= 0.9
    assert limiter.acquired == sent == 4
    assert limiter.paused_until > 0


async def test_create_whose_answer_is_lost_is_raised_not_repeated(repository: RepositoryHandle, tmp_path: Path) -> None:
    # The server creates the draft, then answers 502/504. The target does not guess: it
    # raises a retryable error marked maybe_applied (the pipeline then looks for the draft
    # before creating again: tests/test_pipeline.py), and never POSTs a second time.
    repository.configure(error_after_rate=1.0, error_match=r"^POST /api/records$")
    async with make_target(repository, tmp_path) as target:
        with pytest.raises(TargetUnavailable) as info:
            await target.create(RECID, rdm_body(RECID))
    assert RECID in str(info.value) and info.value.recid == RECID
    assert info.value.retryable and maybe_applied(info.value)
    assert len(log_rows(repository, "POST", "/api/records")) == 1
    assert _by_recid(repository)["drafts"] == 1  # it did happen: the pipeline's search finds it


async def test_server_errors_on_reads_are_retried(repository: RepositoryHandle, tmp_path: Path) -> None:
    repository.configure(error_rate=0.5, error_match=r"^GET ", seed=3, retry_after=0)
    async with make_target(repository, tmp_path) as target:
        for _ in range(5):
            assert await target.find(RECID, rdm_query(RECID)) is None
    assert any(r["status"] >= 500 for r in log_rows(repository, "GET"))


async def test_failed_transfer_is_retried_then_reported_cleanly(repository: RepositoryHandle, tmp_path: Path) -> None:
    async with make_target(repository, tmp_path) as target:
        rec = await target.create(RECID, rdm_body(RECID))
        path, md5 = data_file(tmp_path, "t.txt", 5 * KiB)
        repository.configure(transfer_fail_next=1)  # 200 {"errors": "File upload transfer failed."}
        assert (await target.put_file(rec, "t.txt", path, 5 * KiB, md5_sum(md5))).checksum("md5") == md5
        inits = [r for r in log_rows(repository, "POST") if r["path"].endswith("/draft/files")]
        assert len(inits) == 2

        repository.configure(transfer_fail_rate=1.0)
        with pytest.raises(TransferFailed) as info:
            await target.put_file(rec, "u.txt", path, 5 * KiB, md5_sum(md5))
        assert info.value.recid == RECID and info.value.file == "u.txt"
        assert "transfer failed" in str(info.value).lower() and "u.txt" in str(info.value)
        repository.configure(transfer_fail_rate=0.0)
        assert "u.txt" not in await target.list_files(rec)


async def test_dropped_connections_mid_body_are_recovered(repository: RepositoryHandle, tmp_path: Path) -> None:
    async with make_target(repository, tmp_path) as target:
        rec = await target.create(RECID, rdm_body(RECID))
        small, small_md5 = data_file(tmp_path, "s.txt", 30 * KiB)
        large, large_md5 = data_file(tmp_path, "l.root", 80 * KiB)
        repository.configure(drop_next=1)
        assert (await target.put_file(rec, "s.txt", small, 30 * KiB, md5_sum(small_md5))).checksum("md5") == small_md5
        repository.configure(drop_next=1)
        assert (await target.put_file(rec, "l.root", large, 80 * KiB, md5_sum(large_md5))).checksum("md5") == large_md5
        files = await target.list_files(rec)
    assert files["s.txt"].matches(30 * KiB, Checksum("md5", small_md5))
    assert files["l.root"].matches(80 * KiB, Checksum("md5", large_md5))


async def test_corrupted_copy_on_the_target_is_a_verification_error(
    repository: RepositoryHandle, tmp_path: Path
) -> None:
    async with make_target(repository, tmp_path, file_attempts=1) as target:
        rec = await target.create(RECID, rdm_body(RECID))
        path, md5 = data_file(tmp_path, "c.txt", 4 * KiB)
        repository.configure(corrupt_next=1)
        with pytest.raises(VerificationError) as info:
            await target.put_file(rec, "c.txt", path, 4 * KiB, md5_sum(md5))
        assert info.value.expected == f"md5:{md5}" and info.value.actual != info.value.expected
        assert info.value.recid == RECID and info.value.file == "c.txt"
        assert "c.txt" not in await target.list_files(rec)  # the wrong copy is not left to be published
    async with make_target(repository, tmp_path, file_attempts=2) as target:
        repository.configure(corrupt_next=1)
        assert (await target.put_file(rec, "c.txt", path, 4 * KiB, md5_sum(md5))).checksum("md5") == md5  # re-sent once


@pytest.mark.parametrize("size", [4 * KiB, 70 * KiB], ids=["L", "M"])
async def test_corrupted_copy_is_caught_without_a_known_md5(
    repository: RepositoryHandle, tmp_path: Path, size: int
) -> None:
    # md5=None: the md5 computed while sending (L: in the body's read; M: beside the
    # parts) is what the server's must equal, so a flipped byte on the way is still caught.
    async with make_target(repository, tmp_path, file_attempts=1) as target:
        rec = await target.create(RECID, rdm_body(RECID))
        assert target.plan_file(size) == ("L" if size < 64 * KiB else "M")
        path, md5 = data_file(tmp_path, "c.zip", size)
        repository.configure(corrupt_next=1)
        with pytest.raises(VerificationError) as info:
            await target.put_file(rec, "c.zip", path, size, None)
        assert info.value.expected == f"md5:{md5}" and info.value.actual != info.value.expected
        assert "c.zip" not in await target.list_files(rec)
    async with make_target(repository, tmp_path, file_attempts=2) as target:
        repository.configure(corrupt_next=1)
        assert (await target.put_file(rec, "c.zip", path, size, None)).checksum("md5") == md5  # re-sent and re-hashed


async def test_stream_md5_describes_one_whole_pass(tmp_path: Path) -> None:
    path, md5 = data_file(tmp_path, "s.bin", 5 * KiB + 3)
    sink = StreamMd5()

    def body() -> FileRange:  # what file_range(..., md5=sink) makes for each attempt
        return FileRange(path, 0, 5 * KiB + 3, None, KiB, sink)

    partial = body()
    await partial.__anext__()  # an attempt that stopped after one chunk gives no digest
    await partial.aclose()
    assert sink.hexdigest is None
    chunks = [c async for c in body()]
    assert b"".join(chunks) == path.read_bytes() and sink.hexdigest == md5
    again = body()  # a new attempt starts afresh: the earlier digest no longer stands
    assert sink.hexdigest is None
    await again.aclose()
    assert await file_md5(path, 5 * KiB + 3, chunk=KiB) == md5
    with pytest.raises(OSError, match="ended"):
        await file_md5(path, 6 * KiB)


async def test_multipart_checksum_that_never_comes_is_bounded(repository: RepositoryHandle, tmp_path: Path) -> None:
    repository.configure(checksum_delay_ms=60_000)
    async with make_target(repository, tmp_path, checksum_timeout=0.5, file_attempts=1) as target:
        rec = await target.create(RECID, rdm_body(RECID))
        path, md5 = data_file(tmp_path, "slow.root", 70 * KiB)
        with pytest.raises(VerificationError, match=r"multipart|pending"):
            await target.put_file(rec, "slow.root", path, 70 * KiB, md5_sum(md5))


async def _raw_get(repository: RepositoryHandle, url: str) -> Any:
    headers = {"Authorization": f"Bearer {repository.token}"}
    async with aiohttp.ClientSession(headers=headers) as session, session.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def _raw_init(repository: RepositoryHandle, files_link: str, key: str) -> None:
    headers = {"Authorization": f"Bearer {repository.token}"}
    async with aiohttp.ClientSession(headers=headers) as session, session.post(files_link, json=[{"key": key}]) as r:
        assert r.status == 201


async def test_partial_and_duplicate_files_are_replaced_or_kept(repository: RepositoryHandle, tmp_path: Path) -> None:
    async with make_target(repository, tmp_path) as target:
        rec = await target.create(RECID, rdm_body(RECID))
        path, md5 = data_file(tmp_path, "p.txt", 3 * KiB)
        # A pending entry left by an interrupted run: deleted and uploaded again.
        await _raw_init(repository, rec.links["files"], "p.txt")
        assert (await target.list_files(rec))["p.txt"].status == "pending"
        assert (await target.put_file(rec, "p.txt", path, 3 * KiB, md5_sum(md5))).matches(3 * KiB, md5_sum(md5))
        assert len(log_rows(repository, "DELETE", "p.txt")) == 1
        # The same file again: kept, no content sent.
        before = len(log_rows(repository, "PUT", "p.txt/content"))
        await target.put_file(rec, "p.txt", path, 3 * KiB, md5_sum(md5))
        assert len(log_rows(repository, "PUT", "p.txt/content")) == before
        # Different content under the same key: replaced.
        other, other_md5 = data_file(tmp_path, "p2.txt", 3 * KiB, seed=9)
        assert (await target.put_file(rec, "p.txt", other, 3 * KiB, md5_sum(other_md5))).checksum("md5") == other_md5


async def test_find_existing_draft_from_a_new_session(repository: RepositoryHandle, tmp_path: Path) -> None:
    async with make_target(repository, tmp_path) as first:
        rec = await first.create(RECID, rdm_body(RECID))
    async with make_target(repository, tmp_path) as second:
        found = await second.find(RECID, rdm_query(RECID))
    assert found is not None and found.id == rec.id and found.state == "draft" and found.links["files"]


async def test_a_stale_hit_of_a_deleted_draft_never_hides_the_published_record(
    repository_factory: Callable[..., RepositoryHandle], tmp_path: Path
) -> None:
    # Two runs made a draft each; the loser deleted its own while the winner's was published.
    # Within the index's refresh the deleted draft is still a search hit, and a draft hit is
    # preferred: find() must read past it to the record that exists, not return the stale
    # draft (its update then failed as "published") nor None (a re-run then created a twin).
    repository = repository_factory(index_delay_ms=1500)
    async with make_target(repository, tmp_path) as target:
        winner = await target.create(RECID, rdm_body(RECID))
        loser = await target.create(RECID, rdm_body(RECID))
        path, md5 = data_file(tmp_path, "d.txt", KiB)
        await target.put_file(winner, "d.txt", path, KiB, md5_sum(md5))
        await target.publish(winner)
        await asyncio.sleep(1.6)  # both drafts indexed
        await target.discard(loser)
        found = await target.find(RECID, rdm_query(RECID))
    assert found is not None and found.id == winner.id and found.state == "published"


async def test_publish_direct(repository: RepositoryHandle, tmp_path: Path) -> None:
    async with make_target(repository, tmp_path) as target:
        rec = await target.create(RECID, rdm_body(RECID))
        path, md5 = data_file(tmp_path, "d.txt", KiB)
        await target.put_file(rec, "d.txt", path, KiB, md5_sum(md5))
        outcome = await target.publish(rec)
    assert outcome.state == "published" and outcome.request_id is None
    assert log_rows(repository, "POST", "/draft/actions/publish")
    assert _by_recid(repository)["records"] == 1


@pytest.mark.parametrize(("workflow", "state"), [("auto", "published"), ("curator", "pending-review")])
async def test_publish_through_the_request_workflow(
    repository: RepositoryHandle, tmp_path: Path, workflow: str, state: str
) -> None:
    repository.configure(publish_workflow=workflow)
    async with make_target(repository, tmp_path, model="particles") as target:
        rec = await target.create(RECID, particles_body(RECID))
        assert "publish" not in rec.links and "applicable-requests" in rec.links
        path, md5 = data_file(tmp_path, "w.txt", KiB)
        await target.put_file(rec, "w.txt", path, KiB, md5_sum(md5))
        outcome = await target.publish(rec)
        assert outcome.state == state and outcome.request_id
        if state == "pending-review":
            # Asking again finds the waiting request instead of making a second one.
            again = await target.publish(rec)
            assert again.state == "pending-review" and again.request_id == outcome.request_id
    assert not log_rows(repository, "POST", "/actions/publish")
    assert _by_recid(repository)["records"] == (1 if state == "published" else 0)


async def test_publish_refused_keeps_the_servers_field_messages(repository: RepositoryHandle, tmp_path: Path) -> None:
    async with make_target(repository, tmp_path) as target:
        rec = await target.create(RECID, rdm_body(RECID))
        with pytest.raises(ValidationError) as info:
            await target.publish(rec)  # files enabled, none uploaded
    assert info.value.status == 400 and info.value.recid == RECID
    assert "files.enabled" in info.value.errors and "Missing uploaded files" in str(info.value)


async def test_invalid_metadata_saved_by_the_server_is_reported(repository: RepositoryHandle, tmp_path: Path) -> None:
    body = rdm_body(RECID)
    body["metadata"]["title"] = "x"
    del body["metadata"]["creators"]
    async with make_target(repository, tmp_path) as target:
        with pytest.raises(ValidationError) as info:
            await target.create(RECID, body)
    assert {"metadata.title", "metadata.creators"} <= set(info.value.errors)
    assert "Shorter than minimum length 3." in info.value.errors["metadata.title"]
    async with make_target(repository, tmp_path, strict_metadata=False) as lenient:
        found = await lenient.find(RECID, rdm_query(RECID))
        assert found is not None and "metadata.title" in found.errors  # the same draft, not a second
    assert len(_by_recid(repository)["ids"]) == 1


async def test_quota_errors(repository_factory: Callable[..., RepositoryHandle], tmp_path: Path) -> None:
    repo = repository_factory(max_files=1, max_file_size=10 * KiB)
    async with make_target(repo, tmp_path) as target:
        rec = await target.create(RECID, rdm_body(RECID))
        one, md5 = data_file(tmp_path, "1.txt", KiB)
        await target.put_file(rec, "1.txt", one, KiB, md5_sum(md5))
        with pytest.raises(QuotaError) as info:
            await target.put_file(rec, "2.txt", one, KiB, md5_sum(md5))
        assert info.value.file == "2.txt"
        await target.delete_file(rec, "1.txt")
        big, big_md5 = data_file(tmp_path, "big.txt", 20 * KiB)
        with pytest.raises(QuotaError):
            await target.put_file(rec, "big.txt", big, 20 * KiB, md5_sum(big_md5))
    async with make_target(repo, tmp_path, max_file_size=KiB) as client_side:
        with pytest.raises(QuotaError, match="limit"):
            await client_side.put_file(rec, "big.txt", big, 20 * KiB, md5_sum(big_md5))


async def test_lost_answers_on_file_init_and_commit_are_checked_not_repeated_blindly(
    repository: RepositoryHandle, tmp_path: Path
) -> None:
    async with make_target(repository, tmp_path, file_attempts=5) as target:
        rec = await target.create(RECID, rdm_body(RECID))
        # Init and commit take effect, then the answer is lost (502/504) half of the time.
        repository.configure(error_after_rate=0.5, error_match=r"^POST .*/draft/files(/[^/]+/commit)?$", seed=7)
        sizes = {"a.txt": 2 * KiB, "b.txt": 3 * KiB, "c.root": 40 * KiB, "d.root": 70 * KiB}
        made = {key: data_file(tmp_path, key, size) for key, size in sizes.items()}
        for key, (path, md5) in made.items():
            assert (await target.put_file(rec, key, path, sizes[key], md5_sum(md5))).checksum("md5") == md5
        repository.configure(error_after_rate=0.0)
        files = await target.list_files(rec)
    assert sorted(files) == sorted(sizes)
    assert all(files[k].matches(sizes[k], Checksum("md5", made[k][1])) for k in sizes)
    lost = [r for r in log_rows(repository, "POST", "/draft/files") if r["status"] >= 500]
    assert lost  # the seed does hit these requests


async def test_publish_whose_answer_is_lost_is_recognised(repository: RepositoryHandle, tmp_path: Path) -> None:
    async with make_target(repository, tmp_path) as target:
        rec = await target.create(RECID, rdm_body(RECID))
        path, md5 = data_file(tmp_path, "p.txt", KiB)
        await target.put_file(rec, "p.txt", path, KiB, md5_sum(md5))
        repository.configure(error_after_rate=1.0, error_match=r"^POST .*/actions/publish$")
        outcome = await target.publish(rec)
    assert outcome.state == "published"
    assert len(log_rows(repository, "POST", "/actions/publish")) == 1
    assert _by_recid(repository)["records"] == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"parts_in_fligth": 8}, "unknown key(s) parts_in_fligth"),
        ({"connections": "16"}, "targets.sandbox.connections must be a whole number > 0, not '16'"),
        ({"read_timeout": 0}, "targets.sandbox.read_timeout must be a number > 0"),
        ({"strict_metadata": "no"}, "targets.sandbox.strict_metadata must be true or false"),
    ],
)
def test_misspelt_or_mistyped_target_options_are_config_errors(
    repository: RepositoryHandle, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    # A misspelt option silently ignored is a setting the user believes in and does not have.
    with pytest.raises(ConfigError) as info:
        make_target(repository, tmp_path, **options)
    assert message in str(info.value)
