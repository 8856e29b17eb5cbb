"""The local-directory source and the file:// fetcher: a folder as a record, downloaded and verified."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from archive import hashing
from download.engine import Downloader
from download.sources import split_spec
from download.sources.local import LocalSource
from download.transport import Transport
from ferry.core.errors import RecordNotFound

OLD = 1_600_000_000


def tree(root: Path) -> dict[str, bytes]:
    files = {"a.txt": b"alpha", "sub dir/b é.bin": os.urandom(5 * 1024 * 1024 + 7), "empty": b""}
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (OLD, OLD))
    (root / ".hidden").write_bytes(b"left out")
    return files


def test_spec_names_the_dir_source() -> None:
    assert split_spec("dir:/data/x") == ("dir", "/data/x")
    assert split_spec("./x") == ("dir", "./x")


async def test_folder_as_record_checksums_kept_between_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = tree(tmp_path / "ds")
    record = await LocalSource().resolve(str(tmp_path / "ds"))
    assert record.recid == "ds" and record.source == "dir"
    assert {f.key: f.size for f in record.files} == {k: len(v) for k, v in files.items()}
    for f in record.files:
        assert f.expected("sha256").value == hashlib.sha256(files[f.key]).hexdigest()  # type: ignore[union-attr]
        assert f.expected("md5").value == hashlib.md5(files[f.key]).hexdigest()  # type: ignore[union-attr]
        assert f.uri.startswith("file:///")
    calls: list[object] = []
    real = hashing.hash_file_once
    monkeypatch.setattr(hashing, "hash_file_once", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = await LocalSource().resolve(f"dir:{tmp_path / 'ds'}")
    assert again.files == record.files and calls == []  # an unchanged tree is not hashed again
    with pytest.raises(RecordNotFound):
        await LocalSource().resolve(str(tmp_path / "nope"))


async def test_engine_downloads_a_folder_through_file_uris(tmp_path: Path) -> None:
    files = tree(tmp_path / "ds")
    record = await LocalSource().resolve(str(tmp_path / "ds"))
    transport = Transport.create("root")
    async with Downloader(transport) as downloader:
        result = await downloader.download_record(record, tmp_path / "dest")
    await transport.close()
    assert result.ok, result
    for key, data in files.items():
        assert (tmp_path / "dest" / "dir-ds" / key).read_bytes() == data
