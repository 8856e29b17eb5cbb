"""A CERN record that lists no files, through ``ferry upload --target zen``, end to end.

What Zenodo allows: a deposition is published only with at least one file (publishing an
empty one answers 400 on ``files.enabled``, "Missing uploaded files"; the legacy deposit
API has no metadata-only switch). So the closest honest thing, and what
``pipeline/without_files.py`` does for a target with ``metadata`` but not
``metadata_only``, is one file: the source record itself as JSON, named after it, with
the profile's notes saying the source lists no data files. Checked here against the
Zenodo stand-in: the plan, the published deposition (its one file byte for byte the
source record, its md5 on the server), the stats, and a re-run that writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ferry.cli import main
from stats.events import read_jsonl
from tests.fixtures_zenodo import ZenodoHandle
from tests.test_metadata_only import own_record, write_records
from tests.test_zenodo_target import writes, zen_config
from upload.targets.zenodo import ZenodoTarget

RECID = "93300"  # a CMS author list: metadata, no files
DOCUMENT = f"cernopendata-record-{RECID}.json"


def api(zen: ZenodoHandle, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{zen.api}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {zen.token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def content(zen: ZenodoHandle, record_id: int, key: str) -> bytes:
    with urllib.request.urlopen(f"{zen.api}/records/{record_id}/files/{key}/content", timeout=10) as resp:
        data: bytes = resp.read()
    return data


def events(stats: Path) -> list[dict[str, Any]]:
    return [r for f in sorted(stats.glob("*.jsonl")) for r in read_jsonl(f)]


def test_zenodo_publishes_nothing_without_a_file(zenodo: ZenodoHandle) -> None:
    """The premise: an empty deposition cannot be published (so a document is needed)."""
    assert not ZenodoTarget.abilities.metadata_only and ZenodoTarget.abilities.metadata
    meta = {"title": "An author list", "creators": [{"name": "CMS Collaboration"}], "description": "x"}
    meta |= {"upload_type": "dataset", "publication_date": "2024-01-01"}
    status, dep = api(zenodo, "POST", "/deposit/depositions", {"metadata": meta})
    assert status == 201
    status, answer = api(zenodo, "POST", f"/deposit/depositions/{dep['id']}/actions/publish")
    assert status == 400
    assert any(e["field"] == "files.enabled" for e in answer["errors"]), answer
    assert zenodo.summary()["published"] == 0


def test_record_without_files_is_published_as_its_record_document(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    record = own_record("cms", RECID)
    assert not record.get("files")
    records = write_records(tmp_path, [record])
    config = zen_config(tmp_path, zenodo)
    dest, stats = tmp_path / "data", tmp_path / "stats"
    args = ["--config", str(config), "upload", RECID, "--target", "zen", "--records", str(records)]
    args += ["--dest", str(dest), "--stats-dir", str(stats), "--publish"]

    # The plan says what will happen and why; nothing is written, here or there.
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"record {RECID}: no files: one file {DOCUMENT}" in out
    assert "publishes nothing without a file" in out and "into a new draft" in out
    assert writes(zenodo) == [] and not dest.exists()

    code = main(args)
    out_err = capsys.readouterr()
    assert code == 0, out_err.err
    (item,) = zenodo.summary()["items"]
    assert item["state"] == "done" and zenodo.summary()["published"] == 1
    staged = (dest / RECID / DOCUMENT).read_bytes()
    assert json.loads(staged) == record  # the source record as given, nothing invented
    assert item["files"] == {DOCUMENT: {"size": len(staged), "md5": hashlib.md5(staged).hexdigest()}}
    assert content(zenodo, item["id"], DOCUMENT) == staged  # what the record serves
    status, published = api(zenodo, "GET", f"/records/{item['id']}")
    assert status == 200
    meta = published["metadata"]
    assert meta["title"] == record["title"]
    assert "lists no data files" in meta["notes"]
    assert [c["name"] for c in meta["creators"]][:2] == [a["name"] for a in record["authors"][:2]]
    rows = events(stats)
    (rec_event,) = [r for r in rows if r["stage"] == "record" and r["status"] not in ("started", "dry-run")]
    assert rec_event["status"] == "ok" and f"uploaded as one file, {DOCUMENT}" in rec_event["reason"]
    assert [r["file"] for r in rows if r["stage"] == "upload" and r["status"] == "ok"] == [DOCUMENT]

    # Run again: found published, unchanged: not one writing request.
    before = writes(zenodo)
    assert main(args) == 0, capsys.readouterr().err
    assert writes(zenodo) == before
    assert len(zenodo.summary()["items"]) == 1
