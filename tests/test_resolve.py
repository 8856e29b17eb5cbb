"""Record resolution: every real DELPHI record, and the awkward shapes, without downloading."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from download.sink import ByteBudget, FileSink, lanes_for, prefix_hashers
from download.sources.cernopendata import (
    PortalSource,
    RecordsFileSource,
    build_record,
    record_from_api,
    record_from_fixture,
)
from ferry.cli import main
from ferry.core.checksums import MultiHasher
from ferry.core.errors import ChecksumFormatError, InputError, RecordNotFound, UnsafePathError
from tests.conftest import fixture_records_dir
from tests.fixtures_xrootd import SandboxSource


async def test_every_delphi_fixture_record_resolves(delphi_records: list[dict[str, Any]]) -> None:
    paths = sorted(fixture_records_dir().glob("*.json"))
    source = RecordsFileSource(paths)
    assert len(source.recids) == len(delphi_records) > 700
    resolved = no_files = 0
    for raw in delphi_records:
        recid = str(raw["recid"])
        files = raw.get("files") or []
        if not files:
            # a record without files resolves: the pipeline migrates it as metadata only
            empty = await source.resolve(recid)
            assert empty.recid == recid and empty.files == () and empty.metadata["recid"] == raw["recid"]
            no_files += 1
            continue
        record = await source.resolve(recid)
        resolved += 1
        assert record.recid == recid and len(record.files) == len(files)
        for entry, f in zip(record.files, files, strict=True):
            assert entry.uri == f["uri"] and entry.size == f["size"]
            assert entry.key == f["uri"].rsplit("/", 1)[1]  # DELPHI basenames are unique per record
            (checksum,) = entry.checksums
            assert checksum.algorithm == "adler32" and len(checksum.value) == 8
            assert int(checksum.value, 16) == int(f["checksum"].split(":")[1], 16)
    assert resolved > 700 and no_files == 4


def test_delphi_dry_run_from_records_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = fixture_records_dir() / "delphi-datasets-1994.json"
    recid = str(json.loads(path.read_text())[0]["recid"])
    code = main(["download", "--records", str(path), "--dest", str(tmp_path / "d"), "--dry-run", recid])
    assert code == 0
    out = capsys.readouterr().out
    assert f"record {recid}:" in out and ".sdst" in out and not (tmp_path / "d").exists()


def _file(uri: str, checksum: str = "adler32:00000001", size: int = 1) -> dict[str, Any]:
    return {"uri": uri, "size": size, "checksum": checksum}


def test_checksum_forms() -> None:
    rec = build_record(
        "7",
        {},
        [
            _file("root://h//eos/a/x.dat", "adler32:2c0215"),
            _file("root://h//eos/a/y.dat", "sha1:" + "ab" * 20),
            _file("root://h//eos/a/z.dat", "alder32:62c025"),
        ],
    )
    assert [str(f.checksums[0]) for f in rec.files] == [
        "adler32:002c0215",
        "sha1:" + "ab" * 20,
        "adler32:0062c025",
    ]
    assert any("alder32" in note for note in rec.notes)


def test_bad_checksum_names_record_and_file() -> None:
    with pytest.raises(ChecksumFormatError) as info:
        build_record("7", {}, [_file("root://h//eos/a/x.dat", "crc64:1234")])
    text = str(info.value)
    assert "record 7" in text and "x.dat" in text and "crc64" in text


def test_bad_size_and_missing_uri() -> None:
    with pytest.raises(InputError, match=r"record 7.*byte count"):
        build_record("7", {}, [_file("root://h//eos/a/x.dat", size=-3)])
    with pytest.raises(InputError, match="no uri"):
        build_record("7", {}, [{"size": 1, "checksum": "adler32:00000001"}])


@pytest.mark.parametrize(
    "uri", ["root://h//eos/../../etc/passwd", "root://h//eos/a/", "root://h//eos/a/b\x00c", "../x"]
)
def test_escaping_uri_refuses_the_record(uri: str) -> None:
    with pytest.raises(UnsafePathError) as info:
        build_record("9", {}, [_file("root://h//eos/a/ok.dat"), _file(uri)])
    assert "record 9" in str(info.value) and "refused" in str(info.value)


async def test_index_expansion_from_fixture_format() -> None:
    entries = [_file(f"root://h//eos/idx/d/f{i}.root", size=10 + i) for i in range(3)]
    payload = json.dumps([{**e, "filename": e["uri"].rsplit("/", 1)[1]} for e in entries]).encode()
    txt = "".join(e["uri"] + "\n" for e in entries).encode()
    served = {"root://h//eos/idx/i/x_file_index.json": payload, "root://h//eos/idx/i/x_file_index.txt": txt}
    asked: list[str] = []

    async def read(uri: str) -> bytes:
        asked.append(uri)
        return served[uri]

    raw = {
        "recid": "5",
        "files": [
            {"uri": "root://h//eos/idx/i/x_file_index.json", "type": "index.json", "size": len(payload),
             "checksum": f"adler32:{zlib.adler32(payload):08x}"},
            {"uri": "root://h//eos/idx/i/x_file_index.txt", "type": "index.txt", "size": len(txt),
             "checksum": f"adler32:{zlib.adler32(txt):08x}"},
        ],
    }  # fmt: skip
    record = await record_from_fixture(raw, read)
    assert [f.key for f in record.files] == ["f0.root", "f1.root", "f2.root"]
    assert [f.size for f in record.files] == [10, 11, 12]
    assert asked == ["root://h//eos/idx/i/x_file_index.json"]  # the .txt twin is not needed
    # A damaged index is refused, naming it.
    served["root://h//eos/idx/i/x_file_index.json"] = payload[:-1] + b" "
    with pytest.raises(Exception, match=r"record 5.*x_file_index\.json.*checksum mismatch"):
        await record_from_fixture(raw, read)
    # A text index alone lists URIs; no sizes or checksums come with it.
    only_txt = {"recid": "6", "files": [raw["files"][1]]}
    record = await record_from_fixture(only_txt, read)
    assert [f.key for f in record.files] == ["f0.root", "f1.root", "f2.root"]
    assert all(f.size is None and not f.checksums for f in record.files)


async def test_api_answer_with_file_indices_and_tape() -> None:
    body = {
        "id": 12,
        "metadata": {
            "recid": "12",
            "files": [{**_file("root://h//eos/r/direct.dat"), "key": "direct.dat"}],
            "_file_indices": [
                {
                    "key": "r_file_index.json",
                    "files": [
                        {**_file("root://h//eos/r/a/AO2D.root"), "availability": "online"},
                        {**_file("root://h//eos/r/b/AO2D.root"), "availability": "on demand"},
                    ],
                }
            ],
        },
    }
    record = await record_from_api(body, "12", None)
    assert [f.key for f in record.files] == ["direct.dat", "a/AO2D.root", "b/AO2D.root"]
    assert [f.availability for f in record.files] == ["online", "online", "on demand"]
    with pytest.raises(InputError, match="metadata"):
        await record_from_api({"id": 12}, "12", None)


async def test_portal_source_against_the_stand_in(sandbox_source: SandboxSource) -> None:
    source = PortalSource(sandbox_source.portal_url)
    try:
        record = await source.resolve(sandbox_source.cases["index"])
        assert len(record.files) == 5 and all(f.checksums for f in record.files)
        with pytest.raises(RecordNotFound, match="record 31337"):
            await source.resolve("31337")
        empty = await source.resolve(sandbox_source.cases["nofiles"])
        assert empty.files == () and empty.recid == sandbox_source.cases["nofiles"]
        for recid in ("80509", "81045"):
            real = await source.resolve(recid)
            assert real.files and all(f.uri.startswith(sandbox_source.xrootd_url) for f in real.files)
    finally:
        await source.close()


def test_records_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(InputError, match="not valid JSON"):
        RecordsFileSource([bad])
    with pytest.raises(InputError, match="does not exist"):
        RecordsFileSource([tmp_path / "nope.json"])
    assert main(["download", "--records", str(bad), "--dest", str(tmp_path / "d"), "1"]) == 2


# --- the sink: out-of-order chunks, bounded memory ---------------------------------------


@pytest.mark.parametrize("chunk", [1000, 300_000, 2 * 1024 * 1024])
async def test_sink_hashes_in_order_whatever_the_arrival_order(tmp_path: Path, chunk: int) -> None:
    data = random.Random(chunk).randbytes(min(5 * 1024 * 1024, 300 * chunk) + 17)
    path = tmp_path / "out.part"
    prefix = 123_457
    path.write_bytes(data[:prefix])
    budget = ByteBudget(4 * chunk)
    with ThreadPoolExecutor(4) as pool:
        hashers = await prefix_hashers(str(path), prefix, lanes_for(("adler32", "md5", "sha1")), pool)
        fd = os.open(path, os.O_WRONLY)
        try:
            sink = FileSink(fd, start=prefix, hashers=hashers, budget=budget, executor=pool)
            # The fetcher contract: reserve in offset order (so the next chunk in order
            # always holds budget), deliver in any order.
            rng = random.Random(1)
            tasks = []

            async def put(offset: int, piece: bytes, delay: float) -> None:
                await asyncio.sleep(delay)
                await sink.put(offset, piece, reserved=len(piece))

            for offset in range(prefix, len(data), chunk):
                piece = data[offset : offset + chunk]
                await sink.reserve(len(piece))
                tasks.append(asyncio.create_task(put(offset, piece, rng.random() * 0.002)))
            await asyncio.gather(*tasks)
            assert await sink.finish() == len(data)
        finally:
            os.close(fd)
    whole = MultiHasher(("adler32", "md5", "sha1"))
    whole.update(data)
    assert sink.hexdigests() == whole.hexdigests()
    assert path.read_bytes() == data
    await asyncio.sleep(0)  # let release notifications run
    assert budget.available == budget.capacity


def test_lanes_split_slow_hashes() -> None:
    assert lanes_for(("adler32", "md5")) == [("md5",), ("adler32",)]
    assert lanes_for(("adler32", "md5", "sha1")) == [("md5",), ("sha1", "adler32")]
    assert lanes_for(("adler32",)) == [("adler32",)]


def test_alder32_warning_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        build_record("3", {}, [_file("root://h//eos/a/x.dat", "alder32:00000001")])
    assert "alder32" in caplog.text
