"""The SQLite ledger: status flow, create intents, WAL, one run per ledger, crash safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ferry.core.checksums import Checksum
from pipeline.ledger import Ledger
from pipeline.ledger_schema import LedgerError, LedgerLocked

ROOT = Path(__file__).resolve().parents[1]


def _child(code: str) -> subprocess.Popen[str]:
    """A Python child process that imports the project; it prints lines we wait for."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _wait_line(proc: subprocess.Popen[str], expected: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != expected:
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"child said {line!r}, expected {expected!r}; stderr: {err}")


def _kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)  # reaps it and closes the pipes
    assert proc.returncode == -signal.SIGKILL


def test_record_and_file_flow(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite", target="sandbox") as ledger:
        ledger.start_run("run-1", command="bulk", target="sandbox")
        row = ledger.record("80001")
        assert row.status == "pending" and row.attempts == 0 and not row.ok
        ledger.set_files("80001", [("a.root", 10, None), ("b.root", 20, Checksum("md5", "b" * 32))])
        ledger.set_record_status("80001", "downloading", attempt=True)
        ledger.set_file("80001", "a.root", "downloaded", checksum=Checksum("md5", "a" * 32))
        with pytest.raises(LedgerError, match="file is pending"):
            ledger.set_record_status("80001", "uploaded")
        ledger.set_file("80001", "b.root", "failed", error=RuntimeError("boom"), attempt=True)
        failed = ledger.file_status("80001", "b.root")[0]
        assert failed.status == "failed" and failed.attempts == 1 and failed.last_error == "RuntimeError: boom"
        with pytest.raises(LedgerError, match=r"b\.root"):
            ledger.set_record_status("80001", "uploaded")
        for key in ("a.root", "b.root"):
            ledger.set_file("80001", key, "verified")
        row = ledger.set_record_status("80001", "uploaded")
        assert row.ok and row.file_count == 2 and row.bytes == 30 and row.attempts == 1
        assert [str(f.checksum) for f in ledger.file_status("80001")] == ["md5:" + "a" * 32, "md5:" + "b" * 32]
        assert ledger.file_status("80001", "nope") == []

        ledger.set_record_status("80002", "failed", error="portal said 404", attempt=True)
        ledger.add_records([("80003", 1, 5), ("80002", 9, 9), ("9", 1, 1)])
        assert ledger.records_with_status("pending") == ["9", "80003"]  # numeric recid order
        assert ledger.records_with_status("failed") == ["80002"]
        assert ledger.get("80002") is not None and ledger.get("80002").last_error == "portal said 404"  # type: ignore[union-attr]
        with pytest.raises(LedgerError, match="unknown record status"):
            ledger.set_record_status("80001", "done")
        with pytest.raises(LedgerError, match="unknown file status"):
            ledger.set_file("80001", "a.root", "ok")
        ledger.end_run("run-1", "ok", {"records": 3})
        s = ledger.summary()
        assert s["ok"] == 1 and s["ok_bytes"] == 30 and s["records_total"] == 4
        assert s["records"]["pending"] == 2 and s["files"]["verified"] == 2
        assert ledger.runs()[0]["summary"] == {"records": 3}
        assert ledger.interrupted_runs() == []


def test_record_without_files_or_metadata_is_never_ok(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        ledger.record("1")  # files not known yet: never done
        with pytest.raises(LedgerError, match="no files"):
            ledger.set_record_status("1", "uploaded")
        # The source lists none (file_count 0) but the record has metadata: metadata-only, done.
        ledger.record("4", file_count=0)
        assert ledger.set_record_status("4", "published").ok
        ledger.record("5", file_count=0, has_metadata=False)  # neither files nor metadata
        with pytest.raises(LedgerError, match="no metadata"):
            ledger.set_record_status("5", "published")
        ledger.record("2", file_count=1, has_metadata=False)
        ledger.set_file("2", "x", "verified")
        with pytest.raises(LedgerError, match="no metadata"):
            ledger.set_record_status("2", "published")
        assert ledger.summary()["ok"] == 1 and ledger.ok_recids() == {"4"}
        ledger.set_file("3", "x", "verified")  # files known, file_count filled in on success
        assert ledger.set_record_status("3", "uploaded").file_count == 1
        assert ledger.ok_recids() == {"3", "4"}


def test_create_intent_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger.open(path) as ledger:
        token = ledger.begin_create("80001")
        assert len(token) == 32
    with Ledger.open(path) as ledger:
        [row] = ledger.pending_creates()
        assert row.recid == "80001" and row.create_pending and row.create_token == token
        assert row.create_started_at is not None
        ledger.set_remote("80001", "abcd-1234", "draft")
        row2 = ledger.get("80001")
        assert row2 is not None and not row2.create_pending and row2.remote_id == "abcd-1234"
        assert row2.remote_state == "draft"
        ledger.set_remote_state("80001", "published")
        assert ledger.get("80001").remote_state == "published"  # type: ignore[union-attr]
        ledger.begin_create("80002")
        ledger.abandon_create("80002", "400 bad metadata")
        assert ledger.pending_creates() == []
        assert ledger.summary()["create_pending"] == 0


def test_wal_target_binding_readonly_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger.open(path, target="nrp") as ledger:
        ledger.record("1")
        assert ledger._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert Path(str(path) + "-wal").exists()
        assert ledger.target == "nrp"
    with pytest.raises(LedgerError, match="belongs to target 'nrp'"):
        Ledger.open(path, target="zenodo")
    with Ledger.open(path, readonly=True) as ro:
        assert ro.records_with_status() == ["1"]
        with pytest.raises(LedgerError, match="read-only"):
            ro.record("2")
    with pytest.raises(LedgerError, match="does not exist"):
        Ledger.open(tmp_path / "missing.sqlite", readonly=True)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database, just some text" * 100)
    with pytest.raises(LedgerError, match="not a usable SQLite database"):
        Ledger.open(junk)
    Ledger.open(junk.with_name("ok.sqlite")).close()  # the failed open released its lock
    ledger = Ledger.open(path)
    ledger.close()
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.record("3")


async def test_async_run_helper(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        await ledger.run(ledger.set_file, "5", "f", "downloaded", size=3)
        rows = await ledger.run(ledger.file_status, "5")
        assert rows[0].size == 3 and rows[0].status == "downloaded"


def test_second_run_on_same_ledger_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    holder = _child(
        f"""
        import time
        from pipeline.ledger import Ledger
        ledger = Ledger.open({str(path)!r})
        print("open", flush=True)
        time.sleep(60)
        """
    )
    try:
        _wait_line(holder, "open")
        with pytest.raises(LedgerLocked, match=f"in use by pid {holder.pid}"):
            Ledger.open(path)
        with Ledger.open(path, readonly=True) as ro:  # views still work
            assert ro.records_with_status() == []
    finally:
        _kill9(holder)
    # The kernel dropped the lock with the process: no stale lock after kill -9.
    with Ledger.open(path) as ledger:
        assert ledger.summary()["records_total"] == 0
    # Within one process, too.
    first = Ledger.open(path)
    with pytest.raises(LedgerLocked):
        Ledger.open(path)
    first.close()


def test_kill9_inside_a_transaction_leaves_it_unapplied(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    child = _child(
        f"""
        import time
        from pipeline.ledger import Ledger
        ledger = Ledger.open({str(path)!r})
        ledger.set_files("1", [("a", 1, None)])
        ledger.begin_create("1")
        with ledger._tx() as c:  # a transaction the kill will interrupt half-way
            c.execute("UPDATE records SET status = 'uploaded' WHERE recid = '1'")
            c.executemany("INSERT INTO files (recid, key, updated_at) VALUES ('1', ?, 'x')",
                          [(f"k{{i}}",) for i in range(5000)])
            print("inside", flush=True)
            time.sleep(60)
        """
    )
    _wait_line(child, "inside")
    _kill9(child)
    with Ledger.open(path) as ledger:
        assert ledger._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        row = ledger.get("1")
        assert row is not None and row.status == "pending" and row.create_pending
        assert [f.key for f in ledger.file_status("1")] == ["a"]


def test_kill9_at_random_moments_keeps_records_whole(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    for trial in range(3):
        child = _child(
            f"""
            from ferry.core.checksums import Checksum
            from pipeline.ledger import Ledger
            ledger = Ledger.open({str(path)!r})
            print("go", flush=True)
            for i in range(100000):
                recid = "{trial}" + str(i)
                ledger.set_files(recid, [(f"f{{j}}", j, None) for j in range(300)])
                for j in range(0, 300, 100):
                    ledger.set_file(recid, f"f{{j}}", "verified", checksum=Checksum("md5", "c" * 32))
            """
        )
        _wait_line(child, "go")
        time.sleep(0.3 + 0.2 * trial)  # not a timing assertion: just where the kill lands
        _kill9(child)
    with Ledger.open(path) as ledger:
        c = ledger._conn
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = c.execute(
            "SELECT r.recid, r.file_count, r.bytes, count(f.key), sum(f.size) FROM records r "
            "LEFT JOIN files f USING (recid) GROUP BY r.recid"
        ).fetchall()
        assert rows, "the children wrote nothing before being killed"
        for recid, file_count, nbytes, nfiles, total in rows:
            assert (file_count, nfiles) == (300, 300), recid
            assert nbytes == total == sum(range(300)), recid
    # A killed run's lock is free again and nothing was left half-written (verified above).


def test_sqlite_sees_committed_rows_from_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger.open(path) as ledger:
        ledger.set_record_status("7", "downloaded")
        other = sqlite3.connect(path)
        assert other.execute("SELECT status FROM records WHERE recid = '7'").fetchone() == ("downloaded",)
        other.close()
