"""`ferry bulk` over the sandbox: every case of the source, real servers on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from stats.events import read_jsonl
from tests.fixtures_repository import RepositoryHandle
from tests.fixtures_xrootd import SandboxSource
from tests.test_pipeline import run_ferry, write_config

# "nofiles" lists no files: a metadata-only record (issue 14 1), ok like the others.
GOOD = ("plain", "unpadded", "sha1", "alder32", "index", "collide", "big", "many", "empty", "nofiles")
BAD = ("bad_checksum", "missing_file", "escape")


def test_bulk_all_cases(
    tmp_path: Path,
    sandbox_source: SandboxSource,
    repository_factory: Callable[..., RepositoryHandle],
    capsys: pytest.CaptureFixture[str],
) -> None:
    repository = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000)
    config = write_config(tmp_path, sandbox_source, repository)
    cases = sandbox_source.cases
    recids = tmp_path / "recids.txt"
    recids.write_text("# all sandbox cases\n" + "\n".join(cases[c] for c in GOOD + BAD) + "\nnot-a-recid\n")
    dest, stats = tmp_path / "data", tmp_path / "stats"
    args = ["bulk", "--recids", str(recids), "--target", "sandbox", "--dest", str(dest), "--stats-dir", str(stats)]
    code = run_ferry(config, *args)
    out = capsys.readouterr()
    assert code == 1
    for name in GOOD:
        assert f"record {cases[name]}: ok" in out.out, (name, out.out, out.err)
    for name in BAD:
        assert f"record {cases[name]}" in out.err, (name, out.err)
    assert "line" in out.err and "not-a-recid" in out.err

    rows = [r for f in stats.glob("*.jsonl") for r in read_jsonl(f)]
    finals = {r["recid"]: r["status"] for r in rows if r["stage"] == "record" and r["status"] != "started"}
    assert {cases[n] for n in GOOD} == {k for k, v in finals.items() if v == "ok"}
    assert {cases[n] for n in BAD} == {k for k, v in finals.items() if v == "failed"}
    # "many" has 40 files (over the threshold of 20); "index" has 5 files of a few KB
    # (median under 1 MiB): both are zipped, with the reason in the stats.
    zips = {r["recid"]: r for r in rows if r["stage"] == "zip" and r["status"] == "ok"}
    assert zips[cases["many"]]["zip_used"] and "40" in zips[cases["many"]]["reason"]
    assert zips[cases["index"]]["zip_used"] and "median" in zips[cases["index"]]["reason"]
    assert not zips[cases["big"]]["zip_used"]
    # One draft per recid on the target, each file verified there.
    state = repository.state()
    assert {r: v["drafts"] for r, v in state["by_recid"].items()} == {cases[n]: 1 for n in GOOD}

    # Re-run: everything good is already on the target; nothing is uploaded twice.
    code = run_ferry(config, *args)
    capsys.readouterr()
    first_run = {r["run_id"] for r in rows}
    new = [r for f in stats.glob("*.jsonl") for r in read_jsonl(f) if r["run_id"] not in first_run]
    assert code == 1 and new
    assert not [r for r in new if r["stage"] == "upload" and r["status"] == "ok"]
    skipped = [r for r in new if r["stage"] == "upload" and r["status"] == "skipped"]
    assert len(skipped) == sum(len(v["draft_files"]) for v in state["entities"])
    assert {r: v["drafts"] for r, v in repository.state()["by_recid"].items()} == {cases[n]: 1 for n in GOOD}

    # Staging folder gone (ledger, manifests, bundles): the target is the truth. Everything
    # is downloaded again, bundles come out byte-identical, and nothing is uploaded twice.
    shutil.rmtree(dest)
    seen = {r["run_id"] for f in stats.glob("*.jsonl") for r in read_jsonl(f)}
    assert run_ferry(config, *args) == 1
    capsys.readouterr()
    third = [r for f in stats.glob("*.jsonl") for r in read_jsonl(f) if r["run_id"] not in seen]
    assert [r for r in third if r["stage"] == "download" and r["file"] and r["status"] == "ok"]
    assert not [r for r in third if r["stage"] == "upload" and r["status"] == "ok"]
    assert {r: v["drafts"] for r, v in repository.state()["by_recid"].items()} == {cases[n]: 1 for n in GOOD}
