"""Contract tests of the sandbox repository (docs/repositories-api.md), odd corners included."""

from __future__ import annotations

import asyncio
import hashlib
import io
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


async def client_for(repo: RepositoryHandle, token: str | None = None) -> aiohttp.ClientSession:
    headers = {"Authorization": f"Bearer {token or repo.token}"}
    return aiohttp.ClientSession(headers=headers)


# --- metadata validation: lenient on create, strict on publish -----------------------------
async def test_invalid_metadata_is_accepted_with_errors_but_publish_fails(api: Api) -> None:
    body = minimal_draft(title="ab", publication_date="May 2024", bogus=1)
    body["metadata"]["creators"] = [{"person_or_org": {"type": "personal", "given_name": "Jo"}}]
    draft = await api.ok("POST", "/api/records", body, expect=201)
    fields = {e["field"] for e in draft["errors"]}
    assert fields == {
        "metadata.title",
        "metadata.publication_date",
        "metadata.bogus",
        "metadata.creators.0.person_or_org.family_name",
    }
    assert "title" not in draft["metadata"]  # invalid values are not stored
    await api.upload(draft, "a.txt", b"abc")
    status, body, _ = await api.call("POST", draft["links"]["publish"])
    assert status == 400 and body["status"] == 400
    assert {"metadata.title", "metadata.creators.0.person_or_org.family_name"} <= {e["field"] for e in body["errors"]}
    # fixing the draft with a full PUT makes it publishable
    fixed = await api.ok("PUT", draft["links"]["self"], minimal_draft())
    assert "errors" not in fixed
    await api.ok("POST", draft["links"]["publish"], expect=202)


async def test_publish_needs_completed_files(api: Api) -> None:
    draft = await api.ok("POST", "/api/records", minimal_draft(), expect=201)
    status, body, _ = await api.call("POST", draft["links"]["publish"])
    assert status == 400 and [e["field"] for e in body["errors"]] == ["files.enabled"]
    await api.ok("POST", draft["links"]["files"], [{"key": "pending.bin"}], expect=201)
    status, body, _ = await api.call("POST", draft["links"]["publish"])
    assert status == 400 and [e["field"] for e in body["errors"]] == ["files"]
    # metadata-only records publish without files
    meta_only = await api.ok("POST", "/api/records", {**minimal_draft(), "files": {"enabled": False}}, expect=201)
    status, _, _ = await api.call("POST", meta_only["links"]["files"], [{"key": "x"}])
    assert status == 403  # files disabled
    await api.ok("POST", meta_only["links"]["publish"], expect=202)


# --- files ---------------------------------------------------------------------------
async def test_content_must_be_octet_stream(api: Api) -> None:
    draft = await api.ok("POST", "/api/records", minimal_draft(), expect=201)
    files = await api.ok("POST", draft["links"]["files"], [{"key": "data.json"}], expect=201)
    content = files["entries"][0]["links"]["content"]
    status, body, _ = await api.call("PUT", content, data=b"{}", headers={"Content-Type": "application/json"})
    assert status == 415 and body["status"] == 415
    status, _, _ = await api.call("PUT", content, data=b"{}", headers=OCTET)
    assert status == 200


async def test_duplicate_key_unknown_field_and_file_count_limit(api: Api) -> None:
    draft = await api.ok("POST", "/api/records", minimal_draft(), expect=201)
    await api.ok("POST", draft["links"]["files"], [{"key": "a"}], expect=201)
    status, body, _ = await api.call("POST", draft["links"]["files"], [{"key": "a"}])
    assert status == 400 and body["message"] == "File with key a already exists."
    status, body, _ = await api.call("POST", draft["links"]["files"], [{"key": "b", "md5": "x"}])
    assert status == 400 and body["errors"][0]["field"] == "0.md5"
    status, _, _ = await api.call("POST", draft["links"]["files"], [{"key": f"f{i}"} for i in range(100)])
    assert status == 400  # 1 + 100 > 100 files per record
    await api.ok("POST", draft["links"]["files"], [{"key": f"f{i}"} for i in range(99)], expect=201)
    status, body, _ = await api.call("POST", draft["links"]["files"], [{"key": "one-too-many"}])
    assert status == 400 and "max amount" in body["message"]
    listing = await api.ok("GET", draft["links"]["files"])
    assert len(listing["entries"]) == 100


async def test_size_limits(repository_factory: Any) -> None:
    repo = repository_factory(max_file_size=1000, max_record_size=1500)
    async with await client_for(repo) as session:
        api = Api(session, repo.url)
        draft = await api.ok("POST", "/api/records", minimal_draft(), expect=201)
        status, _, _ = await api.call("POST", draft["links"]["files"], [{"key": "big", "size": 1001}])
        assert status == 400
        await api.upload(draft, "a", b"x" * 1000)
        files = await api.ok("POST", draft["links"]["files"], [{"key": "b"}], expect=201)
        entry = next(e for e in files["entries"] if e["key"] == "b")
        status, body, _ = await api.call("PUT", entry["links"]["content"], data=b"y" * 600, headers=OCTET)
        assert status == 400, body  # 1000 + 600 > 1500 per record


async def test_failed_transfer_is_200_with_errors_and_entry_deleted(api: Api, repository: RepositoryHandle) -> None:
    draft = await api.ok("POST", "/api/records", minimal_draft(), expect=201)
    # a body shorter than the size announced at init
    files = await api.ok("POST", draft["links"]["files"], [{"key": "short", "size": 10}], expect=201)
    status, body, _ = await api.call("PUT", files["entries"][0]["links"]["content"], data=b"12345", headers=OCTET)
    assert status == 200 and body["errors"] == "File upload transfer failed."
    assert (await api.ok("GET", draft["links"]["files"]))["entries"] == []
    # the fault knob
    repository.configure(transfer_fail_next=1)
    files = await api.ok("POST", draft["links"]["files"], [{"key": "k"}], expect=201)
    status, body, _ = await api.call("PUT", files["entries"][0]["links"]["content"], data=b"abc", headers=OCTET)
    assert status == 200 and body["errors"] == "File upload transfer failed."
    assert (await api.ok("GET", draft["links"]["files"]))["entries"] == []
    committed = await api.upload(draft, "k", b"abc")  # the next attempt works
    assert committed["status"] == "completed"


async def test_dropped_connection_mid_upload(api: Api, repository: RepositoryHandle) -> None:
    draft = await api.ok("POST", "/api/records", minimal_draft(), expect=201)
    files = await api.ok("POST", draft["links"]["files"], [{"key": "big.bin"}], expect=201)
    repository.configure(drop_next=1)
    # aiohttp itself retries an idempotent PUT once after a disconnect: then the entry is gone (404)
    try:
        body = io.BytesIO(b"z" * (4 << 20))
        status, _, _ = await api.call("PUT", files["entries"][0]["links"]["content"], data=body, headers=OCTET)
        assert status == 404
    except aiohttp.ClientError:
        pass
    assert (await api.ok("GET", draft["links"]["files"]))["entries"] == []
    rows = repository.requests_log()
    assert any(r.get("dropped") for r in rows)


async def test_corrupt_upload_reports_a_different_md5(api: Api, repository: RepositoryHandle) -> None:
    draft = await api.ok("POST", "/api/records", minimal_draft(), expect=201)
    repository.configure(corrupt_next=1)
    committed = await api.upload(draft, "c.bin", b"payload")
    assert committed["checksum"] != "md5:" + hashlib.md5(b"payload").hexdigest()


async def test_multipart_parts_in_any_order_then_checksum_appears(repository_factory: Any) -> None:
    repo = repository_factory(checksum_delay_ms=300)
    part_size = 64 * 1024
    data = bytes(range(256)) * (part_size * 3 // 256) + b"tail"
    async with await client_for(repo) as session:
        api = Api(session, repo.url)
        draft = await api.ok("POST", "/api/records", minimal_draft(), expect=201)
        init = [
            {"key": "big/file.root", "size": len(data), "transfer": {"type": "M", "parts": 4, "part_size": part_size}}
        ]
        files = await api.ok("POST", draft["links"]["files"], init, expect=201)
        entry = files["entries"][0]
        assert entry["links"]["content"] is None and [p["part"] for p in entry["links"]["parts"]] == [1, 2, 3, 4]
        urls = {p["part"]: p["url"] for p in entry["links"]["parts"]}
        # wrong size for a middle part
        status, _, _ = await api.call("PUT", urls[2], data=b"x" * 10, headers=OCTET)
        assert status == 400
        # a single PUT of the whole content is refused for M transfers
        status, _, _ = await api.call("PUT", entry["links"]["self"] + "/content", data=data, headers=OCTET)
        assert status == 400

        async def put(n: int) -> None:
            chunk = data[(n - 1) * part_size : n * part_size]
            await api.ok("PUT", urls[n], data=chunk, headers=OCTET)

        await asyncio.gather(*(put(n) for n in (4, 2, 3, 1)))
        committed = await api.ok("POST", entry["links"]["commit"])
        assert committed["status"] == "completed" and committed["size"] == len(data)
        assert committed["checksum"].startswith("multipart:")
        want = "md5:" + hashlib.md5(data).hexdigest()
        for _ in range(100):
            entry = await api.ok("GET", entry["links"]["self"])
            if entry["checksum"] == want:
                break
            await asyncio.sleep(0.05)
        assert entry["checksum"] == want
        async with session.get(entry["links"]["content"]) as resp:
            assert await resp.read() == data


async def test_multipart_checksum_missing_mode(repository_factory: Any) -> None:
    repo = repository_factory(multipart_checksum="missing", checksum_delay_ms=10_000, max_single_put=5)
    async with await client_for(repo) as session:
        api = Api(session, repo.url)
        draft = await api.ok("POST", "/api/records", minimal_draft(), expect=201)
        single = (await api.ok("POST", draft["links"]["files"], [{"key": "l"}], expect=201))["entries"][0]
        status, _, _ = await api.call("PUT", single["links"]["content"], data=b"123456", headers=OCTET)
        assert status == 400  # over the single-PUT cap (NRP: ~50 MB): use M transfers
        init = [{"key": "m", "size": 5, "transfer": {"type": "M", "parts": 1, "part_size": 5}}]
        entries = (await api.ok("POST", draft["links"]["files"], init, expect=201))["entries"]
        entry = next(e for e in entries if e["key"] == "m")  # the list holds every file of the draft
        await api.ok("PUT", entry["links"]["parts"][0]["url"], data=b"12345", headers=OCTET)
        committed = await api.ok("POST", entry["links"]["commit"])
        assert committed["status"] == "completed" and "checksum" not in committed


async def test_delete_file_and_url_encoded_keys(api: Api) -> None:
    draft = await api.ok("POST", "/api/records", minimal_draft(), expect=201)
    await api.upload(draft, "dir/sub/x.txt", b"1")
    base = draft["links"]["files"]
    raw = await api.ok("GET", base + "/dir/sub/x.txt")
    encoded = await api.ok("GET", base + "/dir%2Fsub%2Fx.txt")
    assert raw["key"] == encoded["key"] == "dir/sub/x.txt"
    await api.ok("DELETE", encoded["links"]["self"], expect=204)
    assert (await api.ok("GET", base))["entries"] == []


# --- records: revisions, edits, versions ------------------------------------------------------
async def test_if_match_revision_gives_412(api: Api) -> None:
    status, draft, headers = await api.call("POST", "/api/records", minimal_draft())
    assert status == 201 and headers["ETag"] == f'"{draft["revision_id"]}"'
    stale = {"If-Match": f'"{draft["revision_id"]}"'}
    await api.ok("PUT", draft["links"]["self"], minimal_draft(title="Second"), headers=stale)
    status, body, _ = await api.call("PUT", draft["links"]["self"], minimal_draft(title="Third"), headers=stale)
    assert status == 412 and body["status"] == 412


async def test_edit_published_locks_files_and_new_version_imports_them(api: Api) -> None:
    draft = await api.ok("POST", "/api/records", minimal_draft(), expect=201)
    await api.upload(draft, "v1.txt", b"one")
    record = await api.ok("POST", draft["links"]["publish"], expect=202)
    edit = await api.ok("POST", record["links"]["draft"], expect=201)
    assert edit["id"] == record["id"] and edit["is_published"] and edit["is_draft"]
    status, _, _ = await api.call("POST", edit["links"]["files"], [{"key": "new.txt"}])
    assert status == 403  # files of a published record are locked
    await api.ok("DELETE", edit["links"]["self"], expect=204)  # discard the edit; record stays
    await api.ok("GET", record["links"]["self"])
    v2 = await api.ok("POST", record["links"]["versions"], expect=201)
    assert v2["id"] != record["id"] and v2["parent"]["id"] == record["parent"]["id"]
    assert v2["versions"]["index"] == 2 and "publication_date" not in v2["metadata"]
    again = await api.ok("POST", record["links"]["versions"], expect=201)
    assert again["id"] == v2["id"]  # one next-version draft at a time
    imported = await api.ok("POST", v2["links"]["self"] + "/actions/files-import", expect=201)
    assert [e["key"] for e in imported["entries"]] == ["v1.txt"]
    await api.ok("PUT", v2["links"]["self"], minimal_draft(title="Version two"))
    await api.upload(v2, "v2.txt", b"two")
    published = await api.ok("POST", v2["links"]["publish"], expect=202)
    versions = await api.ok("GET", record["links"]["versions"])
    assert [h["id"] for h in versions["hits"]["hits"]] == [published["id"], record["id"]]
    latest = await api.ok("GET", record["links"]["latest"])
    assert latest["id"] == published["id"] and latest["versions"]["is_latest"]
    old = await api.ok("GET", record["links"]["self"])
    assert not old["versions"]["is_latest"]
    # the old version's files are still there (blobs are shared, not moved)
    files = await api.ok("GET", old["links"]["files"])
    async with api.session.get(files["entries"][0]["links"]["content"]) as resp:
        assert await resp.read() == b"one"


# --- auth and rate limits --------------------------------------------------------------
async def test_auth_missing_and_wrong_token(repository: RepositoryHandle) -> None:
    async with aiohttp.ClientSession() as session:
        api = Api(session, repository.url)
        status, body, headers = await api.call("POST", "/api/records", minimal_draft())
        assert status == 403 and body["status"] == 403 and "X-RateLimit-Limit" in headers
        status, _, _ = await api.call("POST", "/api/records", minimal_draft(), headers={"Authorization": "Bearer no"})
        assert status == 401
        status, _, _ = await api.call("GET", "/api/user/records")
        assert status == 403


async def test_other_users_drafts_are_forbidden(repository_factory: Any) -> None:
    repo = repository_factory(tokens=["alice-token", "bob-token"])
    async with await client_for(repo, "alice-token") as alice, await client_for(repo, "bob-token") as bob:
        draft = await Api(alice, repo.url).ok("POST", "/api/records", minimal_draft(), expect=201)
        status, _, _ = await Api(bob, repo.url).call("GET", draft["links"]["self"])
        assert status == 403
        hits = await Api(bob, repo.url).ok("GET", "/api/user/records")
        assert hits["hits"]["total"] == 0


async def test_rate_limit_headers_and_429(repository_factory: Any) -> None:
    repo = repository_factory(rate_per_minute=5, rate_per_hour=1000)
    async with await client_for(repo) as session:
        api = Api(session, repo.url)
        remaining = []
        for _ in range(5):
            status, _, headers = await api.call("GET", "/api/user/records")
            assert status == 200 and headers["X-RateLimit-Limit"] == "5"
            remaining.append(int(headers["X-RateLimit-Remaining"]))
            assert int(headers["X-RateLimit-Reset"]) > 1_600_000_000  # epoch seconds
        assert remaining == [4, 3, 2, 1, 0]
        status, body, headers = await api.call("GET", "/api/user/records")
        assert status == 429 and body["status"] == 429
        assert 1 <= int(headers["Retry-After"]) <= 60 and headers["X-RateLimit-Remaining"] == "0"


async def test_forced_429_burst_and_seeded_errors(repository: RepositoryHandle, api: Api) -> None:
    repository.configure(force_429=2, retry_after=3)
    statuses = []
    for _ in range(3):
        status, _, headers = await api.call("GET", "/api/user/records")
        statuses.append(status)
        if status == 429:
            assert headers["Retry-After"] == "3"
    assert statuses == [429, 429, 200]
    repository.configure(error_rate=0.5, seed=7, error_match="^GET /api/user")
    codes = [(await api.call("GET", "/api/user/records"))[0] for _ in range(20)]
    assert set(codes) <= {200, 500, 503} and 0 < codes.count(200) < 20
    assert (await api.call("POST", "/api/records", minimal_draft()))[0] == 201  # not matched
    repository.configure(error_rate=0.0, error_after_rate=1.0, error_match="^POST /api/records$")
    status, _, _ = await api.call("POST", "/api/records", minimal_draft(recid=4242))
    assert status in (502, 504)
    assert repository.state()["by_recid"]["4242"]["drafts"] == 1  # it took effect anyway


# --- search ------------------------------------------------------------------------------
async def test_search_exact_match_full_text_and_paging(api: Api) -> None:
    await api.ok("POST", "/api/records", minimal_draft(81009, title="DELPHI 1999 data"), expect=201)
    await api.ok("POST", "/api/records", minimal_draft(810090, title="Other collision data"), expect=201)

    async def ids(q: str, **params: str) -> list[str]:
        body = await api.ok("GET", "/api/user/records", params={"q": q, **params})
        return [h["metadata"]["title"] for h in body["hits"]["hits"]]

    assert await ids('metadata.identifiers.identifier:"cernopendata:81009"') == ["DELPHI 1999 data"]
    assert await ids("metadata.identifiers.identifier:cernopendata\\:810090") == ["Other collision data"]
    assert await ids("delphi") == ["DELPHI 1999 data"]
    assert sorted(await ids("data")) == ["DELPHI 1999 data", "Other collision data"]
    assert await ids('data AND metadata.identifiers.identifier:"cernopendata:810090"') == ["Other collision data"]
    assert await ids("metadata.resource_type.id:dataset", is_published="true") == []
    assert len(await ids("", is_published="false")) == 2
    page = await api.ok("GET", "/api/user/records", params={"size": "1", "page": "1"})
    assert page["hits"]["total"] == 2 and len(page["hits"]["hits"]) == 1 and "next" in page["links"]
    hit = page["hits"]["hits"][0]
    assert (await api.ok("GET", hit["links"]["self"]))["id"] == hit["id"]  # links can be followed
    status, _, _ = await api.call("GET", "/api/user/records", params={"size": "100", "page": "101"})
    assert status == 400


async def test_index_delay_hides_new_drafts_for_a_while(repository_factory: Any) -> None:
    repo = repository_factory(index_delay_ms=400)
    async with await client_for(repo) as session:
        api = Api(session, repo.url)
        await api.ok("POST", "/api/records", minimal_draft(777), expect=201)
        q = {"q": 'metadata.identifiers.identifier:"cernopendata:777"'}
        assert (await api.ok("GET", "/api/user/records", params=q))["hits"]["total"] == 0
        await asyncio.sleep(0.5)
        assert (await api.ok("GET", "/api/user/records", params=q))["hits"]["total"] == 1
        assert repo.state()["by_recid"]["777"]["drafts"] == 1  # the admin view is immediate


# --- NRP flavour -----------------------------------------------------------------------------
def particles_draft(recid: int) -> dict[str, Any]:
    body = minimal_draft(experiment="DELPHI", number_of_events=10)
    body["metadata"]["recid"] = recid
    body["parent"] = {"communities": {"default": "delphi"}}
    return body


async def test_nrp_discovery_and_model_create(api: Api) -> None:
    info = await api.ok("GET", "/.well-known/repository")
    assert "M" in info["transfers"] and info["default_model"] == "particles" and info["invenio_version"]
    models = await api.ok("GET", info["links"]["models"])
    model = next(m for m in models if m["type"] == "particles")
    draft = await api.ok("POST", model["links"]["records"], particles_draft(81009), expect=201)
    assert draft["links"]["self"].startswith(api.url + "/api/particles/")
    assert draft["metadata"]["recid"] == 81009 and "errors" not in draft
    assert draft["parent"]["communities"]["default"] == "delphi"
    assert "applicable-requests" in draft["links"]
    status, _, _ = await api.call("GET", f"/api/records/{draft['id']}/draft")
    assert status == 404  # a particles record lives under its model's URL only
    hits = await api.ok("GET", model["links"]["drafts"], params={"q": "metadata.recid:81009"})
    assert [h["id"] for h in hits["hits"]["hits"]] == [draft["id"]]
    await api.upload(draft, "f.txt", b"f")
    record = await api.ok("POST", draft["links"]["publish"], expect=202)  # "direct" workflow default
    assert record["links"]["self"] == api.url + f"/api/particles/{draft['id']}"


async def test_request_workflow_auto_accept(repository_factory: Any) -> None:
    repo = repository_factory(publish_workflow="auto", communities=["delphi", "cms"])
    async with await client_for(repo) as session:
        api = Api(session, repo.url)
        unknown = {**particles_draft(1), "parent": {"communities": {"default": "atlas"}}}
        status, body, _ = await api.call("POST", "/api/particles", unknown)
        assert status == 400 and body["errors"][0]["field"] == "parent.communities.default"
        draft = await api.ok("POST", "/api/particles", particles_draft(1), expect=201)
        assert "publish" not in draft["links"]
        status, _, _ = await api.call("POST", draft["links"]["self"] + "/actions/publish")
        assert status == 403
        await api.upload(draft, "f.txt", b"f")
        applicable = await api.ok("GET", draft["links"]["applicable-requests"])
        (rtype,) = [t for t in applicable["hits"]["hits"] if t["type_id"] == "publish_draft"]
        req = await api.ok("POST", rtype["links"]["actions"]["create"], {"payload": {}}, expect=201)
        assert req["status"] == "created"
        req = await api.ok("POST", req["links"]["actions"]["submit"])
        assert req["status"] == "accepted" and req["is_closed"]
        record = await api.ok("GET", req["payload"]["published_record:links:self"])
        assert record["is_published"] and record["id"] == draft["id"]


async def test_request_workflow_curator(repository_factory: Any) -> None:
    repo = repository_factory(publish_workflow="curator", tokens=["owner", "curator"])
    async with await client_for(repo, "owner") as owner, await client_for(repo, "curator") as curator:
        api = Api(owner, repo.url)
        draft = await api.ok("POST", "/api/particles", particles_draft(2), expect=201)
        applicable = await api.ok("GET", draft["links"]["applicable-requests"])
        create = applicable["hits"]["hits"][0]["links"]["actions"]["create"]
        req = await api.ok("POST", create, {"payload": {}}, expect=201)
        status, body, _ = await api.call("POST", req["links"]["actions"]["submit"])
        assert status == 400 and body["errors"][0]["field"] == "files.enabled"  # validated on submit
        await api.upload(draft, "f.txt", b"f")
        req = await api.ok("POST", req["links"]["actions"]["submit"])
        assert req["status"] == "submitted" and "accept" in req["links"]["actions"]
        assert (await api.call("GET", draft["links"]["record"]))[0] == 404
        req = await Api(curator, repo.url).ok("POST", req["links"]["actions"]["accept"])
        assert req["status"] == "accepted"
        assert (await api.ok("GET", draft["links"]["record"]))["is_published"]


# --- process-level behaviour ---------------------------------------------------------------
async def test_restart_keeps_state_and_request_log(repository: RepositoryHandle, api: Api) -> None:
    draft = await api.ok("POST", "/api/records", minimal_draft(99), expect=201)
    await api.upload(draft, "keep.bin", b"k" * 5000)
    pending = await api.ok("POST", "/api/records", minimal_draft(100), expect=201)
    record = await api.ok("POST", draft["links"]["publish"], expect=202)
    repository.restart()
    async with await client_for(repository) as session:
        again = Api(session, repository.url)
        assert (await again.ok("GET", record["links"]["self"]))["files"]["count"] == 1
        assert (await again.ok("GET", pending["links"]["self"]))["id"] == pending["id"]
        files = await again.ok("GET", record["links"]["files"])
        async with session.get(files["entries"][0]["links"]["content"]) as resp:
            assert await resp.read() == b"k" * 5000
    state = repository.state()
    assert state["by_recid"]["99"] == {"drafts": 0, "records": 1, "ids": [record["id"]]}
    assert state["by_recid"]["100"]["drafts"] == 1
    rows = repository.requests_log()
    put = next(r for r in rows if r["method"] == "PUT")
    assert put["request_bytes"] == 5000 and put["status"] == 200
    assert {"ts", "path", "duration", "in_flight", "bytes_in_flight"} <= set(put)


async def test_admin_rejects_unknown_knobs(repository: RepositoryHandle) -> None:
    with pytest.raises(Exception, match="400"):
        repository.configure(no_such_knob=1)
