"""nrp-cmd, the NRP repository client, unpatched against the sandbox in NRP mode over HTTPS.

nrp-cmd needs Python >= 3.12, so it lives in its own venv (`make nrp-venv`, run by
`make test`; `FERRY_NRP_VENV` points elsewhere). Without it this test fails, naming the
fix: a missing judge must not look like a pass.

The flow is the one a depositor runs: add the repository, create a record, upload a
small file and one over NRP's single-PUT cap (nrp-cmd sends it multipart), list the
files, publish (through the publish_draft request), ask for a new version (through the
new_version request), list and search. TLS verification stays on: the client trusts the
sandbox CA through SSL_CERT_FILE / REQUESTS_CA_BUNDLE only.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox.repository_options import NRP_SINGLE_PUT
from tests.fixtures_repository import RepositoryHandle

ROOT = Path(__file__).resolve().parents[1]
NRP_VENV = Path(os.environ.get("FERRY_NRP_VENV", ROOT / ".venv-nrp"))
STEP_TIMEOUT = 120

METADATA = {
    "title": "nrp-cmd conformance record",
    "resource_type": {"id": "dataset"},
    "publication_date": "2024-05-01",
    "publisher": "CERN Open Data Portal",
    "creators": [{"person_or_org": {"type": "organizational", "name": "DELPHI collaboration"}}],
}


@pytest.fixture(scope="module")
def nrp_cmd() -> Path:
    exe = NRP_VENV / "bin" / "nrp-cmd"
    if not exe.is_file():
        pytest.fail(
            f"nrp-cmd is not installed at {exe}: run `make nrp-venv` (it needs a Python >= 3.12, "
            "e.g. python3.12; the machine image has one). This test does not skip on purpose.",
            pytrace=False,
        )
    return exe


class NrpCmd:
    def __init__(self, exe: Path, repo: RepositoryHandle, workdir: Path) -> None:
        self.exe = exe
        self.workdir = workdir
        # rich wraps JSON at the terminal width: a wide one keeps URLs whole
        self.env = repo.client_env(
            NRP_CMD_CONFIG_PATH=str(workdir / "nrp-config.json"), HOME=str(workdir), COLUMNS="100000"
        )

    def run(self, *args: str) -> str:
        proc = subprocess.run(
            [str(self.exe), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise AssertionError(f"nrp-cmd {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def json(self, *args: str) -> Any:
        out = self.run(*args, "-f", "json")
        try:
            return json.loads(out)
        except ValueError as exc:
            raise AssertionError(f"nrp-cmd {' '.join(args)} printed no JSON: {out[:2000]!r}") from exc


def _write(path: Path, size: int, seed: bytes) -> str:
    block = hashlib.sha256(seed).digest() * (1 << 15)  # 1 MiB of a non-constant pattern
    md5 = hashlib.md5()
    with path.open("wb") as fh:
        left = size
        while left:
            chunk = block[:left]
            fh.write(chunk)
            md5.update(chunk)
            left -= len(chunk)
    return md5.hexdigest()


def _paths(repo: RepositoryHandle, method: str) -> list[str]:
    return [row["path"] for row in repo.requests_log() if row["method"] == method]


def test_nrp_cmd_full_deposit_flow(nrp_cmd: Path, https_repository: RepositoryHandle, tmp_path: Path) -> None:
    repo = https_repository
    assert repo.url.startswith("https://")
    client = NrpCmd(nrp_cmd, repo, tmp_path)
    small_md5 = _write(tmp_path / "small.txt", 3000, b"small")
    big_size = NRP_SINGLE_PUT + 3 * 1024 * 1024  # over the single-PUT cap: must go multipart
    big_md5 = _write(tmp_path / "big.bin", big_size, b"big")

    out = client.run("add", "repository", repo.url, "sandbox", "--token", repo.token, "--no-launch-browser")
    assert "Added repository sandbox" in out
    assert repo.token not in out

    draft = client.json("create", "record", json.dumps(METADATA), "--set", "rec")
    rid = draft["id"]
    assert draft["metadata"]["title"] == METADATA["title"] and draft["is_published"] is False

    client.json("upload", "file", "@rec", "small.txt", '{"description": "small"}')
    client.json("upload", "file", "@rec", "big.bin")
    puts = _paths(repo, "PUT")
    assert f"/api/particles/{rid}/draft/files/small.txt/content" in puts
    big_parts = [p for p in puts if p.startswith(f"/api/particles/{rid}/draft/files/big.bin/content/")]
    assert len(big_parts) >= 2, f"the big file did not go multipart: {puts}"
    assert f"/api/particles/{rid}/draft/files/big.bin/content" not in puts

    # The multipart md5 is computed by a background task (as on NRP): poll the listing.
    deadline = time.monotonic() + 30
    while True:
        listed = {f["key"]: f for f in client.json("list", "files", "@rec")}
        if listed.get("big.bin", {}).get("checksum", "").startswith("md5:") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(listed) == {"small.txt", "big.bin"}
    assert listed["small.txt"]["checksum"] == f"md5:{small_md5}" and listed["small.txt"]["size"] == 3000
    assert listed["big.bin"]["checksum"] == f"md5:{big_md5}" and listed["big.bin"]["size"] == big_size
    assert all(f["status"] == "completed" for f in listed.values())

    published = client.json("publish", "record", "@rec", "--set", "pub")
    assert published["id"] == rid and published["is_published"] is True
    posts = _paths(repo, "POST")
    assert f"/api/particles/{rid}/draft/requests/publish_draft" in posts
    assert not any(p.endswith("/draft/actions/publish") for p in posts), "published around the request flow"
    state = repo.state()
    assert [r["type"] for r in state["requests"] if r["status"] == "accepted"] == ["publish_draft"]
    (entity,) = [e for e in state["entities"] if e["id"] == rid]
    assert entity["published"] and set(entity["record_files"]) == {"small.txt", "big.bin"}

    client.json("version", "record", "@pub")
    assert f"/api/particles/{rid}/requests/new_version" in _paths(repo, "POST")
    state = repo.state()
    drafts = [e for e in state["entities"] if e["parent"] == entity["parent"] and not e["published"]]
    assert len(drafts) == 1 and drafts[0]["version_index"] == 2 and drafts[0]["has_draft"]

    mine = client.json("list", "records")
    assert {h["id"] for h in mine["hits"]["hits"]} == {drafts[0]["id"]}  # latest version per parent
    found = client.json("search", "records", "conformance", "--published")
    assert [h["id"] for h in found["hits"]["hits"]] == [rid]
    assert client.json("search", "records", "no-such-words-anywhere", "--published")["hits"]["total"] == 0
