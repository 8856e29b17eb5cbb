"""The Zenodo target on its own and in the existing flows (``ferry upload``/``bulk --target zen``).

Everything runs against the Zenodo stand-in (tests/fixtures_zenodo.py) and, for the CLI
flows, the XRootD + portal stand-ins; outcomes are read from the stand-in's own state and
request log, not from what the client believes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from ferry.cli import main
from ferry.core.checksums import Checksum
from ferry.core.config import ConfigError, Secret, config_from_mapping
from ferry.core.errors import AuthError, QuotaError, RateLimited, ValidationError
from pipeline.ledger import Ledger
from stats.events import read_jsonl
from tests.fixtures_xrootd import SandboxSource
from tests.fixtures_zenodo import ZenodoHandle
from tests.test_target_zenodo_suite import zenodo_body, zenodo_query
from upload import targets
from upload.targets.zenodo import ZenodoTarget
from upload.targets.zenodo_files import listed_file, upload_read_timeout


def zen_config(tmp_path: Path, zen: ZenodoHandle, portal: str = "http://127.0.0.1:9", **extra: Any) -> Path:
    token = tmp_path / "zenodo.token"
    token.write_text(zen.token + "\n")
    lines = ["[source.cernopendata]", f'portal = "{portal}"', "", "[targets.zen]", 'type = "zenodo"']
    lines += [f'url = "{zen.url}"', f'token_file = "{token}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    lines += ["", "[limits]", "backoff_base = 0.05"]
    path = tmp_path / "ferry.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def target_for(zen: ZenodoHandle, **section: Any) -> ZenodoTarget:
    config = config_from_mapping({"targets": {"zen": {"type": "zenodo", "url": zen.url, **section}}})
    return ZenodoTarget(config.target("zen"), token=Secret(zen.token))


def writes(zen: ZenodoHandle) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in zen.writes()]


# --- configuration ----------------------------------------------------------------------


def test_zenodo_defaults_apply_only_where_the_file_is_silent() -> None:
    config = config_from_mapping(
        {
            "targets": {
                "zen": {"type": "zenodo", "url": "http://127.0.0.1:1"},
                "slow": {"type": "zenodo", "url": "http://127.0.0.1:1", "requests_per_minute": 10},
                "nrp": {"type": "invenio", "url": "http://127.0.0.1:1"},
            }
        }
    )
    zen, slow, nrp = config.target("zen"), config.target("slow"), config.target("nrp")
    assert (zen.profile, zen.requests_per_minute, zen.requests_per_hour) == ("zenodo", 100, 5000)
    assert (zen.max_files_per_record, zen.max_record_size) == (100, 50 * 10**9)
    assert (slow.requests_per_minute, slow.requests_per_hour) == (10, 5000)
    assert (nrp.profile, nrp.requests_per_minute) == ("inveniordm", 450)  # the Invenio defaults stay
    assert "zenodo" in targets.TARGETS.names()


def test_unknown_option_and_bad_url_are_config_errors() -> None:
    bad = config_from_mapping({"targets": {"zen": {"type": "zenodo", "url": "http://x", "bucket_size": 3}}})
    with pytest.raises(ConfigError, match=r"targets\.zen: unknown key\(s\) bucket_size"):
        ZenodoTarget(bad.target("zen"), token=Secret("t"))
    nourl = config_from_mapping({"targets": {"zen": {"type": "zenodo", "url": "zenodo.org"}}})
    with pytest.raises(ConfigError, match="url must be an http"):
        ZenodoTarget(nourl.target("zen"), token=Secret("t"))


def test_listing_checksums_and_upload_timeouts() -> None:
    bare = listed_file({"filename": "a.txt", "filesize": 3, "checksum": "900150983CD24FB0D6963F7D28E17F72"})
    prefixed = listed_file({"key": "a.txt", "size": 3, "checksum": "md5:900150983cd24fb0d6963f7d28e17f72"})
    assert bare == prefixed and bare.matches(3, Checksum("md5", "900150983cd24fb0d6963f7d28e17f72"))
    assert listed_file({"filename": "b", "filesize": 1, "checksum": "zz"}).checksums == ()
    assert upload_read_timeout(0, 300.0) == 300.0
    assert upload_read_timeout(50 * 10**9, 300.0) > 2500  # a 50 GB answer may take its time


# --- life cycle ---------------------------------------------------------------------------


async def test_new_version_second_call_leads_to_the_open_draft(zenodo: ZenodoHandle, tmp_path: Path) -> None:
    async with target_for(zenodo) as target:
        rec = await target.create("81009", zenodo_body("81009"))
        data = tmp_path / "d.txt"
        data.write_bytes(b"hello zenodo")
        md5 = Checksum("md5", hashlib.md5(b"hello zenodo").hexdigest())
        await target.put_file(rec, "d.txt", data, 12, md5)
        await target.publish(rec)
        published = await target.get("81009", rec.id)
        assert published is not None and published.state == "published"
        draft = await target.new_version(published)
        assert draft.state == "draft" and draft.id != rec.id
        assert (await target.list_files(draft))["d.txt"].matches(12, md5)  # files imported
        # Again while the draft has files: Zenodo answers 400 "Please remove all files first."
        again = await target.new_version(published)
        assert again.id == draft.id
    news = [r for r in zenodo.requests() if r["path"].endswith("/actions/newversion")]
    assert [r["status"] for r in news] == [201, 400]
    summary = zenodo.summary()
    assert summary["depositions"] == 2 and summary["drafts"] == 1  # never a second draft


async def test_a_stale_hit_of_a_deleted_draft_never_hides_the_published_deposition(
    zenodo: ZenodoHandle, tmp_path: Path
) -> None:
    # A claim loser deletes its deposition; within the index's refresh it is still a hit
    # and drafts are preferred: find() reads past it to the published one (None made a
    # re-run create a twin).
    zenodo.configure(index_delay_ms=1500)
    async with target_for(zenodo) as target:
        winner = await target.create("81009", zenodo_body("81009"))
        loser = await target.create("81009", zenodo_body("81009"))
        data = tmp_path / "d.txt"
        data.write_bytes(b"hello zenodo")
        await target.put_file(winner, "d.txt", data, 12, Checksum("md5", hashlib.md5(b"hello zenodo").hexdigest()))
        await target.publish(winner)
        await asyncio.sleep(1.6)  # both indexed as drafts... then the loser goes
        await target.discard(loser)
        found = await target.find("81009", zenodo_query("81009"))
    assert found is not None and found.id == winner.id and found.state == "published"


async def test_new_version_when_zenodo_answers_with_the_draft(zenodo: ZenodoHandle, tmp_path: Path) -> None:
    zenodo.configure(newversion_answer="draft")  # what zenodo-rdm's code does today
    async with target_for(zenodo) as target:
        rec = await target.create("5", zenodo_body("5"))
        path = tmp_path / "x"
        path.write_bytes(b"x")
        await target.put_file(rec, "x", path, 1, None)
        await target.publish(rec)
        published = await target.get("5", rec.id)
        assert published is not None
        draft = await target.new_version(published)
        assert draft.state == "draft" and draft.id != rec.id


async def test_errors_name_the_field_and_the_limits(zenodo_factory: Any, tmp_path: Path) -> None:
    zen = zenodo_factory(max_files=2)
    async with target_for(zen) as target:
        bad = {"metadata": {"upload_type": "spreadsheet", "title": "x"}}
        with pytest.raises(ValidationError) as info:
            await target.create("7", bad)
        assert "metadata.upload_type" in str(info.value) and info.value.recid == "7"
        rec = await target.create("7", zenodo_body("7"))
        path = tmp_path / "f"
        path.write_bytes(b"abc")
        for key in ("a", "b"):
            await target.put_file(rec, key, path, 3, None)
        with pytest.raises(QuotaError) as quota:
            await target.put_file(rec, "c", path, 3, None)
        assert "at most 2 files" in str(quota.value) and quota.value.file == "c"
        with pytest.raises(Exception, match="flat"):
            await target.put_file(rec, "sub/c", path, 3, None)
    anonymous = ZenodoTarget(
        config_from_mapping({"targets": {"z": {"type": "zenodo", "url": zen.url}}}).target("z"), token=None
    )
    async with anonymous:
        with pytest.raises(AuthError, match="403"):
            await anonymous.create("7", zenodo_body("7"))
    async with ZenodoTarget(target_for(zen).config, token=Secret("wrong")) as wrong:
        with pytest.raises(AuthError, match="401"):
            await wrong.find("7", zenodo_query("7"))


async def test_rate_limit_answer_is_waited_out(zenodo: ZenodoHandle) -> None:
    zenodo.configure(force_429=1, retry_after=1)
    async with target_for(zenodo) as target:
        assert await target.find("1", zenodo_query("1")) is None  # the 429 was retried after Retry-After
    statuses = [r["status"] for r in zenodo.requests()]
    assert statuses == [429, 200]
    zenodo.configure(force_429=50, retry_after=1)
    async with ZenodoTarget(target_for(zenodo).config, token=Secret(zenodo.token), policy=_one_try()) as target:
        with pytest.raises(RateLimited) as info:
            await target.find("1", zenodo_query("1"))
        assert info.value.retry_after == 1


def _one_try() -> Any:
    from ferry.core.retry import RetryPolicy

    return RetryPolicy(attempts=1)


async def test_unchanged_metadata_is_not_sent_again(zenodo: ZenodoHandle) -> None:
    async with target_for(zenodo) as target:
        body = zenodo_body("9")
        body["metadata"]["publication_date"] = "2024-01-01"
        rec = await target.create("9", body)
        found = await target.get("9", rec.id)
        assert found is not None
        await target.update_metadata(found, body)
        assert writes(zenodo) == ["POST /api/deposit/depositions"]
        changed = json.loads(json.dumps(body))
        changed["metadata"]["title"] = "Another title"
        await target.update_metadata(found, changed)
        assert writes(zenodo)[-1] == f"PUT /api/deposit/depositions/{rec.id}"


# --- the existing flows with --target zen -------------------------------------------------


def _rows(stats: Path) -> list[dict[str, Any]]:
    return [r for f in sorted(stats.glob("*.jsonl")) for r in read_jsonl(f)]


def test_cern_record_to_zenodo_with_ledger_and_a_rerun_that_writes_nothing(
    tmp_path: Path, sandbox_source: SandboxSource, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    config = zen_config(tmp_path, zenodo, sandbox_source.portal_url)
    recid = sandbox_source.cases["plain"]
    dest, stats = tmp_path / "data", tmp_path / "stats"
    args = ["--config", str(config), "upload", recid, "--target", "zen", "--dest", str(dest), "--stats-dir", str(stats)]
    code = main(args)
    out = capsys.readouterr()
    assert code == 0, out.err
    (item,) = zenodo.summary()["items"]
    local = {p.name: p for p in (dest / recid).iterdir() if p.is_file()}
    assert set(item["files"]) == set(local)
    for key, path in local.items():
        assert item["files"][key] == {"size": path.stat().st_size, "md5": hashlib.md5(path.read_bytes()).hexdigest()}
    with Ledger.open(dest / ".ferry" / "ledger-zen.sqlite") as ledger:
        row = ledger.get(recid)
        assert row is not None and row.remote_id == str(item["id"]) and row.status == "uploaded"
        assert {f.key for f in ledger.file_status(recid) if f.status == "verified"} == set(local)

    before = len(zenodo.writes())
    assert main(args) == 0, capsys.readouterr().err
    assert len(zenodo.writes()) == before  # no metadata, no file, no deposition written again
    assert len(zenodo.summary()["items"]) == 1

    # Published, then a re-run: skipped without a single write either.
    assert main([*args, "--publish"]) == 0
    assert zenodo.summary()["published"] == 1
    before = len(zenodo.writes())
    assert main([*args, "--publish"]) == 0
    assert len(zenodo.writes()) == before
    oks = [r for r in _rows(stats) if r["stage"] == "upload" and r["status"] == "ok"]
    assert len(oks) == len(local)  # every file sent exactly once over four runs


def test_dry_run_upload_and_bulk_write_nothing(
    tmp_path: Path, sandbox_source: SandboxSource, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    config = zen_config(tmp_path, zenodo, sandbox_source.portal_url)
    recid = sandbox_source.cases["plain"]
    code = main(
        ["--config", str(config), "upload", recid, "--target", "zen", "--dest", str(tmp_path / "d"), "--dry-run"]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "into a new draft" in out.out and '"upload_type"' in out.out
    assert writes(zenodo) == [] and zenodo.requests()  # it asked (search), it wrote nothing


def test_bulk_into_zenodo_with_a_lagging_index_makes_no_twin(
    tmp_path: Path, sandbox_source: SandboxSource, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    # The index lags 1.2 s behind writes: a search right after a create misses it.
    zenodo.configure(index_delay_ms=1200)
    config = zen_config(tmp_path, zenodo, sandbox_source.portal_url)
    recids = [sandbox_source.cases["plain"], sandbox_source.record(sandbox_source.cases["plain"])["recid"]]
    recids = sorted({str(r) for r in recids})
    listing = tmp_path / "recids.txt"
    listing.write_text("\n".join(recids) + "\n")
    dest = tmp_path / "data"
    args = ["--config", str(config), "bulk", "--recids", str(listing), "--target", "zen", "--dest", str(dest)]
    assert main(args) == 0, capsys.readouterr().err
    assert main(args) == 0, capsys.readouterr().err  # a re-run while the index still lags
    summary = zenodo.summary()
    assert len(summary["items"]) == len(recids)  # one deposition per recid, never two
    creates = [w for w in writes(zenodo) if w == "POST /api/deposit/depositions"]
    assert len(creates) == len(recids)
