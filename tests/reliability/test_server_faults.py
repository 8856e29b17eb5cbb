"""Server faults (issue 16, section 4 of the suite): ``ferry bulk --publish`` against the
sandbox InvenioRDM/NRP repository with its fault knobs on.

- flaky: 5% of API requests answered 500/503, 2% of content uploads dropped mid-body, 2%
  of requests that take effect and lose their answer (502/504);
- a 429 storm (``force_429``: every request refused, with Retry-After and
  X-RateLimit-Reset) started while the run is under way;
- 2 s latency spikes on every request, switched on and off during the run;
- the target down (its process stopped) for a while, then back on the same port.

Each run must finish (exit 0), or stop bounded (exit 1, naming what is unfinished) and
finish when run again; then every record is on the target once, every file with the
source's md5, published, and the ledger agrees. Each test also checks the fault did
happen (from the server's request log), so a run that dodged it cannot pass for one that
survived it. ``--long`` runs more records and longer or repeated storms.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.bulk_support import (
    SyntheticSource,
    bulk_args,
    ledger_problems,
    run_ferry_process,
    spawn_ferry,
    synthetic_records,
    synthetic_source,
    target_problems,
    wait_for,
    write_config,
    write_recids,
)
from tests.fixtures_repository import RepositoryHandle
from tests.reliability.options import rounds

RepoFactory = Callable[..., RepositoryHandle]
FAST = {"rate_per_minute": 100_000, "rate_per_hour": 1_000_000}
# Retries quick, breaker quick to close again: a fault costs seconds, not the defaults' minutes.
LIMITS = {"backoff_base": 0.05, "backoff_max": 0.5, "retries": 4, "breaker_cool_down": 0.5, "breaker_trips": 20}


@pytest.fixture(scope="module")
def source(request: pytest.FixtureRequest) -> Iterator[SyntheticSource]:
    count = rounds(bool(request.config.getoption("--long")), 8, 36)
    with synthetic_source(synthetic_records(count, seed=21)) as src:
        yield src


def _finish(args: list[str], log: Path, first: int) -> None:
    """A run that stopped bounded (exit 1, unfinished records named) finishes when run again."""
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    if first != 0:
        assert first == 1, text[-3000:]
        assert run_ferry_process(args, log, timeout=300) == 0, log.read_text()[-3000:]


def _truth(repo: RepositoryHandle, source: SyntheticSource, dest: Path) -> None:
    assert target_problems(repo, source, dest, source.recids) == []
    assert ledger_problems(dest, source.recids) == []
    assert all(e["published"] and not e["has_draft"] for e in repo.state()["entities"])


def _during(
    proc_done: Callable[[], bool], started: Callable[[], bool], actions: list[Callable[[], None]]
) -> threading.Thread:
    """Run ``actions`` in turn in a thread once the run reached the target."""

    def go() -> None:
        if wait_for(lambda: started() or proc_done(), timeout=60) and not proc_done():
            for act in actions:
                act()

    thread = threading.Thread(target=go)
    thread.start()
    return thread


def _run_with(
    tmp_path: Path, source: SyntheticSource, repo: RepositoryHandle, actions: list[Callable[[], None]]
) -> tuple[list[str], Path, int]:
    config = write_config(tmp_path, source, repo, limits=LIMITS)
    dest, log = tmp_path / "data", tmp_path / "ferry.log"
    args = bulk_args(config, write_recids(tmp_path / "recids.txt", source.recids), dest, "--publish")
    proc = spawn_ferry(args, log)
    seen = len(repo.requests_log())
    thread = _during(lambda: proc.poll() is not None, lambda: len(repo.requests_log()) > seen + 5, actions)
    try:
        first = proc.wait(timeout=300)
    finally:
        thread.join(timeout=120)
    return args, dest, first


def test_flaky_target_500s_drops_and_lost_answers(
    tmp_path: Path, source: SyntheticSource, repository_factory: RepoFactory
) -> None:
    # drop_next: the first two content uploads are cut for certain, then 2% at random.
    repo = repository_factory(**FAST, seed=7, error_rate=0.05, drop_rate=0.02, drop_next=2, error_after_rate=0.02)
    args, dest, first = _run_with(tmp_path, source, repo, [])
    _finish(args, tmp_path / "ferry.log", first)
    _truth(repo, source, dest)
    log = repo.requests_log()
    assert sum(1 for r in log if r["status"] in (500, 503)) >= 3  # the faults did happen
    assert sum(1 for r in log if r["status"] in (502, 504)) >= 1
    assert sum(1 for r in log if r.get("dropped")) >= 2


def test_429_storm_with_retry_after_and_reset(
    tmp_path: Path, source: SyntheticSource, repository_factory: RepoFactory, long_run: bool
) -> None:
    repo = repository_factory(**FAST, retry_after=1)
    storms = rounds(long_run, 1, 3)
    per_storm = 20

    def storm() -> None:
        for _ in range(storms):
            repo.configure(force_429=per_storm)
            wait_for(lambda: _forced_left(repo) == 0, timeout=60, step=0.05)
            time.sleep(0.5)

    args, dest, first = _run_with(tmp_path, source, repo, [storm])
    _finish(args, tmp_path / "ferry.log", first)
    _truth(repo, source, dest)
    refused = [r for r in repo.requests_log() if r["status"] == 429]
    assert len(refused) >= per_storm * storms  # the storm hit the run (and was waited out)


def _forced_left(repo: RepositoryHandle) -> int:
    """The forced 429s the server still has to answer (its own count, not ours)."""
    return int(repo.state()["options"]["force_429"])


def test_latency_spikes_of_2_s(
    tmp_path: Path, source: SyntheticSource, repository_factory: RepoFactory, long_run: bool
) -> None:
    repo = repository_factory(**FAST)
    spikes = rounds(long_run, 1, 4)

    def spiky() -> None:
        for _ in range(spikes):
            repo.configure(latency_ms=2000)
            time.sleep(3.0)
            repo.configure(latency_ms=0)
            time.sleep(0.5)

    args, dest, first = _run_with(tmp_path, source, repo, [spiky])
    _finish(args, tmp_path / "ferry.log", first)
    _truth(repo, source, dest)
    assert any(r["duration"] >= 2.0 for r in repo.requests_log())  # the spike hit the run's requests


def test_target_down_for_a_while_then_back(
    tmp_path: Path, source: SyntheticSource, repository_factory: RepoFactory, long_run: bool
) -> None:
    repo = repository_factory(**FAST)
    down_s = rounds(long_run, 3, 60)  # the minute with --long

    back: list[float] = []

    def outage() -> None:
        repo.stop()
        time.sleep(down_s)
        repo.restart()
        back.append(time.time())

    args, dest, first = _run_with(tmp_path, source, repo, [outage])
    assert back, "the run ended before the target went down"
    # A short outage is waited out: the run was still at work when the target came back.
    # A minute outlasts the breaker (LIMITS: 20 trips of 0.5 s): then the run must have
    # stopped bounded (exit 1, unfinished records named) and the re-run finishes it.
    still_at_work = any(r["ts"] > back[0] for r in repo.requests_log())
    assert still_at_work or (long_run and first == 1), first
    _finish(args, tmp_path / "ferry.log", first)
    _truth(repo, source, dest)
