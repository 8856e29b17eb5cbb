"""ferry archive on a local folder: upload, revisions, download, kills, corruption, escapes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from archive.download import download_revision
from archive.manifest import MANIFEST_NAME, read_manifest
from archive.store import revisions
from archive.upload import upload_revision
from ferry.cli import main
from ferry.core.errors import InputError, UnsafePathError
from upload.targets.base import RemoteRecord
from upload.targets.local import LocalTarget

REPO = Path(__file__).resolve().parents[1]
OLD = 1_600_000_000


def make_tree(root: Path, n: int = 6, big: int = 0) -> dict[str, bytes]:
    files = {f"part-{i}/f{i}.dat": hashlib.sha256(str(i).encode()).digest() * (i + 1) for i in range(n)}
    files['a,b "c".txt'] = b"odd name"
    files["empty"] = b""
    if big:
        files["big.bin"] = os.urandom(big)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (OLD, OLD))
    return files


class Counting(LocalTarget):
    """A local target that counts what is written and read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts: list[str] = []
        self.reads: list[tuple[str, int]] = []

    async def put_file(self, rec: RemoteRecord, key: str, *args: Any, **kwargs: Any) -> Any:
        self.puts.append(key)
        return await super().put_file(rec, key, *args, **kwargs)

    async def read_file(self, rec: RemoteRecord, key: str, *, start: int = 0) -> AsyncGenerator[bytes, None]:
        self.reads.append((key, start))
        async with contextlib.aclosing(super().read_file(rec, key, start=start)) as chunks:
            async for chunk in chunks:
                yield chunk


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".ferry" not in p.relative_to(root).parts and p.name != MANIFEST_NAME
    }


async def test_upload_without_manifest_then_download_and_rerun(tmp_path: Path) -> None:
    src, arch, dst = tmp_path / "src", tmp_path / "arch", tmp_path / "dst"
    files = make_tree(src)
    target = Counting(arch)
    result = await upload_revision(target, "set", "001", src)
    assert result.manifest_written and not result.failed
    assert (src / MANIFEST_NAME).is_file()
    assert target.puts[-1] == MANIFEST_NAME and sorted(target.puts[:-1]) == sorted(files)
    assert tree_bytes(arch / "set" / "001") == files
    assert (arch / "set" / "001" / MANIFEST_NAME).read_bytes() == (src / MANIFEST_NAME).read_bytes()
    again = await upload_revision(target, "set", "001", src)
    assert again.already_complete and len(target.puts) == len(files) + 1

    got = await download_revision(target, "set", "001", dst)
    assert got.ok and sorted(got.fetched) == sorted(files) and tree_bytes(dst) == files
    target.reads.clear()
    rerun = await download_revision(target, "set", "001", dst)
    assert rerun.ok and rerun.fetched == [] and rerun.kept == len(files) and rerun.hashed_local == 0
    assert target.reads == [(MANIFEST_NAME, 0)]  # only the manifest is read
    await target.aclose()


async def test_upload_with_matching_and_mismatching_manifest(tmp_path: Path) -> None:
    src, arch = tmp_path / "src", tmp_path / "arch"
    files = make_tree(src)
    assert await asyncio.to_thread(main, ["manifest", str(src)]) == 0
    (src / "untracked.txt").write_bytes(b"new")
    (src / "empty").write_bytes(b"now not empty")
    target = Counting(arch)
    with pytest.raises(InputError) as info:
        await upload_revision(target, "set", "001", src)
    assert "untracked.txt" in str(info.value) and "empty" in str(info.value)
    assert target.puts == [] and not arch.exists()  # nothing written anywhere
    (src / "untracked.txt").unlink()
    (src / "empty").write_bytes(b"")
    result = await upload_revision(target, "set", "001", src)
    assert not result.manifest_written and len(result.sent) == len(files)
    await target.aclose()


async def test_complete_revision_is_immutable(tmp_path: Path) -> None:
    src, arch = tmp_path / "src", tmp_path / "arch"
    make_tree(src)
    target = Counting(arch)
    await upload_revision(target, "set", "001", src)
    (src / "extra").write_bytes(b"x")
    (src / MANIFEST_NAME).unlink()
    with pytest.raises(InputError, match=r"already complete .* different manifest"):
        await upload_revision(target, "set", "001", src)
    assert "extra" not in target.puts
    await target.aclose()


def run_until(script: str, marker: str, tmp_path: Path) -> None:
    """Run ``script`` in a child Python, wait for ``marker`` on its stdout, then kill -9 it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, cwd=tmp_path, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if marker in line:
                break
        else:
            pytest.fail(f"child ended (rc {proc.wait()}) before {marker!r}")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


KILLED_UPLOAD = """
    import asyncio, sys, time
    from pathlib import Path
    from archive.upload import upload_revision
    from upload.targets.local import LocalTarget

    class Slow(LocalTarget):
        async def put_file(self, rec, key, *args, **kwargs):
            got = await super().put_file(rec, key, *args, **kwargs)
            sent = getattr(self, "sent", 0) + 1
            self.sent = sent
            if sent == 3:
                print("THREE-SENT", flush=True)
                time.sleep(600)  # blocks the loop: the kill comes while the upload is busy
            return got

    asyncio.run(upload_revision(Slow(Path("arch")), "set", "001", Path("src"), jobs=1))
"""


async def test_kill_during_upload_then_rerun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = make_tree(tmp_path / "src", n=10)
    await asyncio.to_thread(run_until, KILLED_UPLOAD, "THREE-SENT", tmp_path)
    rev = tmp_path / "arch" / "set" / "001"
    assert not (rev / MANIFEST_NAME).exists()  # incomplete: no completeness marker
    assert len(tree_bytes(rev)) == 3
    target = Counting(tmp_path / "arch")
    assert [r.line for r in await revisions(target, "arch")] == ["set,001,incomplete"]
    assert await asyncio.to_thread(main, ["archive", "revisions", "--from", str(tmp_path / "arch")]) == 0
    assert capsys.readouterr().out == ""  # incomplete revisions only with --all
    result = await upload_revision(target, "set", "001", tmp_path / "src")
    assert result.skipped == 3 and len(result.sent) == len(files) - 3
    assert sorted(target.puts) == sorted([*result.sent, MANIFEST_NAME])  # nothing sent twice
    assert [r.line for r in await revisions(target, "arch")] == ["set,001"]
    await target.aclose()


KILLED_DOWNLOAD = """
    import asyncio, time
    from pathlib import Path
    from archive.download import download_revision
    from upload.targets.local import LocalTarget

    class Slow(LocalTarget):
        async def read_file(self, rec, key, *, start=0):
            n = 0
            async for chunk in super().read_file(rec, key, start=start):
                if n == 1 and key == "big.bin":
                    print("HALF-READ", flush=True)
                    time.sleep(600)
                n += 1
                yield chunk

    asyncio.run(download_revision(Slow(Path("arch")), "set", "001", Path("dst"), jobs=1))
"""


async def test_download_resumes_after_kill(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", n=2, big=9 * 1024 * 1024)
    target = Counting(tmp_path / "arch")
    await upload_revision(target, "set", "001", tmp_path / "src")
    await asyncio.to_thread(run_until, KILLED_DOWNLOAD, "HALF-READ", tmp_path)
    parts = list((tmp_path / "dst" / ".ferry" / "parts").iterdir())
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < len(files["big.bin"])
    assert not (tmp_path / "dst" / "big.bin").exists()
    got = await download_revision(target, "set", "001", tmp_path / "dst")
    assert got.ok and tree_bytes(tmp_path / "dst") == files
    starts = dict(target.reads)
    assert starts["big.bin"] > 0  # resumed from the part, not from the start
    await target.aclose()


async def test_corrupted_local_file_refetched_and_missing_object_reported(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src")
    target = Counting(tmp_path / "arch")
    await upload_revision(target, "set", "001", tmp_path / "src")
    dst = tmp_path / "dst"
    await download_revision(target, "set", "001", dst)
    victim = "part-2/f2.dat"
    (dst / victim).write_bytes(b"X" * len(files[victim]))  # same size, other bytes, new mtime
    (tmp_path / "arch" / "set" / "001" / "part-4" / "f4.dat").unlink()
    (tmp_path / "arch" / "set" / "001" / "stray.txt").write_bytes(b"not listed")
    (dst / "part-4" / "f4.dat").unlink()
    got = await download_revision(target, "set", "001", dst)
    assert got.fetched == [victim] and (dst / victim).read_bytes() == files[victim]
    assert got.missing_in_archive == ["part-4/f4.dat"] and got.unlisted_in_archive == ["stray.txt"]
    assert not got.ok
    assert (
        await asyncio.to_thread(main, ["archive", "download", "set", "001", str(dst), "--from", str(tmp_path / "arch")])
        == 1
    )
    await target.aclose()


async def test_path_escapes_and_bad_names_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path / "src", n=1)
    arch = tmp_path / "arch"
    for name, rev in (("a/b", "1"), ("..", "1"), ("set", ""), ("set", "1\n"), ("set", ".ferry")):
        assert (
            await asyncio.to_thread(main, ["archive", "upload", name, rev, str(tmp_path / "src"), "--to", str(arch)])
            == 2
        )
    assert not arch.exists()
    target = LocalTarget(arch)
    await upload_revision(target, "set", "001", tmp_path / "src")
    # A folder on the download side that is a link out of DIR: nothing is written through it.
    dst = tmp_path / "dst"
    dst.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (dst / "part-0").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="part-0 points outside"):
        await download_revision(target, "set", "001", dst)
    assert not list((tmp_path / "elsewhere").iterdir())
    # A manifest in the archive that climbs out is refused, naming its line.
    (arch / "set" / "001" / MANIFEST_NAME).write_bytes(b'"1","' + b"0" * 64 + b'","../../escape"\n')
    code = await asyncio.to_thread(
        main, ["archive", "download", "set", "001", str(tmp_path / "dst2"), "--from", str(arch)]
    )
    assert code == 2 and "line 1" in capsys.readouterr().err
    assert not (tmp_path / "escape").exists()
    assert await asyncio.to_thread(main, ["archive", "revisions", "nope", "--from", str(arch)]) == 2
    assert "dataset 'nope' not found" in capsys.readouterr().err
    await target.aclose()


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = make_tree(tmp_path / "src")
    arch = str(tmp_path / "arch")
    assert main(["archive", "upload", "set", "1", str(tmp_path / "src"), "--to", arch, "--dry-run"]) == 0
    assert "would send" in capsys.readouterr().out
    assert not (tmp_path / "arch").exists() and not (tmp_path / "src" / MANIFEST_NAME).exists()
    assert main(["archive", "upload", "set", "1", str(tmp_path / "src"), "--to", f"file://{arch}", "--jobs", "3"]) == 0
    assert main(["archive", "upload", "other", "1", str(tmp_path / "src"), "--to", arch]) == 0
    capsys.readouterr()
    assert main(["archive", "datasets", "--from", arch]) == 0
    assert capsys.readouterr().out.split() == ["other", "set"]
    assert main(["archive", "revisions", "set", "--from", arch]) == 0
    assert capsys.readouterr().out.split() == ["set,1"]
    stats = tmp_path / "stats"
    dst = tmp_path / "dst"
    assert main(["archive", "download", "set", "1", str(dst), "--from", arch, "--stats-dir", str(stats)]) == 0
    assert tree_bytes(dst) == files and any(stats.glob("*.jsonl"))
    assert main(["verify", str(dst)]) == 0
    assert read_manifest(dst / MANIFEST_NAME) == read_manifest(tmp_path / "src" / MANIFEST_NAME)
