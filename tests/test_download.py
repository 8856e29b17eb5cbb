"""`ferry download` end to end against the sandbox: a real xrootd and the portal stand-in.

Every test downloads into its own tmp_path; the servers are shared (session fixture).
The CLI runs in-process through ``ferry.cli.main`` so exit codes and messages are real.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from download.manifest import load_manifest
from ferry.cli import main
from stats.events import read_jsonl
from tests.fixtures_xrootd import PortalFactory, SandboxSource

FAST_RETRIES = "[limits]\nretries = 2\nbackoff_base = 0.01\nbackoff_max = 0.05\n"


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "ferry.toml"
    cfg.write_text(FAST_RETRIES)
    return cfg


def ferry(tmp_path: Path, *args: str) -> int:
    return main(["download", "--config", str(_config(tmp_path)), *args])


def api(src: SandboxSource, tmp_path: Path, *args: str) -> int:
    return ferry(tmp_path, "--portal", src.portal_url, "--dest", str(tmp_path / "data"), *args)


def from_file(src: SandboxSource, tmp_path: Path, *args: str) -> int:
    return ferry(tmp_path, "--records", str(src.records_file), "--dest", str(tmp_path / "data"), *args)


def adler(path: Path) -> str:
    return f"{zlib.adler32(path.read_bytes()):08x}"


def local(src: SandboxSource, uri: str) -> Path:
    """The served file behind a root:// URI of the sandbox."""
    path = uri.split("//", 2)[2].lstrip("/")
    return src.root / path


def data_files(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in entry.get("files", []) if f.get("type") not in ("index.json", "index.txt")]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with (size, mtime_ns): proves what was (not) rewritten."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("protocol", ["root", "https"])
def test_fresh_download_is_verified(
    sandbox_source: SandboxSource, tmp_path: Path, protocol: str, capsys: pytest.CaptureFixture[str]
) -> None:
    recid = sandbox_source.cases["plain"]
    stats = tmp_path / "stats"
    code = api(sandbox_source, tmp_path, recid, "--protocol", protocol, "--stats-dir", str(stats))
    assert code == 0, capsys.readouterr().err
    record_dir = tmp_path / "data" / recid
    manifest = load_manifest(record_dir)
    files = data_files(sandbox_source.record("plain"))
    assert len(manifest.entries) == len(files)
    for f in files:
        name = f["uri"].rsplit("/", 1)[1]
        got = record_dir / name
        served = local(sandbox_source, f["uri"])
        assert got.read_bytes() == served.read_bytes()
        entry = manifest.entries[name]
        assert entry.size == f["size"] == got.stat().st_size
        assert entry.checksums["adler32"] == f["checksum"].split(":")[1] == adler(got)
        assert entry.checksums["md5"] == hashlib.md5(got.read_bytes()).hexdigest()
        assert entry.mtime_ns == got.stat().st_mtime_ns
        assert not (record_dir / (name + ".part")).exists()
    # The source record is kept for uploads.
    saved = json.loads((record_dir / ".ferry" / "record.json").read_text())
    assert str(saved["recid"]) == recid
    rows = [r for p in stats.glob("*.jsonl") for r in read_jsonl(p)]
    done = [r for r in rows if r["stage"] == "download" and r["file"] and r["status"] == "ok"]
    assert sorted(r["file"] for r in done) == sorted(f["uri"].rsplit("/", 1)[1] for f in files)
    assert all(r["transfer"] == protocol for r in done)
    assert any(r["stage"] == "resolve" and r["status"] == "ok" for r in rows)
    assert list(stats.glob("*.csv")), "the CSV export is written at the end"


def test_no_md5_still_verifies_the_source_checksum(sandbox_source: SandboxSource, tmp_path: Path) -> None:
    """--no-md5: files verified against adler32 and in the manifest without md5 (a source
    mismatch under --no-md5: test_source_checksum_mismatch_fails_that_file_only)."""
    recid = sandbox_source.cases["plain"]
    assert from_file(sandbox_source, tmp_path, "--no-md5", recid) == 0
    record_dir = tmp_path / "data" / recid
    manifest = load_manifest(record_dir)
    files = data_files(sandbox_source.record("plain"))
    assert len(manifest.entries) == len(files)
    for f in files:
        name = f["uri"].rsplit("/", 1)[1]
        got = record_dir / name
        assert got.read_bytes() == local(sandbox_source, f["uri"]).read_bytes()
        assert manifest.entries[name].checksums == {"adler32": f["checksum"].split(":")[1]}


def test_rerun_moves_nothing_and_rewrites_nothing(
    sandbox_source: SandboxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recid = sandbox_source.cases["many"]
    assert api(sandbox_source, tmp_path, recid) == 0
    record_dir = tmp_path / "data" / recid
    before = snapshot(record_dir)
    capsys.readouterr()
    stats = tmp_path / "stats"
    assert api(sandbox_source, tmp_path, recid, "--stats-dir", str(stats)) == 0
    assert "0 B moved" in capsys.readouterr().out
    assert snapshot(record_dir) == before  # manifest, record.json, data: same size and mtime
    rows = [r for p in stats.glob("*.jsonl") for r in read_jsonl(p)]
    files = [r for r in rows if r["stage"] == "download" and r["file"] and r["status"] != "started"]
    assert len(files) == 40
    assert {r["status"] for r in files} == {"skipped"} and sum(r["bytes"] for r in files) == 0
    # --verify-existing re-hashes but still moves and rewrites nothing.
    assert api(sandbox_source, tmp_path, recid, "--verify-existing") == 0
    assert snapshot(record_dir) == before


def test_truncated_file_is_fetched_again(sandbox_source: SandboxSource, tmp_path: Path) -> None:
    recid = sandbox_source.cases["big"]
    assert api(sandbox_source, tmp_path, recid) == 0
    (entry,) = data_files(sandbox_source.record("big"))
    got = tmp_path / "data" / recid / "big.dat"
    with open(got, "r+b") as fh:
        fh.truncate(entry["size"] // 3)
    assert api(sandbox_source, tmp_path, recid) == 0
    assert got.stat().st_size == entry["size"]
    assert got.read_bytes() == local(sandbox_source, entry["uri"]).read_bytes()
    assert load_manifest(got.parent).fresh_entry("big.dat") is not None


def test_corrupt_file_with_same_size_is_found_only_when_asked(sandbox_source: SandboxSource, tmp_path: Path) -> None:
    recid = sandbox_source.cases["plain"]
    assert api(sandbox_source, tmp_path, recid) == 0
    got = tmp_path / "data" / recid / "plain_0.dat"
    st = got.stat()
    with open(got, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff\x00\xff")
    os.utime(got, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: the manifest vouches
    assert api(sandbox_source, tmp_path, recid) == 0
    assert got.read_bytes()[100:103] == b"\xff\x00\xff"  # trusted, as documented
    assert api(sandbox_source, tmp_path, recid, "--verify-existing") == 0
    served = local(
        sandbox_source,
        next(f["uri"] for f in data_files(sandbox_source.record("plain")) if f["uri"].endswith("plain_0.dat")),
    )
    assert got.read_bytes() == served.read_bytes()


@pytest.mark.parametrize("protocol", ["root", "https"])
def test_partial_download_resumes_from_the_part_file(
    sandbox_source: SandboxSource, tmp_path: Path, protocol: str
) -> None:
    recid = sandbox_source.cases["big"]
    (entry,) = data_files(sandbox_source.record("big"))
    served = local(sandbox_source, entry["uri"]).read_bytes()
    record_dir = tmp_path / "data" / recid
    record_dir.mkdir(parents=True)
    keep = 5 * 1024 * 1024 + 7
    (record_dir / "big.dat.part").write_bytes(served[:keep])
    stats = tmp_path / "stats"
    assert api(sandbox_source, tmp_path, recid, "--stats-dir", str(stats), "--protocol", protocol) == 0
    assert (record_dir / "big.dat").read_bytes() == served
    row = next(
        r for p in stats.glob("*.jsonl") for r in read_jsonl(p) if r["file"] == "big.dat" and r["status"] == "ok"
    )
    assert row["bytes"] == len(served) - keep and row["reason"] == "resumed"


@pytest.mark.parametrize("protocol", ["root", "https"])
def test_corrupt_part_prefix_is_detected_and_repaired(
    sandbox_source: SandboxSource, tmp_path: Path, protocol: str
) -> None:
    recid = sandbox_source.cases["big"]
    (entry,) = data_files(sandbox_source.record("big"))
    served = local(sandbox_source, entry["uri"]).read_bytes()
    record_dir = tmp_path / "data" / recid
    record_dir.mkdir(parents=True)
    bad = bytearray(served[: 3 * 1024 * 1024])
    bad[12345] ^= 0xFF
    (record_dir / "big.dat.part").write_bytes(bytes(bad))
    stats = tmp_path / "stats"
    assert api(sandbox_source, tmp_path, recid, "--stats-dir", str(stats), "--protocol", protocol) == 0
    assert (record_dir / "big.dat").read_bytes() == served
    assert not (record_dir / "big.dat.part").exists()
    row = next(
        r for p in stats.glob("*.jsonl") for r in read_jsonl(p) if r["file"] == "big.dat" and r["status"] == "ok"
    )
    assert row["reason"] == "refetched"


@pytest.mark.parametrize("flags", [[], ["--no-md5"]])
def test_source_checksum_mismatch_fails_that_file_only(
    sandbox_source: SandboxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    recid = sandbox_source.cases["bad_checksum"]
    stats = tmp_path / "stats"
    code = api(sandbox_source, tmp_path, recid, "--stats-dir", str(stats), *flags)
    err = capsys.readouterr().err
    assert code == 1
    record = sandbox_source.record("bad_checksum")
    bad = next(f for f in record["files"] if f["uri"].endswith("bad.dat"))
    served = local(sandbox_source, bad["uri"])
    line = next(line for line in err.splitlines() if "bad.dat" in line)
    assert f"record {recid}" in line and "checksum mismatch" in line
    assert bad["checksum"] in line and f"adler32:{adler(served)}" in line  # expected and actual
    record_dir = tmp_path / "data" / recid
    assert not (record_dir / "bad.dat").exists() and not (record_dir / "bad.dat.part").exists()
    for name in ("good_0.dat", "good_1.dat"):
        assert (record_dir / name).is_file()
    rows = [r for p in stats.glob("*.jsonl") for r in read_jsonl(p)]
    failed = next(r for r in rows if r["file"] == "bad.dat" and r["status"] == "failed")
    assert failed["attempts"] == 2 and failed["error_type"] == "VerificationError"  # retried once
    # One event per file, whichever path fetched it (small files go in batches over root://,
    # and a batch gives a failed file back to the one-file path): no started row is orphaned.
    for name, terminal in (("bad.dat", "failed"), ("good_0.dat", "ok"), ("good_1.dat", "ok")):
        statuses = [r["status"] for r in rows if r["stage"] == "download" and r["file"] == name]
        assert statuses == ["started", terminal], (name, statuses)


def test_missing_file_on_the_server(
    sandbox_source: SandboxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recid = sandbox_source.cases["missing_file"]
    assert api(sandbox_source, tmp_path, recid) == 1
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "gone.dat" in line)
    assert f"record {recid}" in line and "no such file" in line
    record_dir = tmp_path / "data" / recid
    assert (record_dir / "present_0.dat").is_file() and (record_dir / "present_1.dat").is_file()
    assert not (record_dir / "gone.dat").exists()


@pytest.mark.parametrize("case", ["unpadded", "sha1", "alder32", "empty", "collide"])
def test_awkward_records_download_verified(sandbox_source: SandboxSource, tmp_path: Path, case: str) -> None:
    recid = sandbox_source.cases[case]
    assert from_file(sandbox_source, tmp_path, recid) == 0
    record_dir = tmp_path / "data" / recid
    manifest = load_manifest(record_dir)
    for f in data_files(sandbox_source.record(case)):
        served = local(sandbox_source, f["uri"])
        key = next(k for k, e in manifest.entries.items() if e.source_uri == f["uri"])
        assert (record_dir / key).read_bytes() == served.read_bytes()
        if case == "sha1":
            assert manifest.entries[key].checksums["sha1"] == f["checksum"].split(":")[1]
    if case == "collide":
        assert sorted(manifest.entries) == ["run1/events.dat", "run2/events.dat", "run2/extra.dat"]


@pytest.mark.parametrize("via", ["api", "records"])
def test_index_file_record_is_expanded(sandbox_source: SandboxSource, tmp_path: Path, via: str) -> None:
    recid = sandbox_source.cases["index"]
    run = api if via == "api" else from_file
    assert run(sandbox_source, tmp_path, recid) == 0
    record_dir = tmp_path / "data" / recid
    names = sorted(p.name for p in record_dir.iterdir() if p.is_file())
    assert names == [f"indexed_{i}.root" for i in range(5)]
    index_file = next(f for f in sandbox_source.record("index")["files"] if f.get("type") == "index.json")
    for item in json.loads(local(sandbox_source, index_file["uri"]).read_text()):
        assert (record_dir / item["filename"]).read_bytes() == local(sandbox_source, item["uri"]).read_bytes()


def test_path_escape_is_refused_and_nothing_written(
    sandbox_source: SandboxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recid = sandbox_source.cases["escape"]
    plain = sandbox_source.cases["plain"]
    assert from_file(sandbox_source, tmp_path, recid, plain) == 1
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if recid in line)
    assert "../../etc/passwd" in line and "refused" in line
    assert not (tmp_path / "data" / recid).exists()
    assert (tmp_path / "data" / plain / "plain_0.dat").is_file()  # the other record went on


def test_unknown_recid_and_record_without_files(
    sandbox_source: SandboxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nofiles, plain = sandbox_source.cases["nofiles"], sandbox_source.cases["plain"]
    assert api(sandbox_source, tmp_path, "424242", nofiles, plain) == 1
    out, err_text = capsys.readouterr()
    err = err_text.splitlines()
    assert any("record 424242" in line and "no such record" in line for line in err)
    # A record without files is a metadata-only record (upload/bulk carry it): not an error here.
    assert f"record {nofiles}: no files to download (the source lists none: a metadata-only record)" in out
    assert [line for line in err if line.startswith("ferry: error:")] == [line for line in err if "424242" in line]
    assert not any(nofiles in line for line in err)
    assert (tmp_path / "data" / plain / "plain_0.dat").is_file()
    # the same from a records file
    assert from_file(sandbox_source, tmp_path, "424242") == 1
    assert "not in the records file" in capsys.readouterr().err


def test_portal_down(sandbox_source: SandboxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ferry(tmp_path, "--portal", f"http://127.0.0.1:{port}", "--dest", str(tmp_path / "data"), "81045", "80509")
    assert code == 1
    err = capsys.readouterr().err.splitlines()
    for recid in ("81045", "80509"):
        assert any(f"record {recid}" in line and "cannot reach the portal" in line for line in err)
    assert not (tmp_path / "data").exists()


def test_malformed_answer_from_the_portal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Bad(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"{not json"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Bad)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        code = ferry(tmp_path, "--portal", f"http://127.0.0.1:{server.server_port}", "--dest", str(tmp_path / "d"), "1")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1
    assert "record 1" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_dry_run_writes_nothing(
    sandbox_source: SandboxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recids = [sandbox_source.cases[c] for c in ("plain", "index", "big")]
    before = set(tmp_path.rglob("*"))
    assert api(sandbox_source, tmp_path, *recids, "--dry-run") == 0
    out = capsys.readouterr().out
    assert set(tmp_path.rglob("*")) == before | {tmp_path / "ferry.toml"}
    assert "indexed_4.root" in out and "fetch" in out and "big.dat" in out
    # After a real download of one record the plan says what would be skipped.
    assert api(sandbox_source, tmp_path, recids[0]) == 0
    capsys.readouterr()
    snap = snapshot(tmp_path / "data")
    assert api(sandbox_source, tmp_path, recids[0], "--dry-run") == 0
    assert "skip (verified before)" in capsys.readouterr().out
    assert snapshot(tmp_path / "data") == snap


def test_help_explains(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["download", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for word in ("--records", "--protocol", "--dry-run", "--verify-existing", ".part", "manifest", "Exit status"):
        assert word in text


def test_no_recids_is_a_usage_error(tmp_path: Path) -> None:
    assert ferry(tmp_path, "--dest", str(tmp_path / "d")) == 2


def test_records_file_without_recids_downloads_all(tmp_path: Path, sandbox_source: SandboxSource) -> None:
    subset = [sandbox_source.record("plain"), sandbox_source.record("unpadded")]
    path = tmp_path / "two.json"
    path.write_bytes(orjson.dumps(subset))
    assert ferry(tmp_path, "--records", str(path), "--dest", str(tmp_path / "data")) == 0
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(str(r["recid"]) for r in subset)


async def test_progress_bar_and_summary_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from ferry.progress import Progress

    # The bar is cut to the terminal's width; a narrow one (a test worker's) would cut the
    # "1 active" this test looks for.
    monkeypatch.setenv("COLUMNS", "200")

    tty = io.StringIO()
    progress = Progress(stream=tty, tty=True)
    async with progress:
        progress.add_totals(records=2, files=3, bytes=3000)
        progress.file_started("1/a")
        progress.advance(1500)
        progress.draw()
        progress.add_totals(files=1, bytes=1000)  # totals may grow while running
        progress.file_finished("1/a", ok=True)
        progress.file_finished("1/b", ok=False, skipped_bytes=0)
        progress.record_finished(ok=False)
    text = tty.getvalue()
    assert "\r\x1b[2K[" in text and "37.5%" in text and "1 active" in text
    assert "download: records 1/2 (1 failed) | files 2/4 (1 failed) 1.5 kB/4.0 kB" in text and text.endswith("\n")
    plain = io.StringIO()
    quiet = Progress(stream=plain, tty=False, interval=3600)
    async with quiet:
        quiet.add_totals(records=1, files=1, bytes=10)
    # A short run prints no periodic line, only the final ones (per stage, then records).
    assert plain.getvalue() == "download: 0 file(s) (0 moved), 0 B transferred in 0.0 s\nrecords: 0 of 1 done\n"
    quiet.draw()
    assert "\ndownload: records 0/1 | files 0/1" in plain.getvalue() and "\r" not in plain.getvalue()


def test_on_demand_file_is_tried_and_named_as_on_tape(
    sandbox_source: SandboxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = sandbox_source.record("plain")
    tape = {
        "uri": f"{sandbox_source.xrootd_url}//eos/opendata/sandbox/tape/not-staged.dat",
        "size": 10,
        "checksum": "adler32:00000001",
        "availability": "on demand",
    }
    path = tmp_path / "tape.json"
    path.write_bytes(orjson.dumps([{**plain, "recid": "777", "files": [*plain["files"], tape]}]))
    args = ("--records", str(path), "--dest", str(tmp_path / "data"), "777")
    assert ferry(tmp_path, *args, "--dry-run") == 0
    assert "on tape" in capsys.readouterr().out
    assert ferry(tmp_path, *args) == 1
    line = next(line for line in capsys.readouterr().err.splitlines() if "not-staged.dat" in line)
    assert "record 777" in line and "on tape" in line and "stage" in line
    assert (tmp_path / "data" / "777" / "plain_0.dat").is_file()


async def test_transient_failures_are_retried(
    sandbox_source: SandboxSource, tmp_path: Path, portal_factory: PortalFactory
) -> None:
    import asyncio

    portal = await portal_factory()
    portal.fail_next(2, 503, prefix="/api/records/")
    portal.fail_next(1, 503, prefix="/eos/opendata/")
    recid = sandbox_source.cases["plain"]
    stats = tmp_path / "stats"
    args = ["--portal", portal.url, "--dest", str(tmp_path / "data"), "--protocol", "https", "--stats-dir", str(stats)]
    code = await asyncio.to_thread(ferry, tmp_path, *args, recid)
    assert code == 0
    assert len(load_manifest(tmp_path / "data" / recid).entries) == 3
    rows = [r for p in stats.glob("*.jsonl") for r in read_jsonl(p) if r["status"] == "ok"]
    assert next(r for r in rows if r["stage"] == "resolve")["attempts"] == 3
    assert max(r["attempts"] for r in rows if r["stage"] == "download" and r["file"]) == 2
    # Failures that outlast the retries fail the record with the portal's answer named.
    portal.fail_next(10, 503, prefix="/api/records/")
    code = await asyncio.to_thread(ferry, tmp_path, "--portal", portal.url, "--dest", str(tmp_path / "d2"), recid)
    assert code == 1 and not (tmp_path / "d2").exists()


def test_corrupt_manifest_and_local_errors(
    sandbox_source: SandboxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recid = sandbox_source.cases["plain"]
    assert api(sandbox_source, tmp_path, recid) == 0
    record_dir = tmp_path / "data" / recid
    (record_dir / ".ferry" / "manifest.json").write_text("{broken")
    assert api(sandbox_source, tmp_path, recid) == 0  # a lost cache: files re-verified, manifest rewritten
    assert len(load_manifest(record_dir).entries) == 3
    # A folder where a file should go fails that file only, with a clear line.
    (record_dir / "plain_1.dat").unlink()
    (record_dir / "plain_1.dat.part").mkdir()
    capsys.readouterr()
    assert api(sandbox_source, tmp_path, recid) == 1
    line = next(line for line in capsys.readouterr().err.splitlines() if "plain_1.dat" in line)
    assert f"record {recid}" in line and "local I/O error" in line


def test_text_index_only_is_verified_with_the_servers_checksum(
    sandbox_source: SandboxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = sandbox_source.record("index")
    only_txt = {**rec, "recid": "778", "files": [f for f in rec["files"] if f.get("type") == "index.txt"]}
    path = tmp_path / "txt.json"
    path.write_bytes(orjson.dumps([only_txt]))
    args: tuple[str, ...] = ("--records", str(path), "--dest", str(tmp_path / "data"), "778")
    assert ferry(tmp_path, *args) == 0  # over root://, the server's adler32 stands in for the record's
    manifest = load_manifest(tmp_path / "data" / "778")
    assert len(manifest.entries) == 5 and all(e.source_checksum for e in manifest.entries.values())
    # Over HTTPS there is no server checksum: the files cannot be verified, and say so.
    args = ("--records", str(path), "--dest", str(tmp_path / "d2"), "--protocol", "https")
    assert ferry(tmp_path, *args, "--https-base", sandbox_source.portal_url, "778") == 1
    assert "cannot verify it" in capsys.readouterr().err
    assert not [p for p in (tmp_path / "d2" / "778").iterdir() if p.is_file()]


def test_small_files_in_batches_fail_one_by_one(
    sandbox_source: SandboxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "many" has 40 small files: over root:// they are fetched in batches of up to 32 by
    # worker threads. A file that fails inside a batch (wrong checksum in the record, file
    # gone from the server) must fail alone, with the same retries and messages as on the
    # one-file path, while every other file of both batches is verified and kept.
    record = json.loads(json.dumps(sandbox_source.record("many")))
    recid = str(record["recid"])
    files = record["files"]
    bad, gone = files[5], files[33]
    bad["checksum"] = f"adler32:{int(bad['checksum'].split(':')[1], 16) ^ 0x10:08x}"
    gone["uri"] = gone["uri"].replace("many_033.dat", "many_033_gone.dat")
    odd = files[20]  # a scheme nobody serves: fails alone, not the record
    odd["uri"] = "ftp://127.0.0.1/" + odd["uri"].rsplit("/", 1)[1]
    records = tmp_path / "records.json"
    records.write_text(json.dumps([record]))
    stats = tmp_path / "stats"
    code = ferry(
        tmp_path, "--records", str(records), "--dest", str(tmp_path / "data"), "--stats-dir", str(stats), recid
    )
    err = capsys.readouterr().err
    assert code == 1
    assert any("many_005.dat" in line and "checksum mismatch" in line for line in err.splitlines())
    assert any("many_033_gone.dat" in line and "no such file" in line for line in err.splitlines())
    assert any("many_020.dat" in line and "no way to fetch" in line for line in err.splitlines())
    record_dir = tmp_path / "data" / recid
    manifest = load_manifest(record_dir, recid)
    kept = {f["uri"].rsplit("/", 1)[1]: f for f in files if f is not bad and f is not gone and f is not odd}
    assert set(manifest.entries) == set(kept)
    for name, entry in kept.items():
        data = (record_dir / name).read_bytes()
        assert len(data) == entry["size"] and f"adler32:{zlib.adler32(data):08x}" == entry["checksum"]
        assert manifest.entries[name].checksums["md5"] == hashlib.md5(data).hexdigest()
    assert not (record_dir / "many_005.dat").exists() and not (record_dir / "many_033_gone.dat").exists()
    assert not list(record_dir.glob("*.part"))
    rows = [r for p in stats.glob("*.jsonl") for r in read_jsonl(p) if r["stage"] == "download" and r["file"]]
    assert sum(r["status"] == "started" for r in rows) == 40
    assert sum(r["status"] == "ok" for r in rows) == 37
    failed = {r["file"]: r for r in rows if r["status"] == "failed"}
    assert set(failed) == {"many_005.dat", "many_020.dat", "many_033_gone.dat"}
    assert failed["many_005.dat"]["attempts"] == 2  # the batch's try, then one retry
    assert failed["many_033_gone.dat"]["error_type"] == "SourceFileMissing"
