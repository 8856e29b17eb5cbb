"""The target is the truth, inputs must agree with themselves (issue 16, sections 1b, 1c).

- A ledger that marked a file failed, for a record another run finished since: the next
  run finds it verified on the target, says "skipped (already published)" and corrects
  the ledger, instead of refusing forever (`cannot mark published: file is failed`).
- A master-cache key that disagrees with the recid inside its entry, or a records file
  that lists one recid twice: an input error naming both, exit 2, nothing written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ferry.cli import main
from pipeline.ledger import Ledger
from tests.bulk_support import (
    SyntheticSource,
    bulk_args,
    ledger_problems,
    synthetic_source,
    target_problems,
    write_config,
    write_recids,
)
from tests.fixtures_repository import RepositoryHandle

RepoFactory = Callable[..., RepositoryHandle]


@pytest.fixture(scope="module")
def source() -> Iterator[SyntheticSource]:
    with synthetic_source() as src:
        yield src


def test_a_file_failed_here_but_finished_by_another_run_is_skipped_and_corrected(
    tmp_path: Path, source: SyntheticSource, repository_factory: RepoFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000)
    config = write_config(tmp_path, source, repo)
    recid = source.recids[1]
    recids = write_recids(tmp_path / "recids.txt", [recid])
    here, there = tmp_path / "here", tmp_path / "there"
    # This dest's ledger saw the record fail (one file failed, record failed) ...
    keys = sorted(source.source_md5(recid))
    with Ledger.open(here / ".ferry" / "ledger-sandbox.sqlite", target="sandbox") as ledger:
        ledger.set_files(recid, [(k, None, None) for k in keys])
        ledger.set_file(recid, keys[0], "failed", error="TransferFailed: connection dropped")
        ledger.set_record_status(recid, "failed", error="TransferFailed: 1 of 1 file(s) failed")
    # ... and another run (another dest) finished it.
    assert main(bulk_args(config, recids, there, "--publish")) == 0
    capsys.readouterr()
    before = repo.state()["entities"]

    assert main(bulk_args(config, recids, here, "--publish")) == 0
    out = capsys.readouterr()
    assert "1 skipped" in out.out, out
    assert "cannot mark" not in out.err
    assert repo.state()["entities"] == before  # nothing written to the target
    assert ledger_problems(here, [recid]) == []
    with Ledger.open(here / ".ferry" / "ledger-sandbox.sqlite", readonly=True) as ledger:
        row = ledger.get(recid)
        assert row is not None and row.status == "published" and row.last_error is None
        assert {f.key: f.status for f in ledger.file_status(recid)} == dict.fromkeys(keys, "verified")
    assert target_problems(repo, source, there, [recid]) == []
    # And it stays right: the next run skips it without downloading anything.
    assert main(bulk_args(config, recids, here, "--publish")) == 0


def _cache_entry(recid: str) -> dict[str, object]:
    return {
        "record": {"recid": recid, "title": f"record {recid}", "files": []},
        "files": [{"remote": f"root://example.org//eos/{recid}/a.dat", "path": "a.dat", "size": 3}],
    }


def _bulk_all(tmp_path: Path, cache: Path) -> list[str]:
    config, token = tmp_path / "ferry.toml", tmp_path / "token"
    token.write_text("t0ken")
    token.chmod(0o600)
    config.write_text(f'[targets.t]\ntype = "invenio"\nurl = "http://127.0.0.1:9"\ntoken_file = "{token}"\n')
    return ["--config", str(config), "bulk", "--all", "--cache", str(cache), "--target", "t"]


def test_a_cache_key_that_disagrees_with_its_entry_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({"81009": _cache_entry("81009"), "81010": _cache_entry("81009")}))
    code = main([*_bulk_all(tmp_path, cache), "--dest", str(tmp_path / "d"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "'81010'" in err and "'81009'" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_a_records_file_listing_a_recid_twice_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = tmp_path / "records.json"
    first = {"recid": 5, "title": "first", "files": []}
    records.write_text(json.dumps([first, {"recid": 6, "files": []}, {**first, "title": "second"}]))
    code = main(["cache", "build", "--records", str(records), "-o", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "entries 0 and 2 are both recid 5" in err
    assert not (tmp_path / "c.json").exists()
