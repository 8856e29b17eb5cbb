"""Never hang, never leak (issue 16, section 2).

- A bulk against a target that is down stops after ``limits.breaker_trips`` breaker
  openings in a row, or at ``--deadline``: exit 1, every unfinished record named, and a
  re-run once the target is back finishes everything.
- SIGTERM is answered like SIGINT: exit 130, no traceback, no "leaked semaphore" warning,
  promptly even while the target is down (paused records are cancelled at once).
- The token never leaves the process: the sandbox echoes the Authorization header into
  every answer (``echo_auth``), and nothing the run wrote holds the token.

Each run here has a generous timeout only as a safety net: without the bound the run
would never end (the breaker cycled for more than 10 minutes).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.bulk_support import (
    SyntheticSource,
    bulk_args,
    ledger_problems,
    run_ferry_process,
    spawn_ferry,
    synthetic_source,
    target_problems,
    wait_for,
    write_config,
    write_recids,
)
from tests.fixtures_repository import RepositoryHandle

RepoFactory = Callable[..., RepositoryHandle]
FAST_BREAKER = {"breaker_cool_down": 0.2, "breaker_trips": 3, "retries": 2}


@pytest.fixture(scope="module")
def source() -> Iterator[SyntheticSource]:
    with synthetic_source() as src:
        yield src


def _clean(text: str) -> None:
    assert "Traceback" not in text
    assert "leaked semaphore" not in text


def test_a_target_that_stays_down_stops_the_run_naming_every_record(
    tmp_path: Path, source: SyntheticSource, repository_factory: RepoFactory
) -> None:
    repo = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000, error_rate=1.0)
    config = write_config(tmp_path, source, repo, limits=FAST_BREAKER)
    chosen = source.recids[1:7]
    args = bulk_args(
        config, write_recids(tmp_path / "recids.txt", chosen), tmp_path / "data", "--records-in-flight", "2"
    )
    log = tmp_path / "ferry.log"
    assert run_ferry_process(args, log, timeout=180) == 1
    text = log.read_text()
    _clean(text)
    assert "bulk stopped: the target stayed unavailable (circuit breaker opened 3 times in a row)" in text
    named = {r for r in chosen if f"record {r}:" in text or (f" {r}" in text.split("not started", 1)[-1])}
    assert named == set(chosen), text[-3000:]
    # Back up: the same command finishes everything, once.
    repo.configure(error_rate=0.0)
    assert run_ferry_process(args, log) == 0, log.read_text()[-3000:]
    assert target_problems(repo, source, tmp_path / "data", chosen) == []
    assert ledger_problems(tmp_path / "data", chosen) == []


def test_deadline_stops_the_run_and_a_rerun_finishes(
    tmp_path: Path, source: SyntheticSource, repository_factory: RepoFactory
) -> None:
    repo = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000, latency_ms=150)
    config = write_config(tmp_path, source, repo)
    chosen = source.recids[1:9]
    recids = write_recids(tmp_path / "recids.txt", chosen)
    args = bulk_args(config, recids, tmp_path / "data", "--records-in-flight", "2")
    log = tmp_path / "ferry.log"
    assert run_ferry_process([*args, "--deadline", "1"], log) == 1
    text = log.read_text()
    _clean(text)
    assert "bulk stopped: the deadline (1 s) was reached" in text
    assert "run the same command again to resume" in text
    assert run_ferry_process(args, log) == 0, log.read_text()[-3000:]
    assert target_problems(repo, source, tmp_path / "data", chosen) == []


def test_sigterm_while_the_target_is_down_exits_130_promptly_and_cleanly(
    tmp_path: Path, source: SyntheticSource, repository_factory: RepoFactory
) -> None:
    repo = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000, error_rate=1.0)
    # Trips would never end the run here: only the signal does.
    config = write_config(tmp_path, source, repo, limits={**FAST_BREAKER, "breaker_trips": 10_000})
    chosen = source.recids[1:5]
    args = bulk_args(config, write_recids(tmp_path / "recids.txt", chosen), tmp_path / "data")
    log = tmp_path / "ferry.log"
    proc = spawn_ferry(args, log)
    assert wait_for(lambda: "circuit breaker closed -> open" in log.read_text() or proc.poll() is not None, timeout=60)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    text = log.read_text()
    _clean(text)
    assert all(f"record {r}: not finished (interrupted)" in text or r in text for r in chosen)


def test_no_sink_holds_the_token_when_every_answer_echoes_it(
    tmp_path: Path, source: SyntheticSource, repository_factory: RepoFactory
) -> None:
    # Errors on some requests (and 404s the client expects) quote the Authorization header.
    repo = repository_factory(
        rate_per_minute=100_000, rate_per_hour=1_000_000, echo_auth=True, error_rate=0.3, transfer_fail_rate=0.2
    )
    config = write_config(tmp_path, source, repo, limits={"retries": 1})
    chosen = source.recids[1:6]
    dest, stats, logfile, out = tmp_path / "data", tmp_path / "stats", tmp_path / "debug.log", tmp_path / "out.log"
    args = bulk_args(config, write_recids(tmp_path / "recids.txt", chosen), dest, "--stats-dir", str(stats))
    args = ["--log-level", "DEBUG", "--log-file", str(logfile), *args]
    run_ferry_process(args, out, timeout=180)
    token = repo.token.encode()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "token"]
    leaks = [str(p) for p in written if token in p.read_bytes()]
    assert leaks == []
    # The planted token did reach the client: masked where it was reported.
    everything = b"".join(p.read_bytes() for p in written)
    assert b"Authorization: Bearer ***" in everything
