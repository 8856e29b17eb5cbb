"""`ferry bulk --cluster local:2`: the same run as Dask tasks on two worker processes.

Judged by the sandbox repository's own state and request log: every record exactly once,
every file's md5 equal to the source's, the request rate within the budget; and by the
merged stats: every record counted once. One worker process is killed (SIGKILL, by PID)
while records are in flight: its records run again on the other worker (or its
restarted self) without a duplicate on the target.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.runners.dask import parse_cluster
from tests.bulk_support import (
    BASE,
    SyntheticSource,
    bulk_args,
    make_record,
    max_in_window,
    run_ferry_process,
    spawn_ferry,
    stats_rows,
    synthetic_source,
    target_problems,
    wait_for,
    write_config,
    write_recids,
)
from tests.fixtures_repository import RepositoryHandle

pytest.importorskip("distributed", reason="dataferry[cluster] (dask distributed) is installed by `make setup`")

NO_ZIP = {"zip_threshold": 1000, "zip_small_median_bytes": 0}


def one_file_records(count: int) -> list[dict[str, Any]]:
    """``count`` records of one small file each: about ten requests per record."""
    out = []
    for i in range(count):
        recid = str(990001 + i)
        uri = f"root://eospublic.cern.ch/{BASE}/{recid}/only_{recid}.dat"
        out.append(make_record(recid, [{"uri": uri, "size": 2000 + 37 * i, "checksum": ""}], ["Collision"]))
    return out


@pytest.fixture(scope="module")
def source() -> Iterator[SyntheticSource]:
    with synthetic_source(one_file_records(30)) as src:
        yield src


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        out += [int(k) for k in kids]
    return out


def _worker_pids(pid: int) -> list[int]:
    """The Dask worker processes the ferry client started: the children of its fork server
    (local workers are forked from one, pipeline.runners.dask), or spawned children."""
    pids = []
    for child in _children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"forkserver" in cmd:
            pids += _children(child)
        elif b"multiprocessing" in cmd and b"resource_tracker" not in cmd:
            pids.append(child)
    return pids


def _densest(rows: list[dict[str, Any]], window: float) -> str:
    """The requests of the busiest ``window`` (for a failure message)."""
    rows = sorted(rows, key=lambda r: float(r["ts"]))
    best, lo, span = 0, 0, (0, 0)
    for hi, row in enumerate(rows):
        while float(row["ts"]) - float(rows[lo]["ts"]) >= window:
            lo += 1
        if hi - lo + 1 > best:
            best, span = hi - lo + 1, (lo, hi)
    inside = rows[span[0] : span[1] + 1]
    t0 = float(inside[0]["ts"])
    return "\n".join(f"{float(r['ts']) - t0:7.3f} {r['method']} {r['path']} {r.get('status')}" for r in inside)


def test_cluster_values_are_checked() -> None:
    assert parse_cluster("local:4") == ("local", 4)
    assert parse_cluster("tcp://127.0.0.1:8786") == ("address", "tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="local:N"):
        parse_cluster("kubernetes")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_bulk_on_two_workers_with_one_killed(
    tmp_path: Path, source: SyntheticSource, repository: RepositoryHandle
) -> None:
    # The budget binds: 30 records need about 280 requests, more than one minute's worth
    # (the run takes a little over a minute whatever the record count, once it binds).
    budget = 200  # requests per minute for the whole cluster
    repository.configure(index_delay_ms=300, rate_per_minute=10_000, rate_per_hour=100_000)
    config = write_config(tmp_path, source, repository, limits=NO_ZIP, requests_per_minute=budget, publish=True)
    recids = write_recids(tmp_path / "recids.txt", source.recids)
    dest, stats, log = tmp_path / "data", tmp_path / "stats", tmp_path / "ferry.log"
    args = bulk_args(config, recids, dest, "--cluster", "local:2", "--stats-dir", str(stats))
    started = time.monotonic()
    proc = spawn_ferry(args, log)
    try:
        seen = lambda: log.read_text()[-2000:] + "\n" + _densest(repository.requests_log(), 1e9)[-3000:]  # noqa: E731
        # Kill while records are in flight: a third of the first minute's budget is spent.
        in_flight = lambda: len(repository.requests_log()) >= budget // 3  # noqa: E731
        assert wait_for(in_flight, timeout=120), seen()
        workers = _worker_pids(proc.pid)
        assert len(workers) == 2, f"expected two worker processes, found {workers}"
        os.kill(workers[0], signal.SIGKILL)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 0, text[-3000:]
    print(f"cluster run: {time.monotonic() - started:.1f} s")
    assert target_problems(repository, source, dest, source.recids) == []
    first_run = repository.requests_log()
    times = [float(r["ts"]) for r in first_run]
    assert len(times) > budget, "the run must need more than one minute's budget, or the check proves nothing"
    assert max_in_window(times, 60.0) <= budget, _densest(first_run, 60.0)
    rows = stats_rows(stats)
    records = [r for r in rows if r["stage"] == "record" and r["status"] in ("ok", "skipped", "failed")]
    assert sorted(r["recid"] for r in records if r["status"] != "failed") == sorted(source.recids)
    # Worker rows come back through the client: every row of a record carries its worker.
    assert all(r.get("worker") for r in rows if r["stage"] in ("record", "upload", "download")), rows[:3]

    # Run again on the cluster: the target has everything, nothing is uploaded, and the
    # client's ledger spares the workers the downloads (one look at the target each).
    before = len(first_run)
    again = [*args[: args.index("--stats-dir")], "--stats-dir", str(tmp_path / "stats-again")]
    assert run_ferry_process(again, tmp_path / "again.log", timeout=300) == 0, (tmp_path / "again.log").read_text()
    puts = [r for r in repository.requests_log()[before:] if r["method"] in ("POST", "PUT")]
    assert puts == [], puts[:5]
    rows = stats_rows(tmp_path / "stats-again")
    downloads = [r for r in rows if r["stage"] == "download" and r["status"] == "ok"]
    assert downloads == [], downloads[:3]
    skipped = {r["recid"] for r in rows if r["stage"] == "record" and r["status"] == "skipped"}
    assert skipped == set(source.recids), rows[:5]
