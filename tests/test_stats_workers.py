"""Stats of a run spread over workers: one file per worker, read back as one run."""

from __future__ import annotations

from pathlib import Path

from stats.events import StatsWriter
from stats.load import load
from stats.summary import format_summary, summarize


def _worker_rows(stats: Path, run_id: str, worker: str, recids: list[str], nbytes: int) -> None:
    writer = StatsWriter(stats, run_id, worker=worker)
    for recid in recids:
        record = writer.open("record", recid)
        with writer.open("upload", recid, "f.dat", bytes=nbytes):
            pass
        record.close("ok", bytes=nbytes)
    writer.close()


def test_per_worker_files_are_one_run_with_a_worker_view(tmp_path: Path) -> None:
    stats = tmp_path / "stats"
    _worker_rows(stats, "run-1", "0", ["1", "2", "3"], 1000)
    _worker_rows(stats, "run-1", "1", ["4"], 5000)
    assert sorted(p.name for p in stats.glob("*.jsonl")) == ["run-1-0.jsonl", "run-1-1.jsonl"]
    frame = load(stats)
    summary = summarize(frame)
    assert [r["run_id"] for r in summary["runs"]] == ["run-1"]  # one run, not two
    assert summary["records"]["ok"] == 4 and summary["records"]["total"] == 4
    workers = {w["worker"]: w for w in summary["workers"]}
    assert (workers["0"]["records_ok"], workers["0"]["files_uploaded"], workers["0"]["bytes_uploaded"]) == (3, 3, 3000)
    assert (workers["1"]["records_ok"], workers["1"]["bytes_uploaded"]) == (1, 5000)
    assert "per worker (--cluster):" in format_summary(summary)


def test_a_run_in_one_process_has_no_worker_view(tmp_path: Path) -> None:
    _worker_rows(tmp_path, "run-2", "", ["9"], 10)  # worker "" -> no worker id: plain <run_id>.jsonl
    assert [p.name for p in tmp_path.glob("*.jsonl")] == ["run-2.jsonl"]
    summary = summarize(load(tmp_path))
    assert summary["workers"] == [] and "per worker" not in format_summary(summary)
