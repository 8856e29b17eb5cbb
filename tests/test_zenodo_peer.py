"""A peer client from PyPI, zenodo-client, against the Zenodo stand-in, unpatched.

zenodo-client has no URL option (it talks to zenodo.org or sandbox.zenodo.org); its
instances keep the URLs in public attributes (``base``, ``api_base``,
``depositions_base``), which are pointed at the stand-in. Nothing else is changed: it
sends its token as ``?access_token=``, reads ``links.bucket`` and ``links.latest_draft``,
PUTs files into the bucket, and its publish/new-version calls sleep 1 s each.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures_zenodo import ZenodoHandle

zenodo_client = pytest.importorskip("zenodo_client")


def _client(zen: ZenodoHandle) -> Any:
    client = zenodo_client.Zenodo(access_token=zen.token)
    client.base = zen.url
    client.api_base = zen.url + "/api"
    client.depositions_base = client.api_base + "/deposit/depositions"
    return client


def test_zenodo_client_create_upload_publish_new_version(
    zenodo: ZenodoHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYSTOW_HOME", str(tmp_path / "pystow"))  # where its downloads go
    first = tmp_path / "table.tsv"
    first.write_bytes(b"a\tb\n1\t2\n")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"v1 notes\n")
    client = _client(zenodo)
    metadata = zenodo_client.Metadata(
        title="JUMP_rr tables",
        upload_type="dataset",
        description="Feature tables",
        creators=[zenodo_client.Creator(name="Doe, Jane", affiliation="Broad")],
        version="v1",
    )

    created = client.create(metadata, [first, notes], publish=True)
    v1 = created.json()
    assert created.status_code == 202 and v1["submitted"] is True and v1["state"] == "done"
    assert sorted(f["filename"] for f in v1["files"]) == ["notes.txt", "table.tsv"]
    assert v1["metadata"]["publication_date"]  # Zenodo's default: today

    first.write_bytes(b"a\tb\n1\t2\n3\t4\n")  # the new version changes one file
    updated = client.update(str(v1["id"]), [first], publish=True)
    v2 = updated.json()
    assert updated.status_code == 202 and v2["id"] != v1["id"] and v2["conceptrecid"] == v1["conceptrecid"]
    files = {f["filename"]: f["checksum"] for f in v2["files"]}
    # notes.txt was imported from v1; table.tsv replaced by the same-name PUT
    assert files == {
        "table.tsv": hashlib.md5(first.read_bytes()).hexdigest(),
        "notes.txt": hashlib.md5(b"v1 notes\n").hexdigest(),
    }

    record = client.get_record(v2["id"], authenticate=False).json()
    assert record["conceptrecid"] == v1["conceptrecid"] and record["metadata"]["version"] != "v1"
    path = client.download(v2["id"], "table.tsv")
    assert path.read_bytes() == first.read_bytes()
    concept = requests.get(f"{zenodo.api}/records/{v1['conceptrecid']}", timeout=10)
    assert concept.json()["id"] == v2["id"]  # the concept resolves to the latest version
    writes = [(w["method"], w["path"].split("/")[-1]) for w in zenodo.writes()]
    assert writes.count(("POST", "newversion")) == 1 and writes.count(("POST", "publish")) == 2


def test_zenodo_client_errors_as_zenodo_gives_them(zenodo: ZenodoHandle) -> None:
    client = _client(zenodo)
    # zenodo-client turns a 400 on create into ValueError with Zenodo's JSON text
    with pytest.raises(ValueError, match=r"metadata\.upload_type"):
        client.create({"metadata": {"upload_type": "movie"}}, [], publish=False)
    client.access_token = "wrong"
    with pytest.raises(requests.HTTPError, match="401"):
        client.create({"metadata": {}}, [], publish=False)
