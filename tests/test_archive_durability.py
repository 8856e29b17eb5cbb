"""What a download records as durable (archive/durability.py, ferry/core/tree_state.py):
a fetched file enters the state after a sync that began after it was placed, or, when
the run does not wait for the disk (the default) and no sync has covered it yet, tagged
with the boot id and trusted only in that boot."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import archive.durability as durability
import ferry.core.tree_state as tree_state
from archive.download import download_revision
from archive.names import revision_id
from archive.placing import Placer
from archive.rerun import complete_rerun
from archive.upload import upload_revision
from ferry.core.tree import FileStat
from ferry.core.tree_state import TreeState
from tests.test_archive import make_tree, run_until, tree_bytes
from upload.targets.local import LocalTarget

pytestmark = pytest.mark.skipif(tree_state.boot_id() is None, reason="needs a boot id (Linux)")


async def archived(tmp_path: Path, n: int = 6) -> tuple[LocalTarget, dict[str, bytes]]:
    files = make_tree(tmp_path / "src", n=n)
    target = LocalTarget(tmp_path / "arch")
    await upload_revision(target, "set", "001", tmp_path / "src")
    return target, files


def unsynced_count(root: Path) -> int:
    with TreeState.for_tree(root) as state:
        return len(state.unsynced())


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "default"])
async def test_a_fetched_file_is_recorded_durable_only_after_a_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool
) -> None:
    """No fsync per file. A file is placed after its sha256 matched and recorded as durable
    only after a sync that began after it was placed; without --sync, a file recorded
    before any such sync is recorded unsynced (tagged with the boot id). Either way a power
    cut cannot leave the state vouching, after the reboot, for bytes that never reached disk."""
    target, files = await archived(tmp_path)
    log: list[tuple[str, str, bool]] = []
    place, sync_tree, put = Placer.place, durability.sync_tree, TreeState.put

    def placed(self: Placer, part: Path, path: str) -> None:
        place(self, part, path)
        log.append(("place", path, True))

    def synced(root: Path) -> None:
        log.append(("sync", "", True))
        sync_tree(root)

    def recorded(self: TreeState, rel: str, *args: Any, **kwargs: Any) -> bool:
        log.append(("put", rel, kwargs.get("synced", True)))
        return put(self, rel, *args, **kwargs)

    monkeypatch.setattr(Placer, "place", placed)
    monkeypatch.setattr(durability, "sync_tree", synced)
    monkeypatch.setattr(TreeState, "put", recorded)
    got = await download_revision(target, "set", "001", tmp_path / "dst", sync=sync)
    assert got.ok and sorted(got.fetched) == sorted(files)
    for rel in files:
        placed_at = log.index(("place", rel, True))
        puts = [(i, e) for i, e in enumerate(log) if e[:2] == ("put", rel)]
        assert len(puts) == 1, (rel, log)
        put_at, (_, _, durable) = puts[0]
        if durable:
            assert ("sync", "", True) in log[placed_at:put_at], (rel, log)
        else:
            assert not sync, (rel, log)  # --sync records nothing unsynced
    assert tree_bytes(tmp_path / "dst") == files
    if sync:
        assert 0 < log.count(("sync", "", True)) < len(files)  # not one per file
        assert unsynced_count(tmp_path / "dst") == 0
    else:  # well within SETTLE_EVERY: no sync at all, every file recorded unsynced
        assert log.count(("sync", "", True)) == 0
        assert unsynced_count(tmp_path / "dst") == len(files)


async def test_unsynced_files_are_trusted_in_their_boot_and_hashed_again_after_a_reboot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, files = await archived(tmp_path)
    dst, recid = tmp_path / "dst", revision_id("set", "001")
    assert (await download_revision(target, "set", "001", dst)).ok
    assert unsynced_count(dst) == len(files)
    # The same boot: the page cache that holds the bytes is the one a read would see.
    again = complete_rerun(dst, target.name, recid)
    assert again is not None and again.ok and again.offline and again.hashed_local == 0

    monkeypatch.setattr(tree_state, "boot_id", lambda: "a-later-boot")
    assert complete_rerun(dst, target.name, recid) is None  # the full path decides
    full = await download_revision(target, "set", "001", dst)
    assert full.ok and full.fetched == [] and full.hashed_local == len(files)
    assert tree_bytes(dst) == files


async def test_a_later_sync_in_the_same_boot_settles_the_earlier_tags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, files = await archived(tmp_path)
    dst = tmp_path / "dst"
    assert (await download_revision(target, "set", "001", dst)).ok  # well within SETTLE_EVERY
    assert unsynced_count(dst) == len(files)
    (dst / "part-0" / "f0.dat").unlink()  # fetched again: a sync runs before it is recorded
    got = await download_revision(target, "set", "001", dst, sync=True)
    assert got.ok and got.fetched == ["part-0/f0.dat"]
    assert unsynced_count(dst) == 0
    monkeypatch.setattr(tree_state, "boot_id", lambda: "a-later-boot")
    rerun = complete_rerun(dst, target.name, revision_id("set", "001"))
    assert rerun is not None and rerun.offline  # all on disk now: trusted after a reboot too


KILLED_LATE = """
    import asyncio, time
    from pathlib import Path
    from archive.download import download_revision
    from archive.store import open_archive
    from ferry.core.config import Config
    from ferry.core.tree_state import TreeState

    target = open_archive(SPEC, Config())
    blocking = target.blocking_open
    LAST_BUT_ONE = 'a,b "c".txt'  # fetched last but one (largest first, one at a time)

    def wait_then_stop():
        for _ in range(1000):  # the loop runs on: what was placed gets recorded
            time.sleep(0.01)
            with TreeState.for_tree(Path("dst")) as state:
                if len(state.unsynced()) == 6:
                    break
        print("RECORDED", flush=True)
        time.sleep(600)

    async def blocking_open(rec):  # in the fetch thread, before that file's first byte
        open_at = await blocking(rec)
        return lambda key, start: (wait_then_stop() if key == LAST_BUT_ONE else None) or open_at(key, start)

    target.blocking_open = blocking_open
    asyncio.run(download_revision(target, "set", "001", Path("dst"), jobs=1))
"""


async def test_after_a_kill_the_files_placed_before_it_are_trusted_not_hashed(tmp_path: Path) -> None:
    """A kill -9 (same boot) costs no hash: files placed more than a second before it are in
    the state, unsynced; the next run trusts them and fetches only the rest."""
    target, files = await archived(tmp_path)
    await asyncio.to_thread(run_until, KILLED_LATE, "RECORDED", tmp_path, str(tmp_path / "arch"))
    placed = sorted(p for p in files if p.startswith("part-"))
    assert all((tmp_path / "dst" / p).is_file() for p in placed)
    got = await download_revision(target, "set", "001", tmp_path / "dst")
    assert got.ok and tree_bytes(tmp_path / "dst") == files
    assert got.hashed_local == 0 and got.kept == len(placed)
    assert sorted(got.fetched) == sorted(set(files) - set(placed))


def test_an_unsynced_entry_needs_a_boot_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    st = FileStat.of(f.stat())
    monkeypatch.setattr(tree_state, "boot_id", lambda: None)
    with TreeState(tmp_path / "s.sqlite") as state:
        with pytest.raises(ValueError, match="boot id"):
            state.put("f", st, {"sha256": "0" * 64}, synced=False)
        assert state.unsynced() == []
        # No boot id: the download waits for the disk instead (nothing unsynced to trust).
        assert durability.Durable(state, tmp_path).wait


def test_a_state_written_before_the_boot_tag_is_read_and_extended(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    st = FileStat.of(f.stat())
    db = sqlite3.connect(tmp_path / "s.sqlite")
    db.execute(
        "CREATE TABLE files (path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
        " inode INTEGER NOT NULL, checksums TEXT NOT NULL)"
    )
    db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?)", (b"f", st.size, st.mtime_ns, st.inode, '{"sha256":"ab"}'))
    db.commit()
    db.close()
    with TreeState(tmp_path / "s.sqlite") as state:
        assert state.lookup("f", st, ("sha256",)) == {"sha256": "ab"}
        state.put("g", st, {"sha256": "cd"}, synced=False)
        assert len(state.unsynced()) == 1


def placed_files(root: Path, n: int) -> list[tuple[str, FileStat, str]]:
    out = []
    for i in range(n):
        f = root / f"f{i}"
        f.write_bytes(b"%d" % i)
        out.append((f.name, FileStat.of(f.stat()), f"{i:064x}"))
    return out


async def until(check: Any, what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within 5 s: {what}")


async def test_a_run_that_does_not_wait_records_at_once_and_settles_every_so_often(tmp_path: Path) -> None:
    """The default: placed files are in the state within a second, unsynced and committed
    (what a kill -9 leaves: trusted in this boot, no hash); the periodic sync
    (SETTLE_EVERY, shortened here) settles them; what is placed after it stays unsynced."""
    db = tmp_path / "s.sqlite"
    files = placed_files(tmp_path, 4)
    with TreeState(db) as state:
        durable = durability.Durable(state, tmp_path, every=0.01, settle_every=0.3)
        assert not durable.wait
        syncer = asyncio.create_task(durable.run())
        for f in files[:2]:
            durable.placed(*f)
        await until(lambda: sorted(state.unsynced()) == [b"f0", b"f1"], "recorded unsynced")
        with TreeState(db) as other:  # another reader sees them: committed, as a kill leaves them
            assert all(other.lookup(p, st, ("sha256",)) == {"sha256": h} for p, st, h in files[:2])
        await asyncio.sleep(0.35)
        durable.placed(*files[2])  # recorded, then the sync that is due settles all three
        await until(lambda: state.unsynced() == [] and state.lookup(*files[2][:2], ("sha256",)), "settled")
        durable.placed(*files[3])
        await durable.close(syncer)
        assert state.unsynced() == [b"f3"]
        assert all(state.lookup(p, st, ("sha256",)) == {"sha256": h} for p, st, h in files)


async def test_a_close_that_does_not_wait_leaves_a_sync_in_flight_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync in flight at the end is not waited for: what it covers stays unsynced, and
    the sync's thread, once done, settles nothing."""
    started, release = threading.Event(), threading.Event()

    def slow_sync(root: Path) -> None:
        started.set()
        release.wait(10)

    monkeypatch.setattr(durability, "sync_tree", slow_sync)
    with TreeState(tmp_path / "s.sqlite") as state:
        durable = durability.Durable(state, tmp_path, every=0.01, settle_every=0)
        files = placed_files(tmp_path, 3)
        syncer = asyncio.create_task(durable.run())
        for f in files:
            durable.placed(*f)
        assert await asyncio.to_thread(started.wait, 5)
        await asyncio.wait_for(durable.close(syncer), 2)  # returns with the sync still blocked
        assert sorted(state.unsynced()) == [b"f0", b"f1", b"f2"]
        release.set()  # the thread's sync returns; it must see the run is over
        for t in threading.enumerate():
            if t.name == "ferry-sync":
                await asyncio.to_thread(t.join, 5)
        assert sorted(state.unsynced()) == [b"f0", b"f1", b"f2"]


def test_a_sync_runs_sync_f_in_a_child_and_syncfs_here_when_that_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = tmp_path / "args"
    fake = tmp_path / "sync"
    fake.write_text(f'#!/bin/sh\necho "$@" > {args}\nexit 1\n')
    fake.chmod(0o755)
    calls: list[int] = []
    monkeypatch.setattr(durability, "_SYNC", str(fake))
    monkeypatch.setattr(durability, "_syncfs", lambda fd: calls.append(fd) or 0)
    durability.sync_tree(tmp_path)
    assert args.read_text().split() == ["-f", str(tmp_path)]
    assert len(calls) == 1  # the child failed: syncfs in this thread instead
