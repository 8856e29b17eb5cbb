"""The local-directory target: joins the target conformance suite, plus what only it has."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ferry.core.checksums import Checksum
from ferry.core.config import TargetConfig
from ferry.core.errors import ConfigError, UnsafePathError
from ferry.testing.target_suite import TargetBackend, TargetSuite
from upload.targets import make_target
from upload.targets.local import LocalTarget


class TestLocalTarget(TargetSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> TargetBackend:
        return TargetBackend("local", lambda: LocalTarget(tmp_path / "archive"), large=300 * 1024)


def sha256(data: bytes) -> Checksum:
    return Checksum("sha256", hashlib.sha256(data).hexdigest())


def test_made_from_config_by_the_registry(tmp_path: Path) -> None:
    from ferry.core.config import Limits

    for url in (str(tmp_path), f"file://{tmp_path}"):
        target = make_target(TargetConfig("disk", "local", url=url), Limits(), token=None, limiter=None)
        assert isinstance(target, LocalTarget) and target.root == tmp_path
    with pytest.raises(ConfigError, match=r"targets\.disk\.url"):
        make_target(TargetConfig("disk", "local", url="https://x.example"), Limits(), token=None, limiter=None)
    with pytest.raises(ConfigError, match="unknown option"):
        make_target(TargetConfig("disk", "local", url="/x", options={"bogus": 1}), Limits(), token=None, limiter=None)


async def test_layout_checksums_beside_and_no_rewrite(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "root")
    rec = await target.create("set/001", {})
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    got = await target.put_file(rec, "deep/er/f.bin", src, 7, sha256(b"payload"))
    stored = tmp_path / "root" / "set" / "001" / "deep" / "er" / "f.bin"
    assert stored.read_bytes() == b"payload"
    assert got.checksum("md5") == hashlib.md5(b"payload").hexdigest()
    inode = stored.stat().st_ino
    await target.put_file(rec, "deep/er/f.bin", src, 7, sha256(b"payload"))
    assert stored.stat().st_ino == inode  # idempotent: not written again
    assert not list((tmp_path / "root" / "set" / "001" / ".ferry" / "tmp").iterdir())
    # An edit behind the target's back makes the checksum unknown, never wrongly verified.
    stored.write_bytes(b"PAYLOAD")
    listed = (await target.list_files(rec))["deep/er/f.bin"]
    assert listed.checksums == () and not listed.matches(7, sha256(b"payload"))
    assert await target.list_records() == ["set/001"]
    await target.create("set/002", {})
    await target.create("other/1", {})
    assert await target.list_records("set/") == ["set/001", "set/002"]
    await target.aclose()
    # A new target object over the same folder knows the checksums (they live beside the files).
    again = LocalTarget(tmp_path / "root")
    await again.put_file(rec, "x", src, 7, sha256(b"payload"))
    assert (await again.list_files(rec))["x"].matches(7, sha256(b"payload"))
    await again.aclose()


async def test_keys_and_ids_that_escape_are_refused(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "root")
    rec = await target.create("r", {})
    src = tmp_path / "s"
    src.write_bytes(b"s")
    for key in ("../out", "/abs", ".ferry/archive-state.sqlite", "a/../../b"):
        with pytest.raises(UnsafePathError):
            await target.put_file(rec, key, src, 1, sha256(b"s"))
    for recid in ("../x", "/etc", "a/.ferry"):
        with pytest.raises(UnsafePathError):
            await target.create(recid, {})
    (tmp_path / "root" / "r" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        await target.put_file(rec, "link/escaped", src, 1, sha256(b"s"))
    assert not (tmp_path / "escaped").exists()
    await target.aclose()
