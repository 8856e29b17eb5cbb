"""Contract tests of the sandbox repository (docs/repositories-api.md), odd corners included."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fixtures_repository import RepositoryHandle

OCTET = {"Content-Type": "application/octet-stream"}


def minimal_draft(recid: int | None = None, **metadata: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access": {"record": "public", "files": "public"},
        "files": {"enabled": True},
        "metadata": {
            "resource_type": {"id": "dataset"},
            "title": "My data",
            "publication_date": "2024-05-01",
            "publisher": "X",
            "creators": [{"person_or_org": {"type": "organizational", "name": "DELPHI collaboration"}}],
            **metadata,
        },
    }
    if recid is not None:
        body["metadata"]["identifiers"] = [{"identifier": f"cernopendata:{recid}", "scheme": "other"}]
    return body


class Api:
    """A thin test client: JSON in/out, status checked by the caller."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    def _abs(self, path: str) -> str:
        return path if path.startswith("http") else self.url + path

    async def call(self, method: str, path: str, json: Any = None, **kw: Any) -> tuple[int, Any, Any]:
        async with self.session.request(method, self._abs(path), json=json, **kw) as resp:
            raw = await resp.read()
            body = None
            if raw and resp.content_type == "application/json":
                body = await resp.json()
            return resp.status, body, resp.headers

    async def ok(self, method: str, path: str, json: Any = None, expect: int = 200, **kw: Any) -> Any:
        status, body, _ = await self.call(method, path, json, **kw)
        assert status == expect, (method, path, status, body)
        return body

    async def upload(self, draft: dict[str, Any], key: str, data: bytes) -> dict[str, Any]:
        files = await self.ok("POST", draft["links"]["files"], [{"key": key, "size": len(data)}], expect=201)
        entry = next(e for e in files["entries"] if e["key"] == key)
        await self.ok("PUT", entry["links"]["content"], data=data, headers=OCTET)
        committed: dict[str, Any] = await self.ok("POST", entry["links"]["commit"])
        return committed


@pytest.fixture
async def api(repository: RepositoryHandle) -> AsyncIterator[Api]:
    headers = {"Authorization": f"Bearer {repository.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield Api(session, repository.url)


async def test_create_upload_commit_publish_and_verify(api: Api) -> None:
    draft = await api.ok("POST", "/api/records", minimal_draft(81009), expect=201)
    assert draft["is_draft"] and not draft["is_published"] and "errors" not in draft
    assert set(draft["links"]) >= {"self", "self_html", "files", "publish", "versions"}
    data = b"DELPHI" * 1000
    committed = await api.upload(draft, "sub/dir/run.dat", data)
    assert committed["status"] == "completed"
    assert committed["checksum"] == "md5:" + hashlib.md5(data).hexdigest()
    assert committed["size"] == len(data)
    record = await api.ok("POST", draft["links"]["publish"], expect=202)
    assert record["is_published"] and record["id"] == draft["id"]
    files = await api.ok("GET", record["links"]["files"])
    (entry,) = files["entries"]
    assert entry["key"] == "sub/dir/run.dat" and entry["checksum"] == committed["checksum"]
    async with api.session.get(entry["links"]["content"]) as resp:
        assert hashlib.md5(await resp.read()).hexdigest() == hashlib.md5(data).hexdigest()
