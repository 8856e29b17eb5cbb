"""The Zenodo stand-in answers as Zenodo's legacy deposit API and records API do (real HTTP)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
import requests

from tests.fixtures_zenodo import ZenodoHandle

META = {
    "upload_type": "dataset",
    "title": "DELPHI 1992 raw data",
    "description": "<p>Events</p>",
    "creators": [{"name": "Doe, Jane", "affiliation": "CERN"}],
    "publication_date": "2024-05-01",
    "keywords": ["cernopendata:80509", "DELPHI"],
}


class Client:
    def __init__(self, zen: ZenodoHandle, token: str | None = None) -> None:
        self.zen = zen
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token or zen.token}"

    def call(self, method: str, url: str, status: int, **kwargs: Any) -> Any:
        if not url.startswith("http"):
            url = self.zen.api + url
        resp = self.session.request(method, url, timeout=10, allow_redirects=False, **kwargs)
        assert resp.status_code == status, (method, url, resp.status_code, resp.text)
        return (
            resp.json()
            if resp.content and resp.headers.get("Content-Type", "").startswith("application/json")
            else resp
        )

    def deposition(self, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.call("POST", "/deposit/depositions", 201, json={"metadata": metadata} if metadata else {})

    def upload(self, dep: dict[str, Any], key: str, data: bytes) -> dict[str, Any]:
        return self.call("PUT", f"{dep['links']['bucket']}/{key}", 201, data=data)

    def published(self, files: dict[str, bytes]) -> dict[str, Any]:
        dep = self.deposition(META)
        for key, data in files.items():
            self.upload(dep, key, data)
        return self.call("POST", dep["links"]["publish"], 202)


def test_tokens_403_without_401_wrong_and_records_are_public(zenodo: ZenodoHandle) -> None:
    anon = requests.get(zenodo.api + "/deposit/depositions", timeout=10)
    assert anon.status_code == 403 and anon.json()["status"] == 403 and anon.json()["message"]
    wrong = requests.get(zenodo.api + "/deposit/depositions", params={"access_token": "nope"}, timeout=10)
    assert wrong.status_code == 401
    ok = requests.get(zenodo.api + "/deposit/depositions", params={"access_token": zenodo.token}, timeout=10)
    assert ok.status_code == 200 and ok.json() == []
    record = Client(zenodo).published({"a.txt": b"hello"})
    public = requests.get(f"{zenodo.api}/records/{record['id']}", timeout=10)
    assert public.status_code == 200 and [f["key"] for f in public.json()["files"]] == ["a.txt"]


def test_draft_upload_replace_publish_and_read_back(zenodo: ZenodoHandle) -> None:
    c = Client(zenodo)
    dep = c.deposition()
    assert dep["state"] == "unsubmitted" and dep["submitted"] is False and isinstance(dep["conceptrecid"], str)
    first = c.upload(dep, "data.bin", b"x" * 1000)
    assert first["checksum"] == "md5:" + hashlib.md5(b"x" * 1000).hexdigest() and first["size"] == 1000
    second = c.upload(dep, "data.bin", b"y" * 10)  # same key: replaced, not added
    listing = c.call("GET", dep["links"]["files"], 200)
    assert [(f["filename"], f["filesize"], f["checksum"]) for f in listing] == [
        ("data.bin", 10, hashlib.md5(b"y" * 10).hexdigest())  # bare hex in listings
    ]
    assert second["checksum"].startswith("md5:")

    refused = c.call("POST", dep["links"]["publish"], 400)
    fields = {e["field"] for e in refused["errors"]}
    assert {"metadata.title", "metadata.upload_type", "metadata.creators"} <= fields
    assert {"metadata.description", "metadata.publication_date"} <= fields

    c.call("PUT", dep["links"]["self"], 200, json={"metadata": META})
    done = c.call("POST", dep["links"]["publish"], 202)
    assert done["state"] == "done" and done["submitted"] is True and "bucket" not in done["links"]
    c.call("PUT", f"{dep['links']['bucket']}/late.txt", 403, data=b"late")

    record = c.call("GET", f"/records/{dep['id']}", 200)
    (entry,) = record["files"]
    assert entry["checksum"] == "md5:" + hashlib.md5(b"y" * 10).hexdigest() and entry["size"] == 10
    body = requests.get(entry["links"]["self"], timeout=10)
    assert body.content == b"y" * 10
    part = requests.get(entry["links"]["self"], headers={"Range": "bytes=4-"}, timeout=10)
    assert part.status_code == 206 and part.content == b"y" * 6


def test_malformed_metadata_is_refused_naming_the_field(zenodo: ZenodoHandle) -> None:
    c = Client(zenodo)
    bad = c.call("POST", "/deposit/depositions", 400, json={"metadata": {**META, "upload_type": "movie"}})
    assert bad["status"] == 400 and [e["field"] for e in bad["errors"]] == ["metadata.upload_type"]
    bad = c.call("POST", "/deposit/depositions", 400, json={"metadata": {"creators": [{"affiliation": "x"}]}})
    assert [e["field"] for e in bad["errors"]] == ["metadata.creators.0.name"]


def test_newversion_latest_draft_and_the_second_call_400(zenodo: ZenodoHandle) -> None:
    c = Client(zenodo)
    v1 = c.published({"a.txt": b"one", "b.txt": b"two"})
    answer = c.call("POST", v1["links"]["newversion"], 201)
    assert answer["id"] == v1["id"]  # the ORIGINAL deposition
    draft_url = answer["links"]["latest_draft"]
    draft = c.call("GET", draft_url, 200)
    assert draft["id"] != v1["id"] and draft["conceptrecid"] == v1["conceptrecid"]
    assert sorted(f["filename"] for f in draft["files"]) == ["a.txt", "b.txt"]  # imported

    again = c.call("POST", v1["links"]["newversion"], 400)
    assert again["message"] == "Please remove all files first."
    assert c.call("GET", v1["links"]["self"], 200)["links"]["latest_draft"] == draft_url
    for f in draft["files"]:
        c.call("DELETE", f["links"]["self"], 204)
    third = c.call("POST", v1["links"]["newversion"], 201)
    assert third["links"]["latest_draft"] == draft_url  # the same open draft, not a second one
    assert zenodo.summary()["depositions"] == 2

    c.upload(draft, "c.txt", b"three")
    c.call("PUT", draft_url, 200, json={"metadata": {**META, "version": "2"}})
    c.call("POST", draft["links"]["publish"], 202)
    concept = requests.get(f"{zenodo.api}/records/{v1['conceptrecid']}", timeout=10, allow_redirects=False)
    assert concept.status_code == 302 and concept.headers["Location"].endswith(f"/api/records/{draft['id']}")
    latest = requests.get(f"{zenodo.api}/records/{v1['id']}/versions/latest", timeout=10)
    assert latest.json()["id"] == draft["id"] and latest.json()["metadata"]["version"] == "2"
    hits = requests.get(f"{zenodo.api}/records", params={"q": f"conceptrecid:{v1['conceptrecid']}"}, timeout=10)
    assert [h["id"] for h in hits.json()["hits"]["hits"]] == [draft["id"]]


def test_newversion_can_answer_with_the_new_draft(zenodo_factory: Any) -> None:
    zen = zenodo_factory(newversion_answer="draft")
    c = Client(zen)
    v1 = c.published({"a.txt": b"one"})
    answer = c.call("POST", v1["links"]["newversion"], 201)
    assert answer["id"] != v1["id"] and answer["links"]["latest_draft"].endswith(f"/{answer['id']}")


def test_file_count_and_quota_limits(zenodo_factory: Any) -> None:
    zen = zenodo_factory(max_files=2, max_bytes=100)
    c = Client(zen)
    dep = c.deposition()
    c.upload(dep, "a", b"1")
    c.upload(dep, "b", b"2")
    refused = c.call("PUT", f"{dep['links']['bucket']}/c", 400, data=b"3")
    assert "at most 2 files" in refused["message"] and "has 2" in refused["message"]
    c.upload(dep, "b", b"2 again")  # replacing keeps the count
    over = c.call("PUT", f"{dep['links']['bucket']}/a", 413, data=b"z" * 101)
    assert "100" in over["message"]
    assert {f["filename"]: f["filesize"] for f in c.call("GET", dep["links"]["files"], 200)} == {"a": 1, "b": 7}


def test_rate_limit_headers_and_429(zenodo_factory: Any) -> None:
    zen = zenodo_factory(rate_per_minute=3)
    c = Client(zen)
    for _ in range(3):
        resp = c.call("GET", "/deposit/depositions", 200)
        assert resp == []
    limited = c.session.get(zen.api + "/deposit/depositions", timeout=10)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["X-RateLimit-Limit"] == "3" and limited.headers["X-RateLimit-Remaining"] == "0"
    assert int(limited.headers["X-RateLimit-Reset"]) > time.time() - 1
    zen.configure(rate_per_minute=100, force_429=1)
    assert c.session.get(zen.api + "/deposit/depositions", timeout=10).status_code == 429
    assert c.session.get(zen.api + "/deposit/depositions", timeout=10).status_code == 200


def test_search_drafts_by_source_id_and_the_index_lag(zenodo: ZenodoHandle) -> None:
    c = Client(zenodo)
    mine = c.deposition(META)
    c.deposition({**META, "keywords": ["cernopendata:80510"]})
    for q in (
        'keywords:"cernopendata:80509"',
        '"cernopendata:80509"',
        'metadata.subjects.subject:"cernopendata:80509"',
    ):
        hits = c.call("GET", "/deposit/depositions", 200, params={"q": q})
        assert [h["id"] for h in hits] == [mine["id"]], q
    assert len(c.call("GET", "/deposit/depositions", 200, params={"status": "draft"})) == 2
    assert c.call("GET", "/deposit/depositions", 200, params={"status": "published"}) == []

    zenodo.configure(index_delay_ms=400)
    late = c.deposition({**META, "keywords": ["cernopendata:99"]})
    lagged = {"q": 'keywords:"cernopendata:99"'}
    assert c.call("GET", "/deposit/depositions", 200, params=lagged) == []  # not indexed yet
    deadline = time.monotonic() + 10
    while not (found := c.call("GET", "/deposit/depositions", 200, params=lagged)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [h["id"] for h in found] == [late["id"]]


def test_request_log_counts_writes_only(zenodo: ZenodoHandle) -> None:
    c = Client(zenodo)
    dep = c.deposition()
    c.call("GET", dep["links"]["self"], 200)
    c.call("GET", "/deposit/depositions", 200)
    c.upload(dep, "x", b"1")
    assert [(w["method"], w["status"]) for w in zenodo.writes()] == [("POST", 201), ("PUT", 201)]
    assert len(zenodo.requests()) == 4


def test_deleted_restricted_and_embargoed_records(zenodo: ZenodoHandle) -> None:
    c = Client(zenodo)
    gone = c.published({"a.txt": b"a"})
    zenodo.delete_record(gone["id"])
    resp = requests.get(f"{zenodo.api}/records/{gone['id']}", timeout=10)
    assert resp.status_code == 410 and resp.json()["message"] == "The record has been deleted."

    dep = c.deposition({**META, "access_right": "restricted", "access_conditions": "ask"})
    c.upload(dep, "secret.txt", b"s")
    c.call("POST", dep["links"]["publish"], 202)
    anon = requests.get(f"{zenodo.api}/records/{dep['id']}", timeout=10).json()
    assert anon["metadata"]["access_right"] == "restricted" and anon["files"] == []
    owner = c.call("GET", f"/records/{dep['id']}", 200)
    url = owner["files"][0]["links"]["self"]
    assert requests.get(url, timeout=10).status_code == 403
    assert c.session.get(url, timeout=10).content == b"s"

    emb = c.deposition({**META, "access_right": "embargoed", "embargo_date": "2999-01-01"})
    c.upload(emb, "later.txt", b"l")
    c.call("POST", emb["links"]["publish"], 202)
    assert requests.get(f"{zenodo.api}/records/{emb['id']}", timeout=10).json()["files"] == []


@pytest.mark.parametrize("raw", ["999999999", "abc"])
def test_unknown_records_are_404(zenodo: ZenodoHandle, raw: str) -> None:
    resp = requests.get(f"{zenodo.api}/records/{raw}", timeout=10)
    assert resp.status_code == 404 and resp.json()["status"] == 404


async def test_sandbox_config_names_the_zenodo_source_and_target(tmp_path: Any) -> None:
    import tomllib

    from ferry.core.config import config_from_mapping
    from sandbox.stack import ZENODO_TARGET, Sandbox, zenodo_toml
    from sandbox.zenodo import start_zenodo

    sb = Sandbox(tmp_path, zenodo_options={"rate_per_minute": 600})
    sb.workdir = tmp_path
    sb.zenodo = await start_zenodo(tmp_path / "zenodo", tokens=["t"], rate_per_minute=600)
    try:
        config = config_from_mapping(tomllib.loads("\n".join(zenodo_toml(sb))))
        assert config.source_section("zenodo")["url"] == sb.zenodo.url
        target = config.target(ZENODO_TARGET)
        assert (target.type, target.url, target.requests_per_minute) == ("zenodo", sb.zenodo.url, 600)
        assert target.token_file == str(tmp_path / "zenodo.token")
    finally:
        await sb.zenodo.stop()


def test_edit_discard_and_delete(zenodo: ZenodoHandle) -> None:
    c = Client(zenodo)
    rec = c.published({"a.txt": b"a"})
    opened = c.call("POST", rec["links"]["edit"], 201)
    assert opened["state"] == "inprogress" and "bucket" not in opened["links"]  # files stay locked
    c.call("PUT", rec["links"]["self"], 200, json={"metadata": {**META, "title": "Changed title"}})
    assert c.call("GET", rec["links"]["self"], 200)["title"] == "Changed title"
    c.call("POST", rec["links"]["discard"], 204)
    back = c.call("GET", rec["links"]["self"], 200)
    assert back["state"] == "done" and back["title"] == META["title"]
    c.call("PUT", rec["links"]["self"], 400, json={"metadata": META})  # published, not in edit
    c.call("DELETE", rec["links"]["self"], 403)
    draft = c.deposition(META)
    c.call("DELETE", draft["links"]["self"], 204)
    c.call("GET", draft["links"]["self"], 404)
