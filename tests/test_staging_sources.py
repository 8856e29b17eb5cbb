"""Staging folders per source (issue 14): CERN record N and ``zenodo:N`` downloaded into one
``--dest`` never share ``DEST/N`` (their files and manifests would mix, and a verified
manifest of one would vouch for the other's files)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from download.sources import staging_name
from ferry.core.model import Record
from tests.fixtures_zenodo import ZenodoHandle
from tests.test_copy import ferry, write_config
from tests.test_zenodo_source import payload, publish


def test_staging_names_keep_sources_apart() -> None:
    assert staging_name(Record("123", {})) == "123"  # CERN: DEST/<recid>, as always
    assert staging_name(Record("123", {}, source="zenodo")) == "zenodo-123"
    assert staging_name(Record("results", {}, source="dir")) == "dir-results"


def test_cern_record_and_zenodo_record_with_the_same_id_stage_apart(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = publish(zenodo, {"same.bin": payload(30_000)})
    rid = str(rec["id"])
    cern_bytes = b"cern data, not zenodo's\n" * 100
    local = tmp_path / "eos" / "same.bin"  # the same file name in both records
    local.parent.mkdir(parents=True)
    local.write_bytes(cern_bytes)
    cern = {
        "recid": rid,
        "title": "A CERN record with the Zenodo record's number",
        "files": [
            {"uri": local.as_uri(), "size": len(cern_bytes), "checksum": f"adler32:{zlib.adler32(cern_bytes):08x}"}
        ],
    }
    records = tmp_path / "records.json"
    records.write_text(json.dumps([cern]))
    config = write_config(tmp_path, zenodo=zenodo.url)
    dest = tmp_path / "data"
    assert ferry(config, "download", rid, "--records", str(records), "--dest", str(dest)) == 0, capsys.readouterr().err
    assert ferry(config, "download", f"zenodo:{rid}", "--dest", str(dest)) == 0, capsys.readouterr().err
    assert (dest / rid / "same.bin").read_bytes() == cern_bytes
    assert (dest / f"zenodo-{rid}" / "same.bin").read_bytes() == payload(30_000)
    # A re-run of each finds its own verified copy and fetches nothing again.
    for args in ((rid, "--records", str(records)), (f"zenodo:{rid}",)):
        assert ferry(config, "download", *args, "--dest", str(dest)) == 0
    assert (dest / rid / "same.bin").read_bytes() == cern_bytes
    assert (dest / f"zenodo-{rid}" / "same.bin").read_bytes() == payload(30_000)


def test_full_disk_cleanup_removes_the_partials_of_the_staging_folder_only(tmp_path: Path) -> None:
    # bulk on a full disk removes the .part files of unfinished records: those of zenodo:123
    # live in DEST/zenodo-123; DEST/123 (CERN record 123, finished earlier) is left alone.
    from pipeline.bulk import DISK_FULL, BulkReport, remove_partials

    ours, theirs = tmp_path / "zenodo-123" / "a.bin.part", tmp_path / "123" / "a.bin.part"
    for path in (ours, theirs):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * 1000)
    never_resolved = tmp_path / "456" / "b.part"
    never_resolved.parent.mkdir()
    never_resolved.write_bytes(b"y" * 10)
    report = BulkReport(unfinished=["123", "456"], stopped=f"{DISK_FULL}: record 123: no space")
    report.staging["123"] = staging_name(Record("123", {}, source="zenodo"))
    assert remove_partials(tmp_path, report) == 1000
    assert not ours.exists() and theirs.exists() and never_resolved.exists()
