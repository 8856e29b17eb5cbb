"""The archive download's disk side: the writer threads (archive/writer.py) and placing
fetched files under the folder and nowhere else (archive/placing.py)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from archive.placing import Placer
from archive.writer import Writers
from ferry.core.errors import InputError, UnsafePathError


async def test_writers_run_jobs_in_their_threads_and_hand_back_results_and_errors() -> None:
    def job(n: int) -> tuple[int, str]:
        if n % 7 == 3:
            raise ValueError(f"job {n} failed")
        return n * n, threading.current_thread().name

    async with Writers(threads=2) as writers:
        outcomes = await asyncio.gather(*(writers.run(job, n) for n in range(200)), return_exceptions=True)
    for n, got in enumerate(outcomes):
        if n % 7 == 3:
            assert isinstance(got, ValueError) and str(got) == f"job {n} failed"
        else:
            assert isinstance(got, tuple) and got[0] == n * n and got[1].startswith("ferry-writer-")
    assert not any(t.name.startswith("ferry-writer-") for t in threading.enumerate())  # joined on exit


async def test_a_cancelled_waiter_leaves_its_job_to_finish_and_the_others_unharmed() -> None:
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def slow() -> str:
        started.set()
        release.wait(10)
        done.append("slow")
        return "slow"

    async with Writers(threads=1) as writers:
        waiter = asyncio.ensure_future(writers.run(slow))
        later = writers.run(lambda: "later")
        await asyncio.to_thread(started.wait, 10)
        waiter.cancel()
        release.set()
        assert await later == "later"
    assert done == ["slow"] and waiter.cancelled()


def test_writers_refuse_work_outside_their_block() -> None:
    with pytest.raises(RuntimeError, match="outside"):
        Writers().run(print)


def _part(tmp_path: Path, data: bytes = b"fetched") -> Path:
    part = tmp_path / "dst" / ".ferry" / "parts" / "x.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data)
    return part


def test_a_file_is_placed_in_folders_made_once(tmp_path: Path) -> None:
    placer = Placer(tmp_path / "dst", "manifest of set/1")
    placer.place(_part(tmp_path, b"one"), "a/b/c.dat")
    placer.place(_part(tmp_path, b"two"), "a/b/d.dat")
    assert (tmp_path / "dst/a/b/c.dat").read_bytes() == b"one" and (tmp_path / "dst/a/b/d.dat").read_bytes() == b"two"


def test_a_folder_symlinked_out_of_the_download_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "a").symlink_to(tmp_path / "elsewhere")
    placer = Placer(tmp_path / "dst", "manifest of set/1")
    part = _part(tmp_path)
    with pytest.raises(UnsafePathError, match=r"'a/b/c.dat' resolves outside .*manifest of set/1"):
        placer.place(part, "a/b/c.dat")
    assert list((tmp_path / "elsewhere").iterdir()) == [] and part.exists()  # nothing made out there
    with pytest.raises(UnsafePathError, match="climbs out"):
        placer.place(part, "../escape.dat")
    assert not (tmp_path / "escape.dat").exists()


def test_a_symlink_at_the_file_name_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.dat"
    outside.write_bytes(b"theirs")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "f.dat").symlink_to(outside)
    Placer(tmp_path / "dst", "manifest of set/1").place(_part(tmp_path, b"ours"), "f.dat")
    assert outside.read_bytes() == b"theirs"
    assert not (tmp_path / "dst" / "f.dat").is_symlink() and (tmp_path / "dst" / "f.dat").read_bytes() == b"ours"


def test_a_folder_where_the_manifest_lists_a_file_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "dst" / "f.dat").mkdir(parents=True)
    (tmp_path / "dst" / "f.dat" / "inner").write_bytes(b"kept")
    with pytest.raises(InputError, match="is a folder"):
        Placer(tmp_path / "dst", "manifest of set/1").place(_part(tmp_path), "f.dat")
    assert (tmp_path / "dst" / "f.dat" / "inner").read_bytes() == b"kept"
