"""Zenodo as a source (download/sources/zenodo.py) against the Zenodo stand-in, and the
download engine fetching its files over HTTP with md5 verified in flight and Range resume."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import requests

from download.engine import Downloader, download_records, part_path
from download.sources import SourceDeps, open_source, split_spec
from download.sources.zenodo import ZenodoSource, ZenodoSourceConfig, parse_id
from download.transport import Transport
from ferry.core.checksums import Checksum
from ferry.core.config import Limits, config_from_mapping
from ferry.core.errors import ConfigError, InputError, NoFilesError, RecordNotFound, SourceError, VerificationError
from tests.fixtures_zenodo import ZenodoHandle

META = {
    "upload_type": "dataset",
    "title": "Source test record",
    "description": "d",
    "creators": [{"name": "Doe, Jane"}],
    "publication_date": "2024-05-01",
}
# Small chunks so a file of a few hundred KiB is a "large" one: streamed, resumable.
LIMITS = Limits(chunk_size=64 * 1024, chunks_in_flight=2, retries=1, backoff_base=0.01, backoff_max=0.05)


def _call(zen: ZenodoHandle, method: str, url: str, status: int, **kwargs: Any) -> Any:
    resp = requests.request(
        method,
        url if url.startswith("http") else zen.api + url,
        params={"access_token": zen.token},
        timeout=10,
        **kwargs,
    )
    assert resp.status_code == status, resp.text
    return resp.json() if resp.content else None


def publish(zen: ZenodoHandle, files: dict[str, bytes], **metadata: Any) -> dict[str, Any]:
    dep = _call(zen, "POST", "/deposit/depositions", 201, json={"metadata": {**META, **metadata}})
    for key, data in files.items():
        _call(zen, "PUT", f"{dep['links']['bucket']}/{key}", 201, data=data)
    result: dict[str, Any] = _call(zen, "POST", dep["links"]["publish"], 202)
    return result


def payload(n: int, seed: int = 1) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


async def test_resolve_a_record(zenodo: ZenodoHandle) -> None:
    data = {"events.root": payload(5000), "README.txt": b"hello\n"}
    rec = publish(zenodo, data)
    source = ZenodoSource(zenodo.url)
    try:
        for spec in (str(rec["id"]), f"zenodo:{rec['id']}"):
            record = await source.resolve(spec)
            assert record.recid == str(rec["id"]) and record.source == "zenodo"
            assert record.metadata["conceptrecid"] == rec["conceptrecid"]
            by_key = {f.key: f for f in record.files}
            assert set(by_key) == set(data)
            for key, blob in data.items():
                entry = by_key[key]
                assert entry.size == len(blob)
                assert entry.checksums == (Checksum("md5", hashlib.md5(blob).hexdigest()),)
                assert entry.uri.startswith(zenodo.url + "/api/records/") and entry.uri.endswith("/content")
    finally:
        await source.close()


async def test_concept_resolves_to_the_latest_published_version(zenodo: ZenodoHandle) -> None:
    v1 = publish(zenodo, {"a.txt": b"one"})
    answer = _call(zenodo, "POST", v1["links"]["newversion"], 201)
    draft = _call(zenodo, "GET", answer["links"]["latest_draft"], 200)
    _call(zenodo, "PUT", f"{draft['links']['bucket']}/a.txt", 201, data=b"two!")
    _call(zenodo, "POST", draft["links"]["publish"], 202)
    _call(zenodo, "POST", v1["links"]["newversion"], 201)  # a third version, still a draft
    source = ZenodoSource(zenodo.url)
    try:
        record = await source.resolve(f"zenodo:concept:{v1['conceptrecid']}")
    finally:
        await source.close()
    assert record.recid == str(draft["id"]) and record.files[0].size == 4
    assert any(str(draft["id"]) in note for note in record.notes)


async def test_download_verifies_md5_in_flight_and_names_a_corrupted_file(zenodo: ZenodoHandle, tmp_path: Path) -> None:
    good, bad = payload(300_000), payload(200_000, seed=7)
    rec = publish(zenodo, {"good.bin": good, "bad.bin": bad})
    zenodo.corrupt(rec["id"], "bad.bin", offset=123_456)
    async with Downloader(Transport.create("https", https_base=zenodo.url, limits=LIMITS), limits=LIMITS) as dl:
        source = ZenodoSource(zenodo.url)
        try:
            (result,) = await download_records(dl, source, [f"zenodo:{rec['id']}"], tmp_path)
        finally:
            await source.close()
    record_dir = tmp_path / f"zenodo-{rec['id']}"  # staged apart from CERN record {id}
    assert (record_dir / "good.bin").read_bytes() == good
    assert not (record_dir / "bad.bin").exists() and not part_path(record_dir / "bad.bin").exists()
    (failed,) = result.failures
    assert failed.key == "bad.bin" and isinstance(failed.error, VerificationError)
    assert failed.error.expected == f"md5:{hashlib.md5(bad).hexdigest()}"
    (line,) = result.error_lines()
    assert f"record {rec['id']}" in line and "bad.bin" in line and "md5" in line


async def test_a_partial_download_resumes_with_range(zenodo: ZenodoHandle, tmp_path: Path) -> None:
    blob = payload(400_000)
    rec = publish(zenodo, {"big.bin": blob})
    final = tmp_path / f"zenodo-{rec['id']}" / "big.bin"  # the Zenodo record's staging folder
    final.parent.mkdir(parents=True)
    part_path(final).write_bytes(blob[:150_000])  # an earlier run stopped here
    async with Downloader(Transport.create("https", https_base=zenodo.url, limits=LIMITS), limits=LIMITS) as dl:
        source = ZenodoSource(zenodo.url)
        try:
            (result,) = await download_records(dl, source, [str(rec["id"])], tmp_path)
        finally:
            await source.close()
    assert result.ok, result.error_lines()
    (done,) = result.files
    assert done.action == "resumed" and done.bytes_transferred == 250_000
    assert done.checksums["md5"] == hashlib.md5(blob).hexdigest()
    assert final.read_bytes() == blob


async def test_deleted_record_restricted_files_and_empty_concept_are_clear_errors(zenodo: ZenodoHandle) -> None:
    gone = publish(zenodo, {"a.txt": b"a"})
    zenodo.delete_record(gone["id"])
    locked = publish(zenodo, {"s.txt": b"s"}, access_right="restricted", access_conditions="ask us")
    embargoed = publish(zenodo, {"e.txt": b"e"}, access_right="embargoed", embargo_date="2999-01-01")
    draft = _call(zenodo, "POST", "/deposit/depositions", 201, json={"metadata": META})
    source = ZenodoSource(zenodo.url)
    try:
        with pytest.raises(RecordNotFound, match="deleted") as deleted:
            await source.resolve(f"zenodo:{gone['id']}")
        assert deleted.value.recid == f"zenodo:{gone['id']}"
        with pytest.raises(SourceError, match="restricted") as restricted:
            await source.resolve(str(locked["id"]))
        assert restricted.value.recid == str(locked["id"])
        with pytest.raises(SourceError, match="embargo until 2999-01-01"):
            await source.resolve(str(embargoed["id"]))
        with pytest.raises(RecordNotFound, match="no published version"):
            await source.resolve(f"zenodo:concept:{draft['conceptrecid']}")
        with pytest.raises(RecordNotFound, match="no published record"):
            await source.resolve(str(draft["id"]))
    finally:
        await source.close()


def test_record_without_files_and_bad_ids() -> None:
    from download.sources.zenodo import record_from_zenodo

    with pytest.raises(NoFilesError):
        record_from_zenodo({"id": 5, "metadata": {"access_right": "open"}, "files": []}, asked="5")
    for bad in ("zenodo:abc", "concept:", "12a"):
        with pytest.raises(InputError):
            parse_id(bad)
    assert parse_id("zenodo:concept:42") == (True, "42") and parse_id("7") == (False, "7")


def test_open_source_reads_the_config_section(zenodo: ZenodoHandle) -> None:
    config = config_from_mapping({"source": {"zenodo": {"url": zenodo.url + "/"}}})
    deps = SourceDeps(config=config, limits=LIMITS, transport=Transport.create("https", limits=LIMITS))
    name, ident = split_spec("zenodo:concept:9")
    source = open_source(name, deps)
    assert isinstance(source, ZenodoSource) and source.url == zenodo.url and ident == "concept:9"
    assert ZenodoSourceConfig.from_mapping({}).url == "https://zenodo.org"
    with pytest.raises(ConfigError, match="tokn"):
        ZenodoSourceConfig.from_mapping({"tokn": "x"})
    with pytest.raises(ConfigError, match="url"):
        ZenodoSourceConfig.from_mapping({"url": "ftp://x"})
