"""Two runs on one target never duplicate a record (issue 16, section 1a).

The ledger lock is per destination; the target is shared. Two `ferry bulk` runs with
different --dest against a repository whose search lags 2 s both miss the other's fresh
draft. The claim (``pipeline.claims``) keeps the oldest create; the loser discards its own
draft and names the winner. Judged by the repository's own state. One round in CI,
``ROUNDS`` with ``--long`` (tests/reliability/options.py), each on a fresh repository.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.claims import ClaimLost, settle_claim
from tests.bulk_support import (
    SyntheticSource,
    bulk_args,
    run_ferry_process,
    spawn_ferry,
    synthetic_source,
    target_problems,
    write_config,
    write_recids,
)
from tests.fixtures_repository import RepositoryHandle
from tests.reliability.options import rounds
from upload.targets.base import Abilities, RemoteRecord

RepoFactory = Callable[..., RepositoryHandle]
ROUNDS = 10  # with --long
LOST = "another run created this record first"


@pytest.fixture(scope="module")
def source() -> Iterator[SyntheticSource]:
    with synthetic_source() as src:
        yield src


@pytest.fixture
def repeats(long_run: bool) -> int:
    return rounds(long_run, 1, ROUNDS)


def test_two_runs_with_other_dests_and_lagging_search_make_one_record_each(
    tmp_path: Path, source: SyntheticSource, repository_factory: RepoFactory, repeats: int
) -> None:
    settled = 0
    for n in range(repeats):
        here = tmp_path / f"round-{n}"
        here.mkdir()
        repo = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000, index_delay_ms=2000)
        try:
            settled += _two_runs(here, source, repo)
        finally:
            repo.stop()
    print(f"\nconcurrent invenio: {repeats} round(s), {settled} claim(s) settled, 0 duplicates")


def _two_runs(here: Path, source: SyntheticSource, repo: RepositoryHandle) -> int:
    """One round: two runs at once, then each again; how many claims the losers reported."""
    config = write_config(here, source, repo)
    # Unzipped records (the bundle check reads one dest's staged bundles).
    chosen = [source.recids[i] for i in (1, 2, 3, 5, 6)]
    recids = write_recids(here / "recids.txt", chosen)
    runs = []
    for name in ("a", "b"):
        args = bulk_args(config, recids, here / name, "--publish")
        runs.append((args, here / f"{name}.log", spawn_ferry(args, here / f"{name}.log")))
    codes = [proc.wait(timeout=120) for _, _, proc in runs]
    logs = [log.read_text() for _, log, _ in runs]
    assert "Traceback" not in "".join(logs)
    # One record per recid on the target, whatever each run reported.
    assert target_problems(repo, source, here / "a", chosen) == [], logs
    lost = sum(text.count(LOST) for text in logs)
    # Every record either went through in one run only, or the loser said so (exit 1).
    assert all(code in (0, 1) for code in codes), logs
    assert lost == 0 or 1 in codes
    # Re-runs (after the index caught up) finish everything on both dests, still one each.
    for args, log, _ in runs:
        assert run_ferry_process(args, log) == 0, log.read_text()[-3000:]
    assert target_problems(repo, source, here / "a", chosen) == []
    assert all(e["published"] and not e["has_draft"] for e in repo.state()["entities"])
    return lost


# --- the rule itself, on a scripted target ------------------------------------------------


class ScriptedTarget:
    """``claimants`` answers from a script (one list per call); ``discard`` is recorded."""

    abilities = Abilities(hashes=("md5",), drafts=True, search=True, claims=True)

    def __init__(self, script: list[list[RemoteRecord]]) -> None:
        self.script = script
        self.calls = 0
        self.discarded: list[str] = []

    async def claimants(self, recid: str, query: str) -> list[RemoteRecord]:
        answer = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return answer

    async def discard(self, rec: RemoteRecord) -> None:
        self.discarded.append(rec.id)


def _rec(rid: str, state: Any = "draft") -> RemoteRecord:
    return RemoteRecord(id=rid, recid="1", state=state)


async def _direct(op: Callable[[], Any]) -> Any:
    return await op()


def _settle(target: ScriptedTarget, ours: RemoteRecord) -> None:
    asyncio.run(settle_claim(target, "1", "q", ours, _direct, delays=(0.0, 0.0, 0.0)))  # type: ignore[arg-type]


def test_oldest_create_wins_and_the_loser_discards_its_draft() -> None:
    target = ScriptedTarget([[_rec("old", "published"), _rec("mine")]])
    with pytest.raises(ClaimLost, match="published old") as info:
        _settle(target, _rec("mine"))
    assert target.discarded == ["mine"]
    assert info.value.recid == "1" and not info.value.retryable


def test_the_winner_keeps_its_draft_even_when_newer_ones_exist() -> None:
    target = ScriptedTarget([[_rec("mine"), _rec("newer")]])
    _settle(target, _rec("mine"))
    assert target.discarded == []


def test_waits_until_its_own_draft_is_visible_before_judging() -> None:
    # The search does not show our draft yet (nor the older rival): judging then would keep
    # both drafts. The rule waits for our own draft to appear.
    target = ScriptedTarget([[], [], [_rec("old"), _rec("mine")]])
    with pytest.raises(ClaimLost):
        _settle(target, _rec("mine"))
    assert target.calls == 3 and target.discarded == ["mine"]


def test_a_target_without_claims_is_not_asked() -> None:
    target = ScriptedTarget([[_rec("old"), _rec("mine")]])
    target.abilities = Abilities(hashes=("md5",))
    _settle(target, _rec("mine"))
    assert target.calls == 0
