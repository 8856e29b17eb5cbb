"""A peer client, PyPI `inveniordm-py` (CERN's InvenioRDM client), against the sandbox.

If the sandbox drifted from InvenioRDM's shapes (ids, links, files list, publish
status, search hits), this client would fail. It is synchronous (requests), which is
fine: the sandbox runs in its own process.
"""

from __future__ import annotations

import hashlib
import io
import json
import urllib.request
from typing import Any

import pytest

from tests.fixtures_repository import RepositoryHandle

inveniordm_py = pytest.importorskip("inveniordm_py")

from inveniordm_py.client import InvenioAPI  # noqa: E402
from inveniordm_py.files.metadata import FilesListMetadata, OutgoingStream  # noqa: E402
from inveniordm_py.records.metadata import DraftMetadata  # noqa: E402


def _get(url: str, token: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
        return json.loads(raw) if resp.headers.get_content_type() == "application/json" else raw


def _stream(data: bytes) -> OutgoingStream:
    # inveniordm-py 0.1.1 metadata classes only take keyword arguments, so
    # `OutgoingStream(data=stream)` from its README would send a dict; set the stream directly.
    stream = OutgoingStream()
    stream._data = io.BytesIO(data)
    return stream


def test_inveniordm_py_creates_uploads_publishes(repository: RepositoryHandle) -> None:
    client = InvenioAPI(repository.url + "/api", repository.token)
    body = {
        "access": {"record": "public", "files": "public"},
        "files": {"enabled": True},
        "metadata": {
            "resource_type": {"id": "dataset"},
            "title": "Peer-uploaded DELPHI data",
            "publication_date": "2024-05-01",
            "publisher": "CERN Open Data",
            "creators": [{"person_or_org": {"type": "organizational", "name": "DELPHI collaboration"}}],
        },
    }
    payloads = {"run.dat": b"\x00\x01DELPHI" * 5000, "docs/readme.txt": b"read me\n"}
    draft = client.records.create(data=DraftMetadata(**body))
    draft_id = draft.data["id"]
    draft.files.create(FilesListMetadata([{"key": key} for key in payloads]))
    for key, data in payloads.items():
        file = draft.files(key)
        file.set_contents(_stream(data))
        file.commit()
        assert file.data["status"] == "completed"
    record = draft.publish()
    assert record.data["id"] == draft_id and record.data["is_published"]
    hits = [hit.data["id"] for hit in client.records.search(q="peer")]
    assert hits == [draft_id]
    # verified through the API, not through the peer
    published = _get(f"{repository.url}/api/records/{draft_id}", repository.token)
    listing = _get(published["links"]["files"], repository.token)
    entries = {e["key"]: e for e in listing["entries"]}
    assert set(entries) == set(payloads)
    for key, data in payloads.items():
        assert entries[key]["checksum"] == "md5:" + hashlib.md5(data).hexdigest()
        assert entries[key]["size"] == len(data)
        assert _get(entries[key]["links"]["content"], repository.token) == data
