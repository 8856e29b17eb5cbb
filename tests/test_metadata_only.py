"""Records without files, and records of many experiments, through `ferry upload` / `ferry bulk`.

Against the sandbox repository (NRP mode, particles model) and the sandbox XRootD + portal:
a metadata-only record is created with ``files.enabled = false``, verified, published and
skipped on a re-run; a record with neither files nor a title fails alone, saying so; a
record whose ``distribution`` claims disagree with its real files is flagged in the plan
and in stats; records of five experiments go through ``ferry upload --records``.
"""

from __future__ import annotations

import copy
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stats.events import read_jsonl
from tests.fixtures_repository import RepositoryHandle
from tests.fixtures_xrootd import SandboxSource
from tests.test_pipeline import run_ferry, write_config, writes

RECORDS = Path(__file__).parent / "data" / "records"


def own_record(experiment: str, recid: str) -> dict[str, Any]:
    """One of the hand-written test records (tests/data/records/<experiment>.json)."""
    rows = json.loads((RECORDS / f"{experiment}.json").read_text(encoding="utf-8"))
    return copy.deepcopy(next(r for r in rows if str(r["recid"]) == recid))


def rows(stats: Path) -> list[dict[str, Any]]:
    return [r for f in sorted(stats.glob("*.jsonl")) for r in read_jsonl(f)]


def record_events(stats: Path, recid: str) -> list[dict[str, Any]]:
    return [r for r in rows(stats) if r["stage"] == "record" and r["recid"] == recid and r["status"] != "started"]


def entity(repo: RepositoryHandle, recid: str) -> dict[str, Any]:
    found = [e for e in repo.state()["entities"] if e["recid"] == recid]
    assert len(found) == 1, found  # never a twin
    return found[0]


def published_body(repo: RepositoryHandle, record_id: str) -> dict[str, Any]:
    """The published record as the repository serves it (not what the client believes)."""
    request = urllib.request.Request(
        f"{repo.url}/api/particles/{record_id}", headers={"Authorization": f"Bearer {repo.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        body: dict[str, Any] = json.loads(answer.read())
    return body


def write_records(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_metadata_only_record_published_then_skipped(
    tmp_path: Path, sandbox_source: SandboxSource, repository: RepositoryHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    record = own_record("cms", "93300")  # a CMS author list: no files
    assert not record.get("files")
    records = write_records(tmp_path, [record])
    config = write_config(tmp_path, sandbox_source, repository)
    dest, stats = tmp_path / "data", tmp_path / "stats"
    args = ["upload", "93300", "--target", "sandbox", "--records", str(records), "--dest", str(dest)]
    args += ["--stats-dir", str(stats), "--publish"]

    code = run_ferry(config, *args)
    out = capsys.readouterr()
    assert code == 0, out.err
    found = entity(repository, "93300")
    assert found["published"]
    assert not found["record_files"] and not found["draft_files"]
    body = published_body(repository, found["id"])
    assert body["files"]["enabled"] is False
    assert body["metadata"]["title"] == record["title"]
    assert [c["person_or_org"]["family_name"] for c in body["metadata"]["creators"]][:2] == [
        a["name"].split(",")[0] for a in record["authors"][:2]
    ]
    assert not (dest / "93300").exists() or not any((dest / "93300").iterdir())  # nothing downloaded
    (event,) = record_events(stats, "93300")
    assert event["status"] == "ok" and event["reason"].startswith("metadata-only")
    extra = event["extra"] if isinstance(event["extra"], dict) else json.loads(event["extra"])
    assert extra["metadata_only"] is True
    assert [r for r in rows(stats) if r["stage"] == "publish" and r["status"] == "ok"]

    # A re-run finds it published: skipped, and nothing written on the target.
    before = len(writes(repository))
    code = run_ferry(config, *args)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert len(writes(repository)) == before
    events = sorted(record_events(stats, "93300"), key=lambda e: e["end"])
    assert [e["status"] for e in events] == ["ok", "skipped"]
    assert "already published as " + found["id"] in events[-1]["reason"]
    assert entity(repository, "93300")["id"] == found["id"]


def test_bulk_a_record_with_neither_files_nor_title_fails_alone(
    tmp_path: Path, sandbox_source: SandboxSource, repository: RepositoryHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    good = own_record("cms", "93400")
    nameless = own_record("cms", "93300")
    nameless["recid"] = 93399
    del nameless["title"]
    records = write_records(tmp_path, [good, nameless])
    recids = tmp_path / "recids.txt"
    recids.write_text("93400\n93399\n")
    config = write_config(tmp_path, sandbox_source, repository)
    stats = tmp_path / "stats"
    code = run_ferry(
        config, "bulk", "--recids", str(recids), "--records", str(records), "--target", "sandbox",
        "--dest", str(tmp_path / "d"), "--stats-dir", str(stats), "--publish",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "record 93399" in err and "no title and lists no files" in err
    assert "record 93400" not in err
    assert entity(repository, "93400")["published"]
    assert not [e for e in repository.state()["entities"] if e["recid"] == "93399"]
    (failed,) = record_events(stats, "93399")
    assert failed["status"] == "failed" and "no title and lists no files" in failed["error"]


def test_distribution_disagreement_flagged_in_plan_and_stats(
    tmp_path: Path, sandbox_source: SandboxSource, repository: RepositoryHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    record = copy.deepcopy(sandbox_source.record("plain"))
    recid = str(record["recid"])
    real = len(record["files"])
    record["distribution"] = {"number_files": real + 5, "size": 1}
    records = write_records(tmp_path, [record])
    config = write_config(tmp_path, sandbox_source, repository)
    stats = tmp_path / "stats"
    code = run_ferry(
        config, "upload", recid, "--target", "sandbox", "--records", str(records),
        "--dest", str(tmp_path / "d"), "--stats-dir", str(stats), "--dry-run",
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"distribution: record {recid}: distribution.number_files says {real + 5}, the record has {real}" in out.out
    assert "distribution.size says 1 bytes" in out.out
    assert writes(repository) == []
    events = record_events(stats, recid)
    assert events and all(e["status"] == "dry-run" for e in events)
    for event in events:  # the plan's row and the record's own event both carry the notes
        extra = event["extra"] if isinstance(event["extra"], dict) else json.loads(event["extra"])
        assert len(extra["distribution"]) == 2


# Five experiments: the CMS records hold no files; the others get the sandbox's served
# files (their own URIs point at the public EOS, which tests never reach).
EXPERIMENTS = [("alice", "91101"), ("atlas", "92001"), ("lhcb", "94000"), ("opera", "95000"), ("cms", "93400")]


def test_records_of_five_experiments_through_upload(
    tmp_path: Path,
    sandbox_source: SandboxSource,
    repository_factory: Callable[..., RepositoryHandle],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Five uploads pass the sandbox's default 100 requests/min: its 429 then held the run
    # for the rest of the minute (60 s of this test). Rate limits are tested elsewhere.
    repository = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000)
    served = sandbox_source.record("plain")["files"]
    chosen = []
    for experiment, recid in EXPERIMENTS:
        record = own_record(experiment, recid)
        if record.get("files"):
            record["files"] = copy.deepcopy(served)
        chosen.append(record)
    records = write_records(tmp_path, chosen)
    config = write_config(tmp_path, sandbox_source, repository)
    dest, stats = tmp_path / "data", tmp_path / "stats"
    for (experiment, recid), record in zip(EXPERIMENTS, chosen, strict=True):
        code = run_ferry(
            config, "upload", recid, "--target", "sandbox", "--records", str(records),
            "--dest", str(dest), "--stats-dir", str(stats), "--publish",
        )  # fmt: skip
        out = capsys.readouterr()
        assert code == 0, f"{experiment}: {out.err}"
        found = entity(repository, recid)
        assert found["published"], experiment
        body = published_body(repository, found["id"])
        md = body["metadata"]
        assert md["title"] == record["title"] and md["recid"] == int(recid)
        assert md["experiment"].casefold() == experiment.casefold()
        if record.get("files"):
            assert body["files"]["enabled"] is True
            assert len(found["record_files"]) == len(served)  # a few files: not zipped
            # the real files' extensions, not the record's own claims
            assert sorted(md["file_types"]) == sorted({f["uri"].rsplit(".", 1)[-1] for f in served})
        else:
            assert body["files"]["enabled"] is False and not found["record_files"]
