"""`ferry cache build --records` expands file indexes as download/upload/bulk do; a missing
index is replaced by its twin (with a warning); an unreachable host is named with the
flags that choose another (issue 14, section 3). Against the sandbox's XRootD server and
portal stand-in (which serves /eos/opendata over HTTP)."""

from __future__ import annotations

import copy
import json
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from download.sources.cache import MasterCache
from download.sources.cernopendata import PortalSource
from download.transport import Transport
from ferry.cli import main
from ferry.core.errors import SourceUnavailable
from ferry.core.retry import RetryPolicy
from tests.fixtures_xrootd import SandboxSource


def _closed_port() -> int:
    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_records(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    path = tmp_path / f"records-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(records))
    return path


def test_cache_build_expands_an_index_record_like_download(
    sandbox_source: SandboxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recid = sandbox_source.cases["index"]
    out = tmp_path / "cache.json"
    code = main(["cache", "build", "--records", str(sandbox_source.records_file), "-o", str(out)])
    err = capsys.readouterr().err
    assert f"record {recid}" not in err  # refused before: "index file(s) not expanded"
    cache = MasterCache.load(out)
    entry = cache.get(recid)
    assert entry is not None and not entry.get("error")
    files = entry["files"]
    assert [f["path"] for f in files] == [f"indexed_{i}.root" for i in range(5)]
    assert [f["size"] for f in files] == [40_000, 41_000, 42_000, 5_000, 1]
    assert all(str(f["checksum"]).startswith("adler32:") for f in files)
    # The same files, sizes and checksums `ferry download --records` plans.
    dry = main(["download", "--records", str(sandbox_source.records_file), "--dry-run", "--dest", str(tmp_path), recid])
    plan = capsys.readouterr().out
    assert dry == 0 and all(f["path"] in plan for f in files)
    # Every other record with data files is cached too (the sandbox's broken cases are
    # broken on download, not on listing; the escaping one is refused).
    assert code == 1 and set(cache.entries) == {str(r["recid"]) for r in sandbox_source.records}
    errors = {r for r, e in cache.entries.items() if e.get("error")}
    assert errors == {sandbox_source.cases["escape"]}

    # Only the recids asked for, indexes fetched for those alone.
    recids = tmp_path / "recids.txt"
    recids.write_text(f"{recid}\n")
    sub = tmp_path / "sub.json"
    args = ["cache", "build", "--records", str(sandbox_source.records_file), "--recids", str(recids), "-o", str(sub)]
    assert main(args) == 0
    assert list(MasterCache.load(sub).entries) == [recid]
    assert len(MasterCache.load(sub).entries[recid]["files"]) == 5


@pytest.fixture
def twins(sandbox_source: SandboxSource) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A fresh folder in the served tree holding copies of the index case's two indexes,
    and a copy of its record pointing at them (each test removes what it wants missing)."""
    folder_rel = f"eos/opendata/sandbox/twins-{uuid.uuid4().hex[:8]}"
    folder = sandbox_source.root / folder_rel
    folder.mkdir(parents=True)
    record = copy.deepcopy(sandbox_source.record("index"))
    record["recid"] = "990105"
    for entry in record["files"]:
        old = entry["uri"].split("//", 2)[2]  # root://host//eos/... -> eos/...
        name = old.rsplit("/", 1)[1]
        shutil.copyfile(sandbox_source.root / old, folder / name)
        entry["uri"] = f"{sandbox_source.xrootd_url}//{folder_rel}/{name}"
    try:
        yield folder, record
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _build(tmp_path: Path, records: list[dict[str, Any]], *extra: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / f"cache-{uuid.uuid4().hex[:6]}.json"
    code = main(["cache", "build", "--records", str(_write_records(tmp_path, records)), *extra, "-o", str(out)])
    return code, dict(MasterCache.load(out).entries)


def test_missing_json_index_falls_back_to_its_txt_twin(
    twins: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, record = twins
    json_index = next(folder.glob("*.json"))
    json_index.unlink()
    code, entries = _build(tmp_path, [record])
    err = capsys.readouterr().err
    assert code == 0, err
    files = entries["990105"]["files"]
    assert [f["path"] for f in files] == [f"indexed_{i}.root" for i in range(5)]
    assert all(f["size"] is None and f["checksum"] is None for f in files)  # a .txt lists URIs only
    assert "warning: record 990105" in err and f"{json_index.name} is missing on the server" in err
    assert "read its twin" in err and json_index.name.replace(".json", ".txt") in err
    assert any(json_index.name in note for note in entries["990105"]["notes"])


def test_missing_txt_index_falls_back_to_an_unlisted_json_twin_over_https(
    twins: tuple[Path, dict[str, Any]],
    sandbox_source: SandboxSource,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder, record = twins
    record["files"] = [f for f in record["files"] if f["type"] == "index.txt"]  # only the .txt listed
    txt_index = next(folder.glob("*.txt"))
    txt_index.unlink()
    https = ("--protocol", "https", "--https-base", sandbox_source.portal_url)
    code, entries = _build(tmp_path, [record], *https)
    err = capsys.readouterr().err
    assert code == 0, err
    files = entries["990105"]["files"]
    assert [f["size"] for f in files] == [40_000, 41_000, 42_000, 5_000, 1]  # the JSON twin's facts
    assert f"{txt_index.name} is missing on the server" in err


def test_both_indexes_missing_is_an_error_naming_both(
    twins: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, record = twins
    names = sorted(p.name for p in folder.iterdir())
    for path in folder.iterdir():
        path.unlink()
    code, entries = _build(tmp_path, [record])
    err = capsys.readouterr().err
    assert code == 1
    line = next(line for line in err.splitlines() if "record 990105" in line)
    assert "both file indexes are missing" in line and all(name in line for name in names)
    assert entries["990105"]["error"] and not entries["990105"].get("files")


def test_unreachable_index_host_is_named_with_what_to_try(
    sandbox_source: SandboxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = copy.deepcopy(sandbox_source.record("index"))
    port = _closed_port()
    code, entries = _build(tmp_path, [record], "--protocol", "https", "--https-base", f"http://127.0.0.1:{port}")
    err = capsys.readouterr().err
    assert code == 1
    line = next(line for line in err.splitlines() if f"record {record['recid']}" in line)
    assert f"cannot reach host 127.0.0.1:{port}" in line
    assert "--protocol" in line and "--https-base" in line and "--portal" in line
    assert entries[str(record["recid"])]["error"]


async def test_unreachable_portal_is_named_with_what_to_try() -> None:
    port = _closed_port()
    source = PortalSource(f"http://127.0.0.1:{port}", policy=RetryPolicy(attempts=1))
    try:
        with pytest.raises(SourceUnavailable) as info:
            await source.resolve("80509")
    finally:
        await source.close()
    text = str(info.value)
    assert text.startswith("record 80509: cannot reach the portal at host 127.0.0.1:")
    assert f"127.0.0.1:{port}" in text and "--portal URL" in text and "--records" in text


async def test_transport_twin_read_through_xrootd(twins: tuple[Path, dict[str, Any]]) -> None:
    """The download path (RecordsFileSource) shares the fallback: the record's notes say so."""
    from download.sources.cernopendata import RecordsFileSource

    folder, record = twins
    next(folder.glob("*.json")).unlink()
    path = folder.parent / f"{folder.name}.records.json"
    path.write_text(json.dumps([record]))
    transport = Transport.create("root")
    try:
        resolved = await RecordsFileSource([path], read_index=transport.read_index).resolve("990105")
    finally:
        await transport.close()
        path.unlink()
    assert len(resolved.files) == 5 and any("read its twin" in note for note in resolved.notes)
