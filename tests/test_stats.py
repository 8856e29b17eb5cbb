"""Stats loaders, record status, summaries and `ferry stats`, on hand-written edge cases
(tests/data/stats/) and on a simulated 30-record bulk run written through StatsWriter."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from ferry.cli import main
from ferry.core.errors import InputError
from stats.events import StatsWriter, read_jsonl
from stats.load import load, open_events, runs, stage_throughput, terminal, union_seconds
from stats.records import final_record_status
from stats.summary import error_table, format_summary, summarize
from stats.synth import SynthRecord, simulate_run, synthetic_records

DATA = Path(__file__).parent / "data" / "stats"


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A crashed 30-record bulk run: 20 ok, 6 failed, 2 already done, 2 interrupted."""
    out = tmp_path_factory.mktemp("synth")
    simulate_run(out, synthetic_records(30))
    return out


@pytest.fixture(scope="module")
def synth(synth_dir: Path) -> pd.DataFrame:
    return load(synth_dir)


# --- the writer's additions: summary row and injected clock ---------------------------------


def test_summary_row_and_clock(tmp_path: Path) -> None:
    now = [1_000.0]
    with StatsWriter(tmp_path, run_id="r", summary=True, clock=lambda: now[0]) as stats:
        rec = stats.open("record", "7")
        ev = stats.open("upload", "7", "a.root", bytes=5_000_000)
        now[0] += 2.5
        ev.close("ok")
        rec.close("ok", file_count=1, zip_used=False)
        stats.open("record", "8").close("failed", error=RuntimeError("boom"))
        stats.open("download", "9", "b.root")  # never closed: an interrupted event
        now[0] += 1.5
    rows = list(read_jsonl(tmp_path / "r.jsonl"))
    upload = rows[2]
    assert upload["status"] == "ok" and upload["duration_s"] == 2.5 and upload["throughput_mbps"] == 2.0
    assert upload["start"] == datetime.fromtimestamp(1000, UTC).isoformat().replace("+00:00", ".000000Z")
    last = rows[-1]
    assert last["stage"] == "summary" and last["status"] == "failed"  # a failed record, an open event
    assert last["duration_s"] == 4.0 and last["bytes"] == 5_000_000 and last["file_count"] == 1
    assert last["extra"]["records"] == {"ok": 1, "failed": 1}
    assert last["extra"]["open_events"] == 1
    assert last["extra"]["stages"]["upload"]["bytes"] == 5_000_000
    # The CSV has every row, the summary included; the loader leaves it out of records.
    frame = load(tmp_path / "r.csv")
    assert len(frame) == len(rows)
    assert final_record_status(frame)["status"].astype(str).to_dict() == {"7": "ok", "8": "failed", "9": "interrupted"}


def test_summary_is_opt_in_and_written_once(tmp_path: Path) -> None:
    stats = StatsWriter(tmp_path, run_id="r")
    stats.record("record", "ok", "1")
    assert stats.summary()["records"] == {"ok": 1}
    stats.write_summary()
    stats.write_summary()
    stats.close()
    stages = [r["stage"] for r in read_jsonl(tmp_path / "r.jsonl")]
    assert stages == ["record", "summary"]
    assert StatsWriter(None).write_summary()["status"] == "ok"  # no directory: computes, writes nothing


# --- loaders on hand-written edge cases -----------------------------------------------------


def test_empty_run() -> None:
    frame = load(DATA / "empty")
    assert frame.empty and list(frame.columns)[:3] == ["schema_version", "run_id", "host"]
    assert str(frame["start"].dtype).startswith("datetime64") and str(frame["start"].dt.tz) == "UTC"
    assert isinstance(frame["stage"].dtype, pd.CategoricalDtype) and frame["bytes"].dtype == "Int64"
    assert final_record_status(frame).empty and open_events(frame).empty
    summary = summarize(frame)
    assert summary["records"]["total"] == 0 and summary["runs"] == []
    assert "records: 0 total" in format_summary(summary)


def test_interrupted_run_started_without_terminal() -> None:
    frame = load(DATA / "interrupted")
    still = open_events(frame)
    assert sorted(still["event_id"]) == ["dl0000000001", "rec000000001", "run000000001"]
    final = final_record_status(frame)
    assert final.loc["101", "status"] == "interrupted" and final.loc["102", "status"] == "skipped"
    assert final.loc["102", "reason"] == "already published on the target"
    assert runs(frame).iloc[0]["open_events"] == 3
    summary = summarize(frame)
    assert summary["records"]["interrupted"] == 1 and summary["open_events"] == 3
    assert "interrupted: 3 events started and never finished" in format_summary(summary)


def test_torn_and_junk_lines_are_skipped() -> None:
    frame = load(DATA / "torn")
    assert list(frame["seq"]) == [1, 2]
    assert final_record_status(frame)["status"].astype(str).to_dict() == {"201": "ok"}


def test_merged_runs_last_terminal_event_wins() -> None:
    # Argument order does not matter: runs are ordered by their first timestamp.
    frame = load([DATA / "run-b", DATA / "run-a"])
    assert list(runs(frame)["run_id"]) == ["20250301T110000Z-a00000", "20250302T110000Z-b00000"]
    assert list(runs(frame)["host"]) == ["h1", "h2"]
    final = final_record_status(frame)
    assert final.loc["301", "status"] == "ok" and final.loc["301", "run_id"] == "20250302T110000Z-b00000"
    # 302: ok in run a, then skipped (already on the target) in run b: it stays ok, with run a's facts.
    assert final.loc["302", "status"] == "ok" and final.loc["302", "run_id"] == "20250301T110000Z-a00000"
    # Each run alone says something else.
    assert final_record_status(load(DATA / "run-a"))["status"].astype(str).to_dict() == {"301": "failed", "302": "ok"}
    # A stage from a newer writer is kept; an unknown field is ignored.
    assert "checksum-audit" in frame["stage"].cat.categories and "future_field" not in frame.columns
    # The same run given twice is read once.
    twice = load([DATA / "run-a", next((DATA / "run-a").glob("*.jsonl"))])
    assert len(twice) == len(load(DATA / "run-a")) == 8
    through = stage_throughput(frame)
    assert through.loc["upload", "bytes"] == 8_000_000 and through.loc["upload", "failed"] == 1
    # Busy 2 s + 3 s, but overlapping: active 3 s in run a, 5 s in run b.
    assert through.loc["upload", "busy_s"] == 10.0 and through.loc["upload", "active_s"] == 8.0
    assert through.loc["upload", "mbps"] == 1.0


def test_records_without_record_events_are_derived() -> None:
    final = final_record_status(load(DATA / "no-record-events"))
    # 401: a failed download retried ok (the last event of the file wins); 402: one file failed.
    assert final.loc["401", "status"] == "ok" and final.loc["402", "status"] == "failed"
    assert final["derived"].all() and final.loc["402", "error_type"] == "SourceFileMissing"


def test_csv_only_run() -> None:
    frame = load(DATA / "csv-only")
    assert len(frame) == 2
    row = frame.iloc[1]
    assert bool(row["zip_used"]) is True and frame["zip_used"].dtype == "boolean"
    assert row["extra"] == {"target": "sandbox"} and row["bytes"] == 7_000_000
    assert row["end"] == pd.Timestamp("2025-03-01T13:00:09Z")


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="version 2 is newer"):
        load(DATA / "newer-version")
    with pytest.raises(InputError, match="no such stats directory"):
        load(tmp_path / "missing")
    with pytest.raises(InputError, match="no stats files"):
        load(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a stats file"):
        load(tmp_path / "notes.txt")


def test_zip_decisions_in_the_summary(tmp_path: Path) -> None:
    with StatsWriter(tmp_path, run_id="z") as stats:
        stats.open("zip", "1").close("ok", zip_used=False, reason="3 files <= 20")
        stats.open("zip", "2").close("ok", zip_used=True, file_count=40)
        stats.record("zip", "skipped", "3", reason="2 files <= 20")
        for recid, used in (("1", False), ("2", True), ("3", False)):
            stats.record("record", "ok", recid, zip_used=used)
    assert summarize(load(tmp_path))["zip"] == {
        "records_zipped": 1,
        "records_not_zipped": 2,
        "zip_ok": 1,
        "zip_failed": 0,
        "zip_skipped": 2,
    }


def test_union_seconds() -> None:
    t = pd.Timestamp("2025-01-01T00:00:00Z")
    s = pd.to_timedelta
    starts = pd.Series([t, t + s("1s"), t + s("10s")])
    ends = pd.Series([t + s("3s"), t + s("2s"), t + s("11s")])
    assert union_seconds(starts, ends) == 4.0


# --- the simulated bulk run: exact numbers ---------------------------------------------------


def _expected_moves(records: list[SynthRecord]) -> tuple[int, int, int, int]:
    """Files and bytes downloaded and uploaded, computed from the simulation's input."""
    down_files = down_bytes = up_files = up_bytes = 0
    for rec in records:
        if rec.outcome in ("no-files", "already-done", "interrupted"):
            continue
        ok_sizes = rec.sizes[1:] if rec.outcome == "download-failed" else rec.sizes
        down_files += len(ok_sizes)
        down_bytes += sum(ok_sizes)
        if rec.outcome in ("download-failed", "zip-failed"):
            continue
        uploads = [size for _, size in rec.target_files]  # a zipped record: its bundle and the bundle's manifest
        if rec.outcome == "upload-failed":
            uploads = uploads[:-1]
        up_files += len(uploads)
        up_bytes += sum(uploads)
    return down_files, down_bytes, up_files, up_bytes


def test_synthetic_run_dtypes_and_final_status(synth: pd.DataFrame) -> None:
    dtypes = synth.dtypes.astype(str).to_dict()
    assert dtypes["start"].startswith("datetime64") and dtypes["start"].endswith(", UTC]")
    assert dtypes["end"] == dtypes["start"]
    assert dtypes["stage"] == dtypes["status"] == "category"
    assert dtypes["bytes"] == dtypes["seq"] == dtypes["file_count"] == dtypes["attempts"] == "Int64"
    assert dtypes["zip_used"] == "boolean" and dtypes["recid"] == "string"
    final = final_record_status(synth)
    assert final["status"].astype(str).value_counts().to_dict() == {
        "ok": 20,
        "failed": 6,
        "skipped": 2,
        "interrupted": 2,
    }
    failed = final[final["status"] == "failed"]["error_type"].astype(str).to_dict()
    assert failed == {
        "80003": "SourceFileMissing",
        "80010": "OSError",
        "80011": "TransferFailed",
        "80015": "ValidationError",
        "80019": "NoFilesError",
        "80026": "VerificationError",
    }
    assert set(final[final["status"] == "interrupted"].index) == {"80028", "80029"}
    # Two records were cut off mid-download, plus their record events and the run event.
    assert sorted(open_events(synth)["stage"].astype(str)) == ["download", "download", "record", "record", "run"]
    # Every started event has exactly one terminal row, unless it is open.
    started = synth[synth["status"] == "started"]
    assert len(started) == len(terminal(synth)[terminal(synth)["duration_s"] > 0]) + 5


def test_synthetic_run_summary_numbers(synth: pd.DataFrame) -> None:
    summary = summarize(synth, top=5)
    assert summary["records"] == {
        "total": 30,
        "ok": 20,
        "failed": 6,
        "skipped": 2,
        "dry-run": 0,
        "interrupted": 2,
        "skipped_in_runs": 2,
        # the ok records' own files, and what held them on the target (a zipped record: its bundle and manifest)
        "files": {
            "source": sum(len(r.sizes) for r in synthetic_records(30) if r.outcome == "ok"),
            "on_target": sum(2 if r.zipped else len(r.sizes) for r in synthetic_records(30) if r.outcome == "ok"),
        },
    }
    assert summary["records"]["files"] == {"source": 89, "on_target": 51}
    down_files, down_bytes, up_files, up_bytes = _expected_moves(synthetic_records(30))
    assert (down_files, up_files) == (116, 57)
    assert summary["moved"] == {
        "bytes_downloaded": down_bytes,
        "files_downloaded": down_files,
        "bytes_uploaded": up_bytes,
        "files_uploaded": up_files,
    }
    assert summary["zip"] == {
        "records_zipped": 10,
        "records_not_zipped": 14,
        "zip_ok": 9,
        "zip_failed": 1,
        "zip_skipped": 14,
    }
    stages = summary["throughput"]["stages"]
    assert stages["download"]["failed"] == 1 and stages["upload"]["skipped"] == 2
    assert stages["publish"]["ok"] == 20 and stages["verify"]["failed"] == 1
    assert summary["throughput"]["overall_mbps"] == pytest.approx(up_bytes / summary["throughput"]["wall_s"] / 1e6)
    assert len(summary["errors"]) == 5 and all(e["count"] == 1 for e in summary["errors"])
    assert {(e["stage"], e["error_type"]) for e in error_table(synth).to_dict("records")} == {
        ("download", "SourceFileMissing"),
        ("zip", "OSError"),
        ("upload", "TransferFailed"),
        ("verify", "VerificationError"),
        ("publish", "ValidationError"),
        ("record", "NoFilesError"),
    }
    slow = [s["duration_s"] for s in summary["slowest_records"]]
    assert len(slow) == 5 and slow == sorted(slow, reverse=True)
    assert summary["open_events"] == 5
    json.dumps(summary)  # machine-readable as is
    text = format_summary(summary)
    assert "records: 30 total, 20 ok, 6 failed, 2 skipped, 2 interrupted" in text
    assert "top errors:" in text and "slowest records:" in text


def test_finished_run_csv_and_summary_row_agree(tmp_path: Path) -> None:
    simulate_run(tmp_path, synthetic_records(12, interrupted=0), run_id="done")
    from_jsonl = load(tmp_path / "done.jsonl")
    from_csv = load(tmp_path / "done.csv")
    pd.testing.assert_frame_equal(final_record_status(from_jsonl), final_record_status(from_csv), check_exact=True)
    row = from_jsonl[from_jsonl["stage"] == "summary"].iloc[0]
    assert row["start"] == pd.Timestamp("2025-03-01T09:00:00Z") == runs(from_jsonl).iloc[0]["start"]
    assert row["duration_s"] == pytest.approx(runs(from_jsonl).iloc[0]["wall_s"])
    counts = final_record_status(from_jsonl)["status"].astype(str).value_counts().to_dict()
    assert row["extra"]["records"] == counts and row["extra"]["open_events"] == 0
    assert row["bytes"] == summarize(from_jsonl)["moved"]["bytes_uploaded"]


# --- the command ----------------------------------------------------------------------------


def test_cli_summary_text_json_and_errors(synth_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "summary", str(synth_dir)]) == 0
    out = capsys.readouterr().out
    assert "run sim-run on" in out and "records: 30 total, 20 ok, 6 failed" in out
    assert main(["stats", "summary", str(synth_dir), str(DATA / "run-a"), "--json"]) == 0
    numbers = json.loads(capsys.readouterr().out)
    assert numbers["records"]["total"] == 32 and len(numbers["runs"]) == 2
    assert main(["stats", "summary", str(DATA / "newer-version")]) == 2
    assert "newer than this dataferry reads" in capsys.readouterr().err


def test_cli_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(DATA / "run-a", tmp_path / "stats")
    assert main(["stats", "figures", str(tmp_path / "stats"), "-o", str(tmp_path / "out"), "--no-html"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed and all(Path(p).is_file() and p.endswith(".png") for p in listed)
    assert {Path(p).stem for p in listed} >= {"sankey", "throughput", "durations", "concurrency", "errors"}


def test_stats_csv_on_demand_for_a_killed_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run killed with kill -9 never wrote its CSV: `ferry stats csv` writes it from the JSONL."""
    from ferry.cli import main as ferry_main
    from stats.events import StatsWriter

    stats = StatsWriter(tmp_path, run_id="killed")
    stats.open("download", "1", "a.dat", bytes=5).close("ok")
    stats.open("upload", "1", "a.dat", bytes=5)  # never closed: the process died here
    stats.close()
    (tmp_path / "killed.csv").unlink()  # a killed process never got to write its CSV
    assert ferry_main(["stats", "csv", str(tmp_path)]) == 0
    assert str(tmp_path / "killed.csv") in capsys.readouterr().out
    lines = (tmp_path / "killed.csv").read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("schema_version,run_id") and lines[-1].count(",started,") == 1
    assert ferry_main(["stats", "csv", str(tmp_path / "nothing-here")]) == 2


# --- the summary tells the truth (issue 15) ------------------------------------------------


def test_skips_of_a_rerun_are_counted_beside_the_final_status() -> None:
    summary = summarize(load([DATA / "run-a", DATA / "run-b"]))
    # 302: ok in run a, skipped (already done) in run b: final ok, and the skip is counted.
    assert summary["records"]["ok"] == 2 and summary["records"]["skipped"] == 0
    assert summary["records"]["skipped_in_runs"] == 1
    assert [r["records"] for r in summary["runs"]] == [{"ok": 1, "failed": 1}, {"ok": 1, "skipped": 1}]
    text = format_summary(summary)
    assert "1 skip(s) by later runs of records already done" in text
    assert "records 1 ok, 1 skipped" in text


def _mixed_run(directory: Path) -> pd.DataFrame:
    """Two records: per-file download rows plus the record-level download aggregate the
    engine writes, a resolve that 'moves' the record's size in no time, a verify."""
    now = [0.0]
    with StatsWriter(directory, run_id="mixed", clock=lambda: now[0]) as stats:
        for recid, sizes in (("1", [4_000_000, 6_000_000]), ("2", [10_000_000])):
            stats.open("resolve", recid).close("ok", bytes=sum(sizes), file_count=len(sizes))
            total = stats.open("download", recid, bytes=sum(sizes))
            for i, size in enumerate(sizes):
                ev = stats.open("download", recid, f"f{i}", bytes=size)
                now[0] += 1.0
                ev.close("ok", bytes=size)
            total.close("ok", bytes=sum(sizes))
            stats.record("upload", "skipped", recid, "f0", reason="already on the target")
            ver = stats.open("verify", recid, bytes=sum(sizes))
            now[0] += 0.001
            ver.close("ok", bytes=sum(sizes))
    return load(directory)


def test_counts_never_mix_files_and_records_and_rates_only_for_network_stages(tmp_path: Path) -> None:
    through = stage_throughput(_mixed_run(tmp_path))
    download = through.loc["download"]
    # 3 files, not 3 files + 2 record totals; bytes counted once.
    assert download["unit"] == "files" and download["ok"] == 3 and download["bytes"] == 20_000_000
    assert download["mbps"] == pytest.approx(20.0 / 3.0)  # 20 MB over 3 s of wall time
    assert download["median_mbps"] == pytest.approx(6.0)
    assert through.loc["resolve", "unit"] == "records" and through.loc["resolve", "ok"] == 2
    for stage in ("resolve", "verify"):  # bytes at stake, but nothing moved: no rate
        assert pd.isna(through.loc[stage, "mbps"]) and pd.isna(through.loc[stage, "median_mbps"])
    assert through.loc["upload", "skipped"] == 2 and through.loc["upload", "unit"] == "files"
    text = format_summary(summarize(_mixed_run(tmp_path / "again")))
    table = text[text.index("stage ") :]
    verify = next(line for line in table.splitlines() if line.startswith("verify"))
    assert "MB/s" not in verify and "MB" not in verify  # no 'rate' of a checksum comparison
    header = table.splitlines()[0].split()
    assert header[:2] == ["stage", "counted"] and "throughput" in header
    # Every column is explained once under the table.
    notes = table[table.index("counted: ") :]
    for column in ("counted:", "skipped:", "bytes:", "wall time:", "throughput:", "median per file:"):
        assert notes.count(column) == 1, column


def test_synthetic_record_events_say_what_went_on_the_target(synth: pd.DataFrame) -> None:
    """extra.uploaded_files as pipeline/context.py writes it: the files put on the target (a
    zipped record: its bundle and the bundle's manifest), 0 when the record stopped before
    they were known (download, zip), those already there for a record found done."""
    ends = synth[(synth["stage"] == "record") & (synth["status"] != "started")].set_index("recid")
    on_target = {str(r): e["uploaded_files"] for r, e in zip(ends.index, ends["extra"], strict=True)}
    expected = {
        "80000": 1,  # ok, 1 file
        "80001": 2,  # ok, 8 files zipped: bundle + manifest
        "80007": 5,  # ok, 5 files (not zipped)
        "80003": 0,  # download failed
        "80010": 0,  # zip failed
        "80019": 0,  # no files
        "80011": 2,  # upload failed: the bundle and manifest it was putting
        "80026": 3,  # verify failed
        "80022": 2,  # already done: found on the target with its 2 files
        "80023": 2,  # already done, 9 files held in a bundle and its manifest
    }
    assert {r: on_target[r] for r in expected} == expected
    assert len(on_target) == 28  # the two interrupted records never closed theirs
    zipped = synth[(synth["stage"] == "upload") & (synth["recid"] == "80001") & (synth["status"] != "started")]
    assert sorted(zipped["file"].astype(str)) == ["80001.zip", "80001_bundle_manifest.json"]


def test_cli_summary_shows_the_on_target_file_count(synth_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "summary", str(synth_dir)]) == 0
    out = capsys.readouterr().out
    line = (
        "files:   89 source files of the ok records, 51 on the target (zip bundles and their manifests hold the rest)"
    )
    assert line in out.splitlines()
    slowest = out.split("slowest records:")[1].splitlines()
    assert "on target" in slowest[1]
    rows = [r.split() for r in slowest[3:] if r.strip()]  # recid status duration (2) bytes (2) files on-target ...
    assert rows and all(r[7].isdigit() for r in rows), rows
    assert any(r[-1] == "yes" and int(r[7]) == 2 < int(r[6]) for r in rows), rows  # a bundle and its manifest
    assert main(["stats", "summary", str(synth_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"]["files"] == {"source": 89, "on_target": 51}
