"""Disk full and local faults (issue 16, section 4).

A full disk stops the run cleanly: the record, the file and the space needed are named, no
traceback, no partial file left, the ledger consistent; a re-run after freeing space
finishes. Tested on a real small tmpfs (``mount -t tmpfs``, as root; skipped where mounting
is not allowed) and, everywhere, with ENOSPC injected at the write call.
"""

from __future__ import annotations

import contextlib
import errno
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.cli import main
from ferry.core.errors import DiskFull, is_disk_full
from pipeline.ledger import Ledger
from tests.bulk_support import (
    SyntheticSource,
    bulk_args,
    ledger_problems,
    synthetic_source,
    target_problems,
    write_config,
    write_recids,
)
from tests.fixtures_repository import RepositoryHandle
from tests.test_zip import make_record

RepoFactory = Callable[..., RepositoryHandle]


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the ENOSPC injection tests cover it")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def grow(where: Path, size: str) -> None:
    """Free space: a tmpfs is resized in place (the files stay)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)


@pytest.fixture(scope="module")
def source() -> Iterator[SyntheticSource]:
    with synthetic_source() as src:
        yield src


def partials(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith((".partial", ".part")))


def test_bulk_on_a_full_disk_stops_cleanly_and_a_rerun_finishes(
    tmp_path: Path, source: SyntheticSource, repository_factory: RepoFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000)
    config = write_config(tmp_path, source, repo)
    recids = source.recids[:12]
    listing = write_recids(tmp_path / "recids.txt", recids)
    with small_tmpfs(tmp_path / "fs", "3m") as fs:
        dest = fs / "d"
        code = main(bulk_args(config, listing, dest))
        out = capsys.readouterr()
        assert code == 1, out.err
        assert "Traceback" not in out.err, out.err
        assert "disk full" in out.err and "free space and run again" in out.err
        assert "bytes free" in out.err and ("needed" in out.err or "the ledger" in out.err)  # ledger: size unknown
        assert "bulk:" in out.out  # the summary is printed
        assert "run the same command again to resume" in out.err
        # Every record not done is named; nothing half-written stays behind.
        assert partials(dest) == []
        with Ledger.open(dest / ".ferry" / "ledger-sandbox.sqlite", readonly=True) as ledger:
            assert ledger._read("PRAGMA integrity_check") == [("ok",)]
        grow(fs, "64m")
        assert main(bulk_args(config, listing, dest)) == 0, capsys.readouterr().err
        capsys.readouterr()
        assert target_problems(repo, source, dest, recids) == []
        assert ledger_problems(dest, recids) == []


def test_zip_on_a_full_disk_names_the_bundle_and_leaves_no_partial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_tmpfs(tmp_path / "fs", "600k") as fs:
        # A downloaded record over the zip threshold: ~0.4 MB of incompressible bytes.
        files = {f"f{i:02d}.dat": random.Random(i).randbytes(16_000) for i in range(25)}
        record = make_record(fs / "d", "42", files)
        code = main(["zip", "42", "--dest", str(fs / "d")])
        err = capsys.readouterr().err
        assert code == 1, err
        assert "Traceback" not in err
        assert "record 42" in err and "disk full" in err and "42_bundle" in err
        assert partials(fs) == []
        grow(fs, "8m")
        assert main(["zip", "42", "--dest", str(fs / "d")]) == 0, capsys.readouterr().err
        assert partials(fs) == [] and list(record.glob("42_bundle*.zip"))


# --- ENOSPC injected at the write call (no mount needed) ----------------------------------


def test_the_sink_names_the_file_and_the_bytes_it_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import download.sink as sink

    def no_space(fd: int, data: object, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sink.os, "pwrite", no_space)
    path = tmp_path / "x.part"
    with open(path, "wb") as f, pytest.raises(DiskFull) as info:
        sink.pwrite_all(f.fileno(), b"x" * 1000, 0)
    assert str(path) in str(info.value) and "needed 1000 bytes" in str(info.value)
    assert is_disk_full(info.value)


def test_a_full_ledger_is_a_disk_full_error_and_rolls_back(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite", target="t") as ledger:
        ledger.set_files("1", [("a", 1, None)])
        real = ledger._conn

        class Full:
            """The connection, whose COMMIT finds the disk full (SQLITE_FULL)."""

            in_transaction = property(lambda self: real.in_transaction)

            def execute(self, sql: str, *args: Any) -> object:
                if sql == "COMMIT":
                    raise sqlite3.OperationalError("database or disk is full")
                return real.execute(sql, *args)

        ledger._conn = Full()  # type: ignore[assignment]
        with pytest.raises(DiskFull) as info:
            ledger.set_file("1", "a", "failed", error="x")
        assert "the ledger" in str(info.value) and str(tmp_path / "l.sqlite") in str(info.value)
        ledger._conn = real
        assert [f.status for f in ledger.file_status("1")] == ["pending"]  # the change was rolled back
        assert not real.in_transaction


def test_disk_full_is_found_through_wrapping() -> None:
    inner = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert not is_disk_full(OSError(errno.EACCES, "denied"))
    assert shutil.disk_usage("/").free >= 0
