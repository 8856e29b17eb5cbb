"""inveniordm-py (CERN's InvenioRDM client), unpatched: the new-version flow against the sandbox.

To work on the new version's draft it POSTs `.../draft` on it (`Record.edit()`, and the
first step of `Draft.import_files()`): InvenioRDM's edit returns the existing draft (201);
the sandbox answered 404. (0.1.1's `import_files` then fails in the client itself, calling
`from_response` on None, so the files-import action is sent here directly.) The create/
upload/publish part is covered in tests/test_repository_peer.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import urllib.request
from typing import Any

from inveniordm_py.client import InvenioAPI
from inveniordm_py.files.metadata import FilesListMetadata, OutgoingStream
from inveniordm_py.records.metadata import DraftMetadata

from tests.fixtures_repository import RepositoryHandle

BODY = {
    "access": {"record": "public", "files": "public"},
    "files": {"enabled": True},
    "metadata": {
        "resource_type": {"id": "dataset"},
        "title": "Versioned DELPHI data",
        "publication_date": "2024-05-01",
        "publisher": "CERN Open Data",
        "creators": [{"person_or_org": {"type": "organizational", "name": "DELPHI collaboration"}}],
    },
}


def _get(url: str, token: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _post(url: str, token: str) -> Any:
    req = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _upload(draft: Any, key: str, data: bytes) -> None:
    draft.files.create(FilesListMetadata([{"key": key}]))
    stream = OutgoingStream()
    stream._data = io.BytesIO(data)  # 0.1.1's metadata classes take keywords only (see test_repository_peer)
    file = draft.files(key)
    file.set_contents(stream)
    file.commit()


def test_inveniordm_py_new_version_imports_files_and_publishes(repository: RepositoryHandle) -> None:
    client = InvenioAPI(repository.url + "/api", repository.token)
    v1_data = b"version one\n" * 100
    draft = client.records.create(data=DraftMetadata(**BODY))
    v1 = draft.data["id"]
    _upload(draft, "run.dat", v1_data)
    draft.publish()

    new = client.records(v1).new_version()
    v2 = new.data["id"]
    assert v2 != v1 and new.data["versions"]["index"] == 2

    edited = client.records(v2).edit()  # POST .../draft on the new version's draft
    assert edited.data["id"] == v2 and edited.data["is_published"] is False
    v2_draft = client.records(v2).draft
    _post(f"{repository.url}/api/records/{v2}/draft/actions/files-import", repository.token)
    edits = [r for r in repository.requests_log() if r["method"] == "POST" and r["path"] == f"/api/records/{v2}/draft"]
    assert [r["status"] for r in edits] == [201]
    listing = _get(f"{repository.url}/api/records/{v2}/draft/files", repository.token)
    assert [e["key"] for e in listing["entries"]] == ["run.dat"]

    body = json.loads(json.dumps(BODY))
    body["metadata"]["publication_date"] = "2024-06-01"  # a new version starts without one
    v2_draft.update(data=DraftMetadata(**body))
    _upload(v2_draft, "extra.txt", b"added in v2\n")
    record = v2_draft.publish()
    assert record.data["id"] == v2 and record.data["is_published"]

    latest = _get(f"{repository.url}/api/records/{v1}/versions/latest", repository.token)
    assert latest["id"] == v2 and latest["versions"]["index"] == 2
    files = {e["key"]: e for e in _get(latest["links"]["files"], repository.token)["entries"]}
    assert set(files) == {"run.dat", "extra.txt"}
    assert files["run.dat"]["checksum"] == "md5:" + hashlib.md5(v1_data).hexdigest()
