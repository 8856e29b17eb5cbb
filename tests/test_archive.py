"""ferry archive on a local folder and on S3 (moto and SeaweedFS, the archive layout):
upload, revisions, download, kills, corruption, escapes. Every case runs on all three."""

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from archive.download import download_revision
from archive.manifest import MANIFEST_NAME, read_manifest
from archive.store import revisions
from archive.upload import upload_revision
from ferry.cli import main
from ferry.core.config import TargetConfig
from ferry.core.errors import InputError, UnsafePathError
from ferry.core.tree_state import TreeState
from tests.fixtures_s3 import S3Server
from upload.targets.base import BlockingOpen, BlockingStream, RemoteRecord
from upload.targets.local import LocalTarget
from upload.targets.s3 import S3Target
from upload.targets.s3_options import S3Options

REPO = Path(__file__).resolve().parents[1]
OLD = 1_600_000_000
PREFIX = "arch"
MiB = 1024 * 1024


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


class Counts:
    """What a target is asked to write and read: its put_file and read_file, wrapped."""

    def __init__(self, target: Any) -> None:
        self.puts: list[str] = []
        self.reads: list[tuple[str, int]] = []
        put, read = target.put_file, target.read_file

        async def put_file(rec: RemoteRecord, key: str, *args: Any, **kwargs: Any) -> Any:
            self.puts.append(key)
            return await put(rec, key, *args, **kwargs)

        async def read_file(rec: RemoteRecord, key: str, *, start: int = 0) -> AsyncGenerator[bytes, None]:
            self.reads.append((key, start))
            async with contextlib.aclosing(read(rec, key, start=start)) as chunks:
                async for chunk in chunks:
                    yield chunk

        blocking = target.blocking_open

        async def blocking_open(rec: RemoteRecord) -> BlockingOpen | None:
            open_at = await blocking(rec)
            if open_at is None:
                return None

            def counted(key: str, start: int) -> BlockingStream | None:
                stream: BlockingStream | None = open_at(key, start)
                if stream is not None:  # else read_file is asked, and counts it
                    self.reads.append((key, start))
                return stream

            return counted

        setattr(target, "put_file", put_file)  # noqa: B010 (an instance's method, replaced)
        setattr(target, "read_file", read_file)  # noqa: B010
        setattr(target, "blocking_open", blocking_open)  # noqa: B010


@dataclass
class Arch:
    """An archive under test: a folder, or ``s3://bucket/arch`` on moto or SeaweedFS."""

    kind: str
    spec: str  # ARCHIVE as the command line takes it
    root: Path | None = None
    server: S3Server | None = None
    bucket: str = ""

    def target(self) -> Any:
        """A fresh target on the archive, with ``.counts`` (multipart from 5 MiB on S3)."""
        target: Any
        if self.root is not None:
            target = LocalTarget(self.root)
        else:
            cfg = TargetConfig(
                name="arch",
                type="s3",
                url=self.spec,
                multipart_threshold=5 * MiB,
                part_size=5 * MiB,
                options={"layout": "archive"},
            )
            target = S3Target("arch", S3Options.from_config(cfg))
        target.counts = Counts(target)
        return target

    def _s3(self) -> Any:
        assert self.server is not None
        return self.server.sync_client()

    def objects(self) -> dict[str, bytes]:
        """Every object (S3) or file (folder, ferry's state left out) of the archive, by key."""
        if self.root is not None:
            if not self.root.exists():
                return {}
            return {
                p.relative_to(self.root).as_posix(): p.read_bytes()
                for p in self.root.rglob("*")
                if p.is_file() and ".ferry" not in p.relative_to(self.root).parts
            }
        client, out = self._s3(), {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                assert key.startswith(f"{PREFIX}/"), key  # nothing outside the archive's prefix
                out[key[len(PREFIX) + 1 :]] = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return out

    def held(self, name: str, rev: str) -> dict[str, bytes]:
        """The files of a revision as stored at ARCHIVE/NAME/REV/<path> (manifest left out)."""
        base = f"{name}/{rev}/"
        return {
            k[len(base) :]: v for k, v in self.objects().items() if k.startswith(base) and k != base + MANIFEST_NAME
        }

    def has_manifest(self, name: str, rev: str) -> bool:
        return f"{name}/{rev}/{MANIFEST_NAME}" in self.objects()

    def put(self, name: str, rev: str, key: str, data: bytes) -> None:
        """Write an object behind ferry's back (another tool, a hand edit)."""
        if self.root is not None:
            (self.root / name / rev / key).write_bytes(data)
        else:
            self._s3().put_object(Bucket=self.bucket, Key=f"{PREFIX}/{name}/{rev}/{key}", Body=data)

    def remove(self, name: str, rev: str, key: str) -> None:
        if self.root is not None:
            (self.root / name / rev / key).unlink()
        else:
            self._s3().delete_object(Bucket=self.bucket, Key=f"{PREFIX}/{name}/{rev}/{key}")


def s3_environment(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The AWS chain pointed at ``server`` only (as tests.fixtures_s3.s3_env)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)


@pytest.fixture(params=["folder", "moto", "seaweedfs"])
def arch(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Arch:
    if request.param == "folder":
        return Arch("folder", str(tmp_path / PREFIX), root=tmp_path / PREFIX)
    server: S3Server = request.getfixturevalue("moto_s3" if request.param == "moto" else "seaweed_s3")
    s3_environment(server, monkeypatch)
    bucket = server.make_bucket()
    return Arch(request.param, f"s3://{bucket}/{PREFIX}", server=server, bucket=bucket)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".ferry" not in p.relative_to(root).parts and p.name != MANIFEST_NAME
    }


async def test_upload_without_manifest_then_download_and_rerun(tmp_path: Path, arch: Arch) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = make_tree(src)
    target = arch.target()
    result = await upload_revision(target, "set", "001", src)
    assert result.manifest_written and not result.failed
    assert (src / MANIFEST_NAME).is_file()
    puts = target.counts.puts
    assert puts[-1] == MANIFEST_NAME and sorted(puts[:-1]) == sorted(files)  # the manifest last
    # The layout: ARCHIVE/NAME/REV/<path> and ARCHIVE/NAME/REV/djarchive-manifest.csv, nothing else.
    stored = arch.objects()
    assert stored == {
        **{f"set/001/{k}": v for k, v in files.items()},
        f"set/001/{MANIFEST_NAME}": stored[f"set/001/{MANIFEST_NAME}"],
    }
    assert stored[f"set/001/{MANIFEST_NAME}"] == (src / MANIFEST_NAME).read_bytes()
    again = await upload_revision(target, "set", "001", src)
    assert again.already_complete and len(puts) == len(files) + 1

    got = await download_revision(target, "set", "001", dst)
    assert got.ok and sorted(got.fetched) == sorted(files) and tree_bytes(dst) == files
    target.counts.reads.clear()
    rerun = await download_revision(target, "set", "001", dst)
    assert rerun.ok and rerun.fetched == [] and rerun.kept == len(files) and rerun.hashed_local == 0
    assert target.counts.reads == [(MANIFEST_NAME, 0)]  # only the manifest is read
    await target.aclose()


async def test_upload_with_matching_and_mismatching_manifest(tmp_path: Path, arch: Arch) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    assert await asyncio.to_thread(main, ["manifest", str(src)]) == 0
    (src / "untracked.txt").write_bytes(b"new")
    (src / "empty").write_bytes(b"now not empty")
    target = arch.target()
    with pytest.raises(InputError) as info:
        await upload_revision(target, "set", "001", src)
    assert "untracked.txt" in str(info.value) and "empty" in str(info.value)
    assert target.counts.puts == [] and arch.objects() == {}  # nothing written anywhere
    (src / "untracked.txt").unlink()
    (src / "empty").write_bytes(b"")
    result = await upload_revision(target, "set", "001", src)
    assert not result.manifest_written and len(result.sent) == len(files)
    assert arch.held("set", "001") == files and arch.has_manifest("set", "001")
    await target.aclose()


async def test_complete_revision_is_immutable(tmp_path: Path, arch: Arch) -> None:
    src = tmp_path / "src"
    make_tree(src)
    target = arch.target()
    await upload_revision(target, "set", "001", src)
    before = arch.objects()
    (src / "extra").write_bytes(b"x")
    (src / MANIFEST_NAME).unlink()
    with pytest.raises(InputError, match=r"already complete .* different manifest"):
        await upload_revision(target, "set", "001", src)
    assert "extra" not in target.counts.puts and arch.objects() == before
    await target.aclose()


def run_until(script: str, marker: str, tmp_path: Path, spec: str) -> None:
    """Run ``script`` in a child Python (``SPEC`` is the archive), wait for ``marker`` on its
    stdout, then kill -9 it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = textwrap.dedent(script).replace("SPEC", repr(spec))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=tmp_path, env=env, text=True)
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


# The child opens the archive as `ferry archive` does and blocks its event loop at a chosen
# moment, so the kill comes while the transfer is busy.
KILLED_UPLOAD = """
    import asyncio, time
    from pathlib import Path
    from archive.store import open_archive
    from archive.upload import upload_revision
    from ferry.core.config import Config

    target = open_archive(SPEC, Config())
    put, sent = target.put_file, []

    async def put_file(rec, key, *args, **kwargs):
        got = await put(rec, key, *args, **kwargs)
        sent.append(key)
        if len(sent) == 3:
            print("THREE-SENT", flush=True)
            time.sleep(600)
        return got

    target.put_file = put_file
    asyncio.run(upload_revision(target, "set", "001", Path("src"), jobs=1))
"""


async def test_kill_during_upload_then_rerun(tmp_path: Path, arch: Arch, capsys: pytest.CaptureFixture[str]) -> None:
    files = make_tree(tmp_path / "src", n=10)
    await asyncio.to_thread(run_until, KILLED_UPLOAD, "THREE-SENT", tmp_path, arch.spec)
    assert not arch.has_manifest("set", "001")  # incomplete: no completeness marker
    assert len(arch.held("set", "001")) == 3
    target = arch.target()
    assert [r.line for r in await revisions(target, arch.spec)] == ["set,001,incomplete"]
    assert await asyncio.to_thread(main, ["archive", "revisions", "--from", arch.spec]) == 0
    assert capsys.readouterr().out == ""  # incomplete revisions only with --all
    assert await asyncio.to_thread(main, ["archive", "revisions", "--all", "--from", arch.spec]) == 0
    assert capsys.readouterr().out.split() == ["set,001,incomplete"]
    result = await upload_revision(target, "set", "001", tmp_path / "src")
    assert result.skipped == 3 and len(result.sent) == len(files) - 3
    assert sorted(target.counts.puts) == sorted([*result.sent, MANIFEST_NAME])  # nothing sent twice
    assert [r.line for r in await revisions(target, arch.spec)] == ["set,001"]
    assert arch.held("set", "001") == files
    await target.aclose()


KILLED_DOWNLOAD = """
    import asyncio, time
    from pathlib import Path
    from archive.download import download_revision
    from archive.store import open_archive
    from ferry.core.config import Config

    target = open_archive(SPEC, Config())
    read, blocking = target.read_file, target.blocking_open
    CUT = 3 * 1024 * 1024

    def stop_here():
        # Some of the file is in the .part by now (the loop's path: the writer thread may
        # still be writing the batch it was handed, so wait for it), then the kill comes.
        for _ in range(1000):
            if any(p.stat().st_size for p in Path("dst/.ferry/parts").glob("*.part")):
                break
            time.sleep(0.01)
        print("HALF-READ", flush=True)
        time.sleep(600)

    async def read_file(rec, key, *, start=0):
        n = 0
        async for chunk in read(rec, key, start=start):
            if n >= CUT and key == "big.bin":
                stop_here()  # blocks the event loop
            n += len(chunk)
            yield chunk

    class Slow:  # the thread's stream: stops the fetch thread at the same point
        def __init__(self, stream, key):
            self.stream, self.key, self.n = stream, key, 0

        def readinto(self, buffer):
            if self.n >= CUT and self.key == "big.bin":
                stop_here()
            got = self.stream.readinto(buffer)
            self.n += got
            return got

        def close(self):
            self.stream.close()

    async def blocking_open(rec):
        open_at = None if LOOP_ONLY else await blocking(rec)
        if open_at is None:
            return None
        return lambda key, start: (lambda s: s and Slow(s, key))(open_at(key, start))

    target.read_file, target.blocking_open = read_file, blocking_open
    asyncio.run(download_revision(target, "set", "001", Path("dst"), jobs=1))
"""


@pytest.mark.parametrize("way", ["thread", "loop"])
async def test_download_resumes_after_kill(tmp_path: Path, arch: Arch, way: str) -> None:
    """Killed midway through a large file, by either way of reading (a worker thread's
    blocking reads, or the loop's path the thread hands failures to): the next run resumes
    from the end of the .part."""
    files = make_tree(tmp_path / "src", n=2, big=9 * MiB)
    target = arch.target()
    await upload_revision(target, "set", "001", tmp_path / "src")
    script = KILLED_DOWNLOAD.replace("LOOP_ONLY", str(way == "loop"))
    await asyncio.to_thread(run_until, script, "HALF-READ", tmp_path, arch.spec)
    parts = list((tmp_path / "dst" / ".ferry" / "parts").iterdir())
    assert len(parts) == 1 and 0 < (have := parts[0].stat().st_size) < len(files["big.bin"])
    assert not (tmp_path / "dst" / "big.bin").exists()
    got = await download_revision(target, "set", "001", tmp_path / "dst")
    assert got.ok and tree_bytes(tmp_path / "dst") == files
    starts = dict(target.counts.reads)
    assert starts["big.bin"] == have  # resumed from the end of the part, not from the start
    assert not list((tmp_path / "dst").rglob("*.part"))
    await target.aclose()


async def test_corrupted_local_file_refetched_and_missing_object_reported(
    tmp_path: Path, arch: Arch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = make_tree(tmp_path / "src")
    target = arch.target()
    await upload_revision(target, "set", "001", tmp_path / "src")
    dst = tmp_path / "dst"
    await download_revision(target, "set", "001", dst)
    victim = "part-2/f2.dat"
    (dst / victim).write_bytes(b"X" * len(files[victim]))  # same size, other bytes, new mtime
    arch.remove("set", "001", "part-4/f4.dat")
    arch.put("set", "001", "stray.txt", b"not listed")
    (dst / "part-4" / "f4.dat").unlink()
    target.counts.reads.clear()
    got = await download_revision(target, "set", "001", dst)
    assert got.fetched == [victim] and (dst / victim).read_bytes() == files[victim]
    assert sorted(target.counts.reads) == [(MANIFEST_NAME, 0), (victim, 0)]  # nothing else fetched
    assert got.missing_in_archive == ["part-4/f4.dat"] and got.unlisted_in_archive == ["stray.txt"]
    assert not got.ok
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["archive", "download", "set", "001", str(dst), "--from", arch.spec]) == 1
    err = capsys.readouterr().err
    assert "part-4/f4.dat: listed in the manifest but not in the archive" in err
    assert "stray.txt is in the archive but not in the manifest" in err
    await target.aclose()


async def test_path_escapes_and_bad_names_refused(
    tmp_path: Path, arch: Arch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_tree(tmp_path / "src", n=1)
    for name, rev in (("a/b", "1"), ("..", "1"), ("set", ""), ("set", "1\n"), ("set", ".ferry")):
        code = await asyncio.to_thread(main, ["archive", "upload", name, rev, str(tmp_path / "src"), "--to", arch.spec])
        assert code == 2
    assert arch.objects() == {}
    target = arch.target()
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
    arch.put("set", "001", MANIFEST_NAME, b'"1","' + b"0" * 64 + b'","../../escape"\n')
    capsys.readouterr()
    code = await asyncio.to_thread(
        main, ["archive", "download", "set", "001", str(tmp_path / "dst2"), "--from", arch.spec]
    )
    assert code == 2 and "line 1" in capsys.readouterr().err
    assert not (tmp_path / "escape").exists() and not (tmp_path / "dst2" / ".." / "escape").exists()
    assert await asyncio.to_thread(main, ["archive", "revisions", "nope", "--from", arch.spec]) == 2
    assert "dataset 'nope' not found" in capsys.readouterr().err
    await target.aclose()


def test_cli_round_trip(tmp_path: Path, arch: Arch, capsys: pytest.CaptureFixture[str]) -> None:
    files = make_tree(tmp_path / "src")
    src = str(tmp_path / "src")
    assert main(["archive", "upload", "set", "1", src, "--to", arch.spec, "--dry-run"]) == 0
    assert "would send" in capsys.readouterr().out
    assert arch.objects() == {} and not (tmp_path / "src" / MANIFEST_NAME).exists()
    first = f"file://{arch.spec}" if arch.root is not None else arch.spec
    assert main(["archive", "upload", "set", "1", src, "--to", first, "--jobs", "3"]) == 0
    assert main(["archive", "upload", "other", "1", src, "--to", arch.spec]) == 0
    capsys.readouterr()
    assert main(["archive", "datasets", "--from", arch.spec]) == 0
    assert capsys.readouterr().out.split() == ["other", "set"]
    assert main(["archive", "revisions", "set", "--from", arch.spec]) == 0
    assert capsys.readouterr().out.split() == ["set,1"]
    assert main(["archive", "revisions", "--from", arch.spec]) == 0
    assert capsys.readouterr().out.split() == ["other,1", "set,1"]
    stats = tmp_path / "stats"
    dst = tmp_path / "dst"
    argv = ["archive", "download", "set", "1", str(dst), "--from", arch.spec, "--stats-dir", str(stats), "--sync"]
    assert main(argv) == 0
    assert tree_bytes(dst) == files and any(stats.glob("*.jsonl"))
    with TreeState.for_tree(dst) as state:
        assert state.unsynced() == []  # --sync: everything on disk before the run returned
    assert main(["verify", str(dst)]) == 0
    assert read_manifest(dst / MANIFEST_NAME) == read_manifest(tmp_path / "src" / MANIFEST_NAME)


async def test_file_changed_during_the_download_fails_the_whole(tmp_path: Path) -> None:
    """The result is verified as a whole: a kept file edited by someone else while the run
    fetches another is not reported as verified, the folder is not marked complete, and
    the next run fetches it again."""
    from archive.rerun import marker_path

    files = make_tree(tmp_path / "src", n=3)
    target = LocalTarget(tmp_path / "arch")
    await upload_revision(target, "set", "001", tmp_path / "src")
    dst = tmp_path / "dst"
    assert (await download_revision(target, "set", "001", dst)).ok and marker_path(dst).is_file()
    (dst / "part-0" / "f0.dat").unlink()  # fetched again by the next run
    blocking = target.blocking_open

    async def blocking_open(rec: RemoteRecord) -> BlockingOpen | None:
        open_at = await blocking(rec)
        assert open_at is not None

        def edit_then_open(key: str, start: int) -> BlockingStream | None:
            if key == "part-0/f0.dat":
                (dst / "part-1" / "f1.dat").write_bytes(b"edited meanwhile")
            return open_at(key, start)

        return edit_then_open

    setattr(target, "blocking_open", blocking_open)  # noqa: B010 (an instance's method, replaced)
    got = await download_revision(target, "set", "001", dst)
    assert got.fetched == ["part-0/f0.dat"] and list(got.failed) == ["part-1/f1.dat"] and not got.ok
    assert not marker_path(dst).exists()
    setattr(target, "blocking_open", blocking)  # noqa: B010
    again = await download_revision(target, "set", "001", dst)
    assert again.ok and again.fetched == ["part-1/f1.dat"] and tree_bytes(dst) == files
    assert marker_path(dst).is_file()


async def test_files_sent_while_hashing_are_the_manifest_rows_only(tmp_path: Path) -> None:
    """Without a manifest in DIR, files go as soon as they are hashed: only those the
    manifest will list (no dotfile, no state), each once, the manifest last; a re-run
    sends nothing."""
    src = tmp_path / "src"
    files = make_tree(src, n=5)
    (src / ".hidden").mkdir()
    (src / ".hidden" / "x").write_bytes(b"not data")
    (src / ".dot").write_bytes(b"not data either")
    target = LocalTarget(tmp_path / "arch")
    target.counts = Counts(target)  # type: ignore[attr-defined]
    result = await upload_revision(target, "set", "001", src)
    assert not result.failed and sorted(result.sent) == sorted(files) and result.manifest_written
    puts = target.counts.puts  # type: ignore[attr-defined]
    assert sorted(puts[:-1]) == sorted(files) and puts[-1] == MANIFEST_NAME
    assert sorted(p.path for p in read_manifest(src / MANIFEST_NAME)) == sorted(files)
    puts.clear()
    again = await upload_revision(target, "set", "001", src)
    assert again.already_complete and puts == []
