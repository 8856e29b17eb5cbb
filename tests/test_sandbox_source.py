"""The sandbox source side against real servers: xrootd, the portal stand-in, generated data."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from XRootD import client as xrd_client
from XRootD.client.flags import QueryCode

from ferry.core.checksums import Checksum, hash_file
from ferry.core.model import uri_path
from sandbox.cases import BIG_SIZE, CASES
from sandbox.datagen import DataGenerator, DataGenError, Scale, mirror_records
from sandbox.portal import start_portal
from sandbox.xrootd import XRootDError, XRootDServer
from tests.conftest import load_fixture_records
from tests.fixtures_xrootd import PortalFactory, SandboxSource


def _xrdfs(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["xrdfs", url, *args], capture_output=True, text=True, timeout=60, check=False)


@functools.cache
def _fs(url: str) -> Any:
    return xrd_client.FileSystem(url)


def _server_adler32(src: SandboxSource, uri: str) -> Checksum:
    """What the server itself says (``xrdfs query checksum``, through the Python client)."""
    status, answer = _fs(src.xrootd_url).query(QueryCode.CHECKSUM, uri_path(uri))
    assert status.ok, status.message
    algorithm, value = answer.decode().strip("\x00 \n").split()
    return Checksum.parse(f"{algorithm}:{value}")


async def _get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


# --- xrootd ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["plain", "unpadded", "alder32", "collide", "many", "big", "empty"])
def test_xrootd_checksum_matches_record(sandbox_source: SandboxSource, case: str) -> None:
    for f in sandbox_source.record(case)["files"]:
        declared = Checksum.parse(f["checksum"])
        assert _server_adler32(sandbox_source, f["uri"]) == declared
        local = sandbox_source.root / uri_path(f["uri"]).lstrip("/")
        assert local.stat().st_size == f["size"]


def test_xrootd_serves_the_bytes(sandbox_source: SandboxSource, tmp_path: Path) -> None:
    f = sandbox_source.record("big")["files"][0]
    assert f["size"] == BIG_SIZE
    out = subprocess.run(
        ["xrdcp", "-s", "--cksum", "adler32:source", f["uri"], str(tmp_path / "big.dat")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    got = hash_file(str(tmp_path / "big.dat"), ("adler32",))
    assert got.size == f["size"]
    assert got.checksums()["adler32"] == Checksum.parse(f["checksum"])


def test_delphi_records_are_served(sandbox_source: SandboxSource) -> None:
    rec = sandbox_source.record("80509")
    assert [uri_path(f["uri"]).rsplit("/", 1)[1] for f in rec["files"]][:2] == ["DBcalb.dat", "DBgeom.dat"]
    assert all(f["uri"].startswith(sandbox_source.xrootd_url + "//eos/opendata/delphi/") for f in rec["files"])
    assert _server_adler32(sandbox_source, rec["files"][3]["uri"]) == Checksum.parse(rec["files"][3]["checksum"])
    # Everything but files is kept as the portal publishes it.
    assert rec["title"] == "DELPHI conditions databases"
    assert rec["distribution"]["size"] == 3205865472


def test_case_records_have_their_quirks(sandbox_source: SandboxSource) -> None:
    src = sandbox_source
    assert src.cases == CASES
    unpadded = src.record("unpadded")["files"][0]["checksum"]
    assert unpadded.startswith("adler32:") and len(unpadded.split(":")[1]) <= 6
    for f in src.record("sha1")["files"]:
        assert f["checksum"].startswith("sha1:")
        data = (src.root / uri_path(f["uri"]).lstrip("/")).read_bytes()
        assert f["checksum"] == "sha1:" + hashlib.sha1(data).hexdigest()
    assert src.record("alder32")["files"][0]["checksum"].startswith("alder32:")
    assert "files" not in src.record("nofiles") and src.record("nofiles")["relations"]
    assert len(src.record("many")["files"]) == 40
    names = [uri_path(f["uri"]) for f in src.record("collide")["files"]]
    assert names[0].rsplit("/", 1)[1] == names[1].rsplit("/", 1)[1]
    assert "/../" in src.record("escape")["files"][1]["uri"]
    assert not Path("/etc/passwd").resolve().is_relative_to(src.root)


def test_bad_checksum_and_missing_file(sandbox_source: SandboxSource) -> None:
    files = sandbox_source.record("bad_checksum")["files"]
    actual = [_server_adler32(sandbox_source, f["uri"]) for f in files]
    declared = [Checksum.parse(f["checksum"]) for f in files]
    assert [a == d for a, d in zip(actual, declared, strict=True)] == [True, False, True]
    missing = sandbox_source.record("missing_file")["files"]
    assert _xrdfs(sandbox_source.xrootd_url, "stat", uri_path(missing[0]["uri"])).returncode == 0
    gone = _xrdfs(sandbox_source.xrootd_url, "stat", uri_path(missing[1]["uri"]))
    assert gone.returncode != 0 and "no such file" in (gone.stderr + gone.stdout).lower()


def test_xrootd_is_read_only(sandbox_source: SandboxSource, tmp_path: Path) -> None:
    src = tmp_path / "upload.txt"
    src.write_text("hello")
    out = subprocess.run(
        ["xrdcp", "-s", str(src), f"{sandbox_source.xrootd_url}//eos/opendata/sandbox/upload.txt"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    assert not (sandbox_source.root / "eos/opendata/sandbox/upload.txt").exists()


def test_xrootd_stop_leaves_no_process(served_dir: Path) -> None:
    root = served_dir
    with XRootDServer(root) as xrd:
        pid = xrd.pid
        assert pid is not None and xrd.running()
    assert not xrd.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_xrootd_start_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(XRootDError, match="not a directory"):
        XRootDServer(tmp_path / "absent").start()
    with pytest.raises(XRootDError, match="not found: install the Debian package"):
        XRootDServer(tmp_path, binary="xrootd-does-not-exist").start()
    if os.geteuid() == 0:
        hidden = tmp_path / "hidden"
        (hidden / "data").mkdir(parents=True)
        hidden.chmod(0o700)
        with pytest.raises(XRootDError, match="cannot enter"):
            XRootDServer(hidden / "data").start()


# --- data generator ----------------------------------------------------------------------


def test_datagen_is_deterministic_and_streams_distinct_chunks(tmp_path: Path) -> None:
    a, b = DataGenerator(tmp_path / "a"), DataGenerator(tmp_path / "b")
    path = "/eos/opendata/x/y.dat"
    ga, gb = a.write(path, 3 * 1024 * 1024 + 5), b.write(path, 3 * 1024 * 1024 + 5)
    assert ga.digests == gb.digests
    data = (tmp_path / "a" / "eos/opendata/x/y.dat").read_bytes()
    assert f"{zlib.adler32(data):08x}" == ga.adler32
    assert data[: 1024 * 1024] != data[1024 * 1024 : 2 * 1024 * 1024]
    assert DataGenerator(tmp_path / "c", seed=2).write(path, 1000).adler32 != a.write(path, 1000).adler32
    with pytest.raises(DataGenError):
        a.write("/eos/opendata/../../etc/x", 10)
    with pytest.raises(DataGenError):
        mirror_records([{"recid": "1", "files": [{"uri": "root://h//etc/passwd", "size": 1}]}], a, base_url="root://x")


def test_scale_clamps() -> None:
    s = Scale(factor=0.01, minimum=100, maximum=1000)
    assert (s.apply(0), s.apply(50_000), s.apply(10**9)) == (100, 500, 1000)


# --- portal API --------------------------------------------------------------------------


async def test_record_api_shape(sandbox_source: SandboxSource) -> None:
    status, body = await _get_json(f"{sandbox_source.portal_url}/api/records/{CASES['plain']}")
    assert status == 200
    assert set(body) == {"id", "created", "updated", "links", "metadata"}
    assert body["id"] == int(CASES["plain"])
    files = body["metadata"]["files"]
    assert [f["key"] for f in files] == ["plain_0.dat", "plain_1.dat", "plain_2.dat"]
    assert all(f["bucket"] and f["version_id"] for f in files)
    assert files[0]["uri"] == sandbox_source.record("plain")["files"][0]["uri"]
    assert "_file_indices" not in body["metadata"]


async def test_record_api_expands_index_files(sandbox_source: SandboxSource) -> None:
    status, body = await _get_json(f"{sandbox_source.portal_url}/api/records/{CASES['index']}")
    assert status == 200
    meta = body["metadata"]
    assert meta["files"] == []  # both index files left files[]
    (index,) = meta["_file_indices"]
    assert index["key"] == "SANDBOX_index_case_file_index.json"
    assert index["number_files"] == 5 == len(index["files"])
    assert index["size"] == sum(f["size"] for f in index["files"]) == meta["distribution"]["size"]
    for f in index["files"]:
        assert f["availability"] == "online" and f["key"] == f["filename"]
        assert _server_adler32(sandbox_source, f["uri"]) == Checksum.parse(f["checksum"])
    # The index itself, as the portal serves it.
    url = f"{sandbox_source.portal_url}/record/{CASES['index']}/file_index/{index['key']}"
    status, entries = await _get_json(url)
    assert status == 200 and [e["uri"] for e in entries] == [f["uri"] for f in index["files"]]
    async with aiohttp.ClientSession() as session, session.get(url, params={"format": "txt"}) as resp:
        assert (await resp.text()).split() == [f["uri"] for f in index["files"]]


async def test_record_without_files_and_unknown_recid(sandbox_source: SandboxSource) -> None:
    status, body = await _get_json(f"{sandbox_source.portal_url}/api/records/{CASES['nofiles']}")
    assert status == 200 and "files" not in body["metadata"]
    status, body = await _get_json(f"{sandbox_source.portal_url}/api/records/424242")
    assert status == 404
    assert body["status"] == 404 and "424242" in body["message"]
    async with aiohttp.ClientSession() as session, session.get(f"{sandbox_source.portal_url}/record/424242") as r:
        assert r.status == 404


async def test_search_paging_and_cap(sandbox_source: SandboxSource) -> None:
    base = f"{sandbox_source.portal_url}/api/records"
    status, body = await _get_json(f"{base}?q=experiment:SANDBOX&size=5&page=1")
    assert status == 200 and body["hits"]["total"] == len(CASES)
    assert len(body["hits"]["hits"]) == 5 and "next" in body["links"]
    seen = []
    for page in (1, 2, 3):
        _, body = await _get_json(f"{base}?q=experiment:SANDBOX&size=5&page={page}")
        seen += [h["metadata"]["recid"] for h in body["hits"]["hits"]]
    assert sorted(seen) == sorted(CASES.values())
    assert "next" not in body["links"]
    _, body = await _get_json(f"{base}?q=experiment:DELPHI AND date_created:2000")
    assert [h["id"] for h in body["hits"]["hits"]] == [80509]
    _, body = await _get_json(f"{base}?q=conditions experiment:DELPHI")
    assert body["hits"]["total"] == 1
    _, body = await _get_json(f"{base}?q=type.secondary:Condition")
    assert body["hits"]["total"] == 1
    status, body = await _get_json(f"{base}?q=&size=100&page=101")
    assert status == 400 and "10000" in body["message"]
    status, _ = await _get_json(f"{base}?q=&size=100&page=100")
    assert status == 200
    status, _ = await _get_json(f"{base}?size=abc")
    assert status == 400


async def test_http_mirror_range_requests(sandbox_source: SandboxSource) -> None:
    f = sandbox_source.record("big")["files"][0]
    url = sandbox_source.portal_url + uri_path(f["uri"])
    local = (sandbox_source.root / uri_path(f["uri"]).lstrip("/")).read_bytes()
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Range": "bytes=1000-1999"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 1000-1999/{f['size']}"
            assert resp.headers["Content-Length"] == "1000"
            assert await resp.read() == local[1000:2000]
        async with session.get(url, headers={"Range": f"bytes={f['size'] - 10}-"}) as resp:
            assert resp.status == 206 and await resp.read() == local[-10:]
        async with session.get(url) as resp:
            assert resp.status == 200 and int(resp.headers["Content-Length"]) == f["size"]
            digest = 1
            async for chunk in resp.content.iter_chunked(1 << 20):
                digest = zlib.adler32(chunk, digest)
            assert Checksum("adler32", f"{digest:08x}") == Checksum.parse(f["checksum"])
        gone = sandbox_source.record("missing_file")["files"][1]
        async with session.get(sandbox_source.portal_url + uri_path(gone["uri"])) as resp:
            assert resp.status == 404
        async with session.get(sandbox_source.portal_url + "/eos/opendata/%2e%2e/%2e%2e/etc/passwd") as resp:
            assert resp.status in (403, 404)


async def test_fail_next_knob(portal_factory: PortalFactory) -> None:
    portal = await portal_factory()
    portal.fail_next(2, 503, prefix="/api/", retry_after=1)
    url = f"{portal.url}/api/records/{CASES['plain']}"
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.get(url) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        async with session.get(url) as resp:
            assert resp.status == 200
    assert portal.requests.count(f"/api/records/{CASES['plain']}") == 3


# --- every DELPHI fixture record -----------------------------------------------------------


async def test_every_delphi_fixture_record_is_generated_and_served(served_dir: Path) -> None:
    records = load_fixture_records()
    root = served_dir
    async with XRootDServer(root) as xrd:
        gen = DataGenerator(root)
        tiny = Scale(factor=0, minimum=16, maximum=16)
        mirrored = mirror_records(records, gen, base_url=xrd.url, scale=tiny, max_files_per_record=2)
        assert [r["recid"] for r in mirrored] == [r["recid"] for r in records]
        fs = xrd_client.FileSystem(xrd.url)
        for rec in mirrored:
            for f in rec.get("files", []):
                status, info = fs.stat(uri_path(f["uri"]))
                assert status.ok, (rec["recid"], f["uri"], status.message)
                assert info.size == f["size"] == 16
        portal = await start_portal(mirrored, data_root=root)
        try:
            async with aiohttp.ClientSession() as session:
                for rec in mirrored:
                    async with session.get(f"{portal.url}/api/records/{rec['recid']}") as resp:
                        assert resp.status == 200, rec["recid"]
                        meta = (await resp.json())["metadata"]
                    assert len(meta.get("files", [])) == len(rec.get("files", []))
                    for f in meta.get("files", []):
                        Checksum.parse(f["checksum"])
        finally:
            await portal.stop()


# --- ferry sandbox ---------------------------------------------------------------------------


def _ferry(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ferry.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def test_ferry_sandbox_runs_until_signal_and_stops_children(tmp_path: Path, served_dir: Path) -> None:
    ready = tmp_path / "ready.json"
    workdir = served_dir / "work"
    proc = _ferry(
        "sandbox", "--workdir", str(workdir), "--recids", "80509,81045", "--scale", "0.0001", "--ready-file", str(ready)
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), "ferry sandbox did not get ready (its stderr follows the test)"
        info = json.loads(ready.read_text())
        assert info["recids"] == ["80509", "81045"]
        records = json.loads(Path(info["records_file"]).read_text())
        f = records[0]["files"][0]
        assert f["uri"].startswith(info["xrootd_url"] + "//eos/opendata/delphi/")
        status, answer = _fs(info["xrootd_url"]).query(QueryCode.CHECKSUM, uri_path(f["uri"]))
        assert status.ok and answer.decode().split()[1].strip("\x00") == f["checksum"].split(":")[1]
        run_dir = workdir / "xrootd"
        xrootd_pid = int(next(run_dir.rglob("xrootd.pid")).read_text().split()[0])
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert info["portal_url"] in out and "[source.cernopendata]" in out
    assert not ready.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(xrootd_pid, 0)


def test_ferry_sandbox_unknown_recid_is_a_usage_error(tmp_path: Path) -> None:
    proc = _ferry("sandbox", "--workdir", str(tmp_path / "w"), "--recids", "123456789")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "123456789" in err and "Traceback" not in err
