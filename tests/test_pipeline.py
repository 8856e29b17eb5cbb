"""The single-record pipeline end to end: sandbox XRootD + portal -> sandbox repository."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from ferry.cli import main
from ferry.core.config import Secret, TargetConfig
from stats.events import read_jsonl
from tests.fixtures_repository import RepositoryHandle
from tests.fixtures_xrootd import SandboxSource


def write_config(tmp_path: Path, src: SandboxSource, repo: RepositoryHandle, **target: Any) -> Path:
    token_file = tmp_path / "token"
    token_file.write_text(repo.token)
    options = {
        "type": '"invenio"',
        "url": f'"{repo.url}"',
        "token_file": f'"{token_file}"',
        "profile": '"nrp-particles"',
        "model": '"particles"',
        "requests_per_minute": "6000",
        "requests_per_hour": "100000",
    }
    options.update({k: (f'"{v}"' if isinstance(v, str) else str(v).lower()) for k, v in target.items()})
    lines = ["[source.cernopendata]", f'portal = "{src.portal_url}"', "", "[targets.sandbox]"]
    lines += [f"{k} = {v}" for k, v in options.items()]
    lines += ["", "[limits]", "backoff_base = 0.05"]
    path = tmp_path / "ferry.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_ferry(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def remote_records(repo: RepositoryHandle) -> list[dict[str, Any]]:
    state = repo.state()
    return list(state.get("records", state.get("drafts", [])))


def test_upload_plain_record_verified_and_idempotent(
    tmp_path: Path, sandbox_source: SandboxSource, repository: RepositoryHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, sandbox_source, repository)
    dest, stats = tmp_path / "data", tmp_path / "stats"
    recid = sandbox_source.cases["plain"]
    code = run_ferry(config, "upload", recid, "--target", "sandbox", "--dest", str(dest), "--stats-dir", str(stats))
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"record {recid}: ok" in out.out
    state = repository.state()
    print(state)
    rows = [r for f in stats.glob("*.jsonl") for r in read_jsonl(f)]
    assert [r["status"] for r in rows if r["stage"] == "record"] == ["started", "ok"]
    uploads = [r for r in rows if r["stage"] == "upload" and r["status"] == "ok"]
    local = sorted(p for p in (dest / recid).iterdir() if p.is_file())
    assert len(uploads) == len(local) > 0

    # Second run: nothing uploaded again, the same single draft.
    code = run_ferry(config, "upload", recid, "--target", "sandbox", "--dest", str(dest), "--stats-dir", str(stats))
    assert code == 0, capsys.readouterr().err
    rows = [r for f in stats.glob("*.jsonl") for r in read_jsonl(f)]
    assert len([r for r in rows if r["stage"] == "upload" and r["status"] == "ok"]) == len(local)


def test_dry_run_writes_nothing(
    tmp_path: Path,
    sandbox_source: SandboxSource,
    repository: RepositoryHandle,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, sandbox_source, repository)
    dest = tmp_path / "data"
    before = repository.state()
    code = run_ferry(
        config, "upload", sandbox_source.cases["plain"], "--target", "sandbox", "--dest", str(dest), "--dry-run"
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "zip: no" in out.out and "metadata:" in out.out
    assert not dest.exists()
    assert repository.state() == before


def writes(repo: RepositoryHandle) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in repo.requests_log() if r["method"] not in ("GET", "HEAD")]


def test_invalid_metadata_is_stopped_before_any_write(
    tmp_path: Path, sandbox_source: SandboxSource, repository: RepositoryHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    # A record whose date cannot become a publication date: the profile refuses it.
    broken = dict(sandbox_source.record("plain"), date_published="sometime", recid="990101")
    records = tmp_path / "records.json"
    records.write_text(json.dumps([broken]))
    config = write_config(tmp_path, sandbox_source, repository)
    code = run_ferry(
        config, "upload", "990101", "--target", "sandbox", "--records", str(records), "--dest", str(tmp_path / "d")
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "record 990101" in err and "metadata.publication_date" in err
    assert writes(repository) == []
    assert not (tmp_path / "d" / "990101").exists()  # nothing downloaded either


def test_production_target_needs_yes(
    tmp_path: Path, sandbox_source: SandboxSource, repository: RepositoryHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, sandbox_source, repository, production=True)
    args = ["upload", sandbox_source.cases["plain"], "--target", "sandbox", "--dest", str(tmp_path / "d")]
    assert run_ferry(config, *args) == 2
    assert "production" in capsys.readouterr().err and writes(repository) == []
    assert run_ferry(config, *args, "--dry-run") == 0  # a dry run writes nothing: no --yes needed
    assert writes(repository) == []
    assert run_ferry(config, *args, "--yes") == 0
    assert writes(repository)


# The NRP model's create endpoint (write_config uses model = "particles").
CREATE = r"^POST /api/particles$"


def _rows(stats: Path) -> list[dict[str, Any]]:
    return [r for f in sorted(stats.glob("*.jsonl")) for r in read_jsonl(f)]


@pytest.mark.parametrize("index_delay_ms", [0, 1200], ids=["index-current", "index-lagging"])
def test_create_whose_answer_is_lost_makes_no_twin(
    tmp_path: Path,
    sandbox_source: SandboxSource,
    repository: RepositoryHandle,
    capsys: pytest.CaptureFixture[str],
    index_delay_ms: int,
) -> None:
    # The server creates the draft, then answers 502/504. The target raises that (it does
    # not guess); the pipeline must find the draft, asking the search again while its index
    # lags (1.2 s: its first look, 0.5 s after the failure, misses), and never POST again.
    repository.configure(error_after_rate=1.0, error_match=CREATE, index_delay_ms=index_delay_ms)
    config = write_config(tmp_path, sandbox_source, repository)
    recid = sandbox_source.cases["plain"]
    dest, stats = tmp_path / "data", tmp_path / "stats"
    code = run_ferry(config, "upload", recid, "--target", "sandbox", "--dest", str(dest), "--stats-dir", str(stats))
    assert code == 0, capsys.readouterr().err

    log = repository.requests_log()
    creates = [i for i, r in enumerate(log) if re.search(CREATE, f"{r['method']} {r['path']}")]
    assert len(creates) == 1 and log[creates[0]]["status"] >= 500  # lost, and not repeated
    (done,) = [r for r in _rows(stats) if r["stage"] == "record" and r["status"] == "ok"]
    slot = repository.state()["by_recid"][recid]
    assert slot["drafts"] == 1 and slot["ids"] == [done["extra"]["remote_id"]]
    searches = [r for r in log[creates[0] :] if r["method"] == "GET" and r["path"].startswith("/api/user/")]
    assert len(searches) >= (2 if index_delay_ms else 1)  # the lagging case did need a second look


def test_token_is_read_once_per_run_and_never_shown(
    tmp_path: Path,
    sandbox_source: SandboxSource,
    repository: RepositoryHandle,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[str] = []
    real_token = TargetConfig.token

    def counting_token(self: TargetConfig) -> Secret | None:
        reads.append(self.name)
        return real_token(self)

    monkeypatch.setattr(TargetConfig, "token", counting_token)
    config = write_config(tmp_path, sandbox_source, repository)
    recid = sandbox_source.cases["plain"]
    dest, stats, log = tmp_path / "data", tmp_path / "stats", tmp_path / "ferry.log"
    args = ["upload", recid, "--target", "sandbox", "--dest", str(dest)]
    code = run_ferry(config, *args, "--stats-dir", str(stats), "--log-level", "DEBUG", "--log-file", str(log))
    out = capsys.readouterr()
    # ferry.core.logs.setup_logging drops old handlers without closing them: close the log file
    # here, or the next in-process run leaves it to the garbage collector (a warning).
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.close()
    assert code == 0, out.err
    assert reads == ["sandbox"]  # one read for the whole run (target, its HTTP client, the stats)
    shown = [out.out, out.err, log.read_text(), *(p.read_text() for p in stats.rglob("*") if p.is_file())]
    assert log.read_text() and all(repository.token not in text for text in shown)

    # A token file that is empty or gone: a config error naming the target, before any write.
    before = writes(repository)
    token_file = tmp_path / "token"
    token_file.write_text(" \n")
    assert run_ferry(config, *args) == 2
    err = capsys.readouterr().err
    assert "targets.sandbox" in err and "is empty" in err
    token_file.unlink()
    assert run_ferry(config, *args) == 2
    err = capsys.readouterr().err
    assert "targets.sandbox" in err and "cannot read token_file" in err
    assert writes(repository) == before
