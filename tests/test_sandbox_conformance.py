"""The sandbox repository against its contract, in one place.

Each check is a fact from docs/repositories-api.md (InvenioRDM / NRP) or a shape an
official client needs (nrp-cmd's attrs models, inveniordm-py's flows; the clients
themselves run in tests/test_official_clients_*.py). When the sandbox drifts from
either, a test here fails and names the fact.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sandbox.repository_options import NRP_SINGLE_PUT, RepositoryOptions
from tests.fixtures_repository import RepositoryHandle
from tests.test_repository import Api, minimal_draft

OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
async def api(https_repository: RepositoryHandle) -> AsyncIterator[Api]:
    # Over HTTPS, verified against the sandbox CA only.
    assert https_repository.ca_file is not None
    context = ssl.create_default_context(cafile=str(https_repository.ca_file))
    headers = {"Authorization": f"Bearer {https_repository.token}"}
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield Api(session, https_repository.url)


async def _published(api: Api, model: str = "particles") -> dict[str, Any]:
    draft = await api.ok("POST", f"/api/{model}", minimal_draft(), expect=201)
    await api.upload(draft, "a.txt", b"abc")
    if model == "records":
        return await api.ok("POST", draft["links"]["publish"], expect=202)
    # The request flow, as nrp-cmd and ferry drive it.
    types = await api.ok("GET", draft["links"]["applicable-requests"])
    create = types["hits"]["hits"][0]["links"]["actions"]["create"]
    req = await api.ok("POST", create, {"payload": {}}, expect=201)
    await api.ok("POST", req["links"]["actions"]["submit"], {})
    return await api.ok("GET", draft["links"]["record"])


# --- InvenioRDM table (repositories-api.md) --------------------------------------------------
async def test_invenio_status_codes(api: Api) -> None:
    status, draft, headers = await api.call("POST", "/api/records", minimal_draft())
    assert status == 201 and headers["ETag"] == f'"{draft["revision_id"]}"'
    assert (await api.call("GET", draft["links"]["self"]))[0] == 200
    assert (await api.call("PUT", draft["links"]["self"], minimal_draft(title="Other title")))[0] == 200
    init = await api.call("POST", draft["links"]["files"], [{"key": "k/with/slash.txt"}])
    assert init[0] == 201 and init[1]["entries"][0]["status"] == "pending"
    entry = init[1]["entries"][0]
    assert set(entry["links"]) >= {"self", "content", "commit"} and entry["transfer"]["type"] == "L"
    assert (await api.call("PUT", entry["links"]["content"], data=b"x", headers=OCTET))[0] == 200
    status, done, _ = await api.call("POST", entry["links"]["commit"])
    assert status == 200 and done["status"] == "completed" and done["checksum"].startswith("md5:")
    status, record, _ = await api.call("POST", draft["links"]["publish"])
    assert status == 202 and record["is_published"]
    assert (await api.call("POST", record["links"]["draft"]))[0] == 201  # edit a published record
    assert (await api.call("DELETE", record["links"]["draft"]))[0] == 204
    status, new, _ = await api.call("POST", record["links"]["versions"])
    assert status == 201 and new["versions"]["index"] == 2
    assert (await api.call("POST", new["links"]["self"] + "/actions/files-import"))[0] == 201
    for link in (record["links"]["self"], record["links"]["versions"], record["links"]["latest"]):
        assert (await api.call("GET", link))[0] == 200
    status, page, _ = await api.call("GET", "/api/user/records?q=&size=5&page=1")
    assert status == 200 and {"hits", "links"} <= set(page) and "total" in page["hits"]


async def test_invenio_surprises(api: Api) -> None:
    # Invalid metadata is stored (201 + errors); only publish fails, 400 naming the field.
    status, bad, _ = await api.call("POST", "/api/records", minimal_draft(title=""))
    assert status == 201 and bad["errors"]
    await api.upload(bad, "f.txt", b"1")
    status, body, _ = await api.call("POST", bad["links"]["publish"])
    assert status == 400 and any(e["field"].startswith("metadata.title") for e in body["errors"])
    # Publish without files -> 400 files.enabled; duplicate key -> 400.
    empty = await api.ok("POST", "/api/records", minimal_draft(), expect=201)
    status, body, _ = await api.call("POST", empty["links"]["publish"])
    assert status == 400 and [e["field"] for e in body["errors"]] == ["files.enabled"]
    await api.ok("POST", empty["links"]["files"], [{"key": "d"}], expect=201)
    status, body, _ = await api.call("POST", empty["links"]["files"], [{"key": "d"}])
    assert status == 400 and "already exists" in body["message"]
    # Stale If-Match -> 412; every answer has the rate-limit headers.
    status, _, headers = await api.call("PUT", empty["links"]["self"], minimal_draft(), headers={"If-Match": '"999"'})
    assert status == 412
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(headers)


async def test_new_version_draft_can_be_edited(api: Api) -> None:
    # inveniordm-py: POST .../draft on a never-published (new version) draft returns it, 201.
    record = await _published(api, "records")
    new = await api.ok("POST", record["links"]["versions"], expect=201)
    status, again, _ = await api.call("POST", new["links"]["record"] + "/draft")
    assert status == 201 and again["id"] == new["id"] and again["is_published"] is False


# --- NRP (oarepo) and nrp-cmd's models ------------------------------------------------------
async def test_nrp_discovery(api: Api) -> None:
    info = await api.ok("GET", "/.well-known/repository")
    # nrp-cmd's RepositoryInfo requires these (schema included); the doc lists the rest.
    for key in ("schema", "name", "description", "version", "invenio_version", "links"):
        assert key in info, key
    assert {"L", "M"} <= set(info["transfers"]) and info["default_model"] == "particles"
    assert {"self", "api", "models", "requests"} <= set(info["links"])
    models = await api.ok("GET", info["links"]["models"])
    for model in models:
        for key in ("type", "name", "schema", "description", "version", "features", "links"):
            assert key in model, key
        assert {"records", "api", "published", "user_records", "drafts"} <= set(model["links"])


def _check_request(req: dict[str, Any]) -> None:
    """nrp-cmd's Request model: these fields, each reference a one-key dict."""
    for key in ("id", "created", "updated", "type", "status", "is_closed", "is_open", "is_expired", "links"):
        assert key in req, key
    for ref in ("created_by", "receiver", "topic"):
        assert isinstance(req[ref], dict) and len(req[ref]) == 1, (ref, req[ref])
    assert {"self", "actions", "comments", "timeline"} <= set(req["links"])


async def test_nrp_publish_request_flow_and_expand(api: Api) -> None:
    draft = await api.ok("POST", "/api/particles", minimal_draft(), expect=201)
    await api.upload(draft, "a.txt", b"abc")
    expanded = (await api.ok("GET", draft["links"]["self"] + "?expand=1"))["expanded"]
    assert expanded["requests"] == [] and [t["type_id"] for t in expanded["request_types"]] == ["publish_draft"]
    types = await api.ok("GET", draft["links"]["applicable-requests"])
    assert "self" in types["links"]  # nrp-cmd reads a list without links.self as broken
    (offered,) = types["hits"]["hits"]
    req = await api.ok("POST", offered["links"]["actions"]["create"], {"payload": {}}, expect=201)
    _check_request(req)
    assert req["status"] == "created" and "submit" in req["links"]["actions"]
    open_requests = (await api.ok("GET", draft["links"]["self"] + "?expand=1"))["expanded"]["requests"]
    assert [(r["id"], r["type"]) for r in open_requests] == [(req["id"], "publish_draft")]
    done = await api.ok("POST", req["links"]["actions"]["submit"], {})
    _check_request(done)
    assert done["status"] == "accepted" and done["payload"]["published_record:links:self"].endswith(draft["id"])
    assert (await api.ok("GET", draft["links"]["record"]))["is_published"]


async def test_nrp_published_record_offers_new_version(api: Api) -> None:
    record = await _published(api)
    types = await api.ok("GET", record["links"]["applicable-requests"])
    (offered,) = [t for t in types["hits"]["hits"] if t["type_id"] == "new_version"]
    req = await api.ok("POST", offered["links"]["actions"]["create"], {"payload": {}}, expect=201)
    done = await api.ok("POST", req["links"]["actions"]["submit"], {})
    _check_request(done)
    assert done["status"] == "accepted"
    new_draft = await api.ok("GET", done["payload"]["draft_record:links:self"])
    assert new_draft["versions"]["index"] == 2 and not new_draft["is_published"]
    # While that version is open, no second one is offered.
    again = await api.ok("GET", record["links"]["applicable-requests"])
    assert [t["type_id"] for t in again["hits"]["hits"]] == []


async def test_nrp_single_put_cap_and_multipart(api: Api, https_repository: RepositoryHandle) -> None:
    # On by default in NRP mode (50 MiB, see repository_options), L PUTs only; scaled down here.
    assert RepositoryOptions().single_put_cap() == NRP_SINGLE_PUT
    https_repository.configure(max_single_put=2048)
    draft = await api.ok("POST", "/api/particles", minimal_draft(), expect=201)
    (entry,) = (await api.ok("POST", draft["links"]["files"], [{"key": "big"}], expect=201))["entries"]
    status, _, _ = await api.call("PUT", entry["links"]["content"], data=b"x" * 2049, headers=OCTET)
    assert status == 400
    size = 3 * 1024
    init = [{"key": "m", "size": size, "transfer": {"type": "M", "parts": 3, "part_size": 1024}}]
    entries = (await api.ok("POST", draft["links"]["files"], init, expect=201))["entries"]
    multipart = next(e for e in entries if e["key"] == "m")
    assert multipart["links"]["content"] is None and [p["part"] for p in multipart["links"]["parts"]] == [1, 2, 3]
    for part in multipart["links"]["parts"]:
        await api.ok("PUT", part["url"], data=b"p" * 1024, headers=OCTET)
    assert (await api.ok("POST", multipart["links"]["commit"]))["status"] == "completed"
