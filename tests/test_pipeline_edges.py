"""Single-record edges: a 150-file record as bundles; `ferry upload` killed mid-file."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from download.manifest import load_manifest
from ferry.cli import main
from ferry.core.checksums import Checksum
from pipeline import job as pipeline
from pipeline import job_files
from pipeline.ledger import Ledger
from stats.events import read_jsonl
from tests.bulk_support import (
    BASE,
    kill9,
    md5_file,
    run_ferry_process,
    spawn_ferry,
    stats_rows,
    synthetic_source,
    wait_for,
    write_config,
)
from tests.fixtures_repository import RepositoryHandle


def record(recid: str, sizes: list[int]) -> dict[str, Any]:
    files = [
        {"uri": f"root://eospublic.cern.ch/{BASE}/{recid}/f{j:03d}.dat", "size": s, "checksum": ""}
        for j, s in enumerate(sizes)
    ]
    return {
        "recid": recid,
        "title": f"Edge record {recid}",
        "experiment": ["SANDBOX"],
        "publisher": "CERN Open Data Portal",
        "date_published": "2025",
        "type": {"primary": "Dataset", "secondary": ["Collision"]},
        "license": {"attribution": "CC0-1.0"},
        "files": files,
    }


def test_150_file_record_uploaded_as_split_bundles(
    tmp_path: Path, repository_factory: Callable[..., RepositoryHandle], capsys: pytest.CaptureFixture[str]
) -> None:
    recid = "975150"
    sizes = [2_000 + (j * 37) % 3_000 for j in range(150)]
    repo = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000)
    with synthetic_source([record(recid, sizes)]) as src:
        # Files of at most ~200 kB on the target: 150 files of 2-5 kB need several bundles.
        config = write_config(tmp_path, src, repo, max_file_size=200_000)
        dest = tmp_path / "data"
        upload = ["--config", str(config), "upload", recid, "--target", "sandbox", "--dest", str(dest)]
        assert main(upload) == 0, capsys.readouterr().err
        source_md5 = src.source_md5(recid)

        # Originals deleted once the bundles are verified: a re-run neither downloads them
        # again nor uploads anything; the record is still recognised as zipped.
        zip_args = ["--config", str(config), "zip", recid, "--dest", str(dest), "--target", "sandbox"]
        assert main([*zip_args, "--delete-originals"]) == 0, capsys.readouterr().err
        assert not list((dest / recid).glob("*.dat"))
        stats = tmp_path / "stats"
        assert main([*upload, "--stats-dir", str(stats)]) == 0, capsys.readouterr().err
        rows = [r for f in stats.glob("*.jsonl") for r in read_jsonl(f)]
        assert not [r for r in rows if r["stage"] == "download" and r["file"] and r["status"] == "ok"]
        assert not [r for r in rows if r["stage"] == "upload" and r["status"] == "ok"]

    state = repo.state()
    assert state["by_recid"][recid]["drafts"] == 1
    (entity,) = [e for e in state["entities"] if e["recid"] == recid]
    remote = {k: v["checksum"].removeprefix("md5:") for k, v in entity["draft_files"].items()}
    bundles = sorted(k for k in remote if k.endswith(".zip"))
    assert len(bundles) >= 2 and f"{recid}_bundle_manifest.json" in remote and len(remote) == len(bundles) + 1
    # What the target holds is byte for byte what we built, and the bundles hold every
    # source file exactly once, with the source's bytes.
    seen: dict[str, str] = {}
    for name in bundles:
        local = dest / recid / name
        assert md5_file(local) == remote[name] and entity["draft_files"][name]["size"] <= 200_000
        with zipfile.ZipFile(local) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".dat"):
                    assert info.filename not in seen
                    seen[info.filename] = hashlib.md5(zf.read(info)).hexdigest()
    assert seen == source_md5


def test_bundle_md5_is_computed_by_the_upload_and_recorded(
    tmp_path: Path,
    repository_factory: Callable[..., RepositoryHandle],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The zip stage leaves a bundle's md5 to the upload, which computes it while sending
    # (one bundle as L, one as M), verifies the target's against it, and records it in the
    # manifest and the ledger; later runs compare without sending, hashing only when the
    # md5 is not known (a rebuilt bundle).
    recid = "975151"
    repo = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000)
    hashed: list[str] = []
    real_hash = job_files.hash_file

    def counting_hash(path: str, algorithms: tuple[str, ...] = ("md5",), **kw: Any) -> Any:
        hashed.append(Path(path).name)
        return real_hash(path, algorithms, **kw)

    monkeypatch.setattr(job_files, "hash_file", counting_hash)
    with synthetic_source([record(recid, [20_000 + j for j in range(30)])]) as src:
        config = write_config(tmp_path, src, repo, max_file_size=400_000, multipart_threshold=300_000)
        dest, stats = tmp_path / "data", tmp_path / "stats"
        upload = ["--config", str(config), "upload", recid, "--target", "sandbox", "--dest", str(dest)]
        upload += ["--stats-dir", str(stats)]
        # A bundle touched after the zip stage verified it is not sent as if it were verified.
        real_zip = pipeline.zip_record

        async def zip_then_touch(*args: Any, **kw: Any) -> Any:
            result = await real_zip(*args, **kw)
            os.utime(result.bundles[0].path, ns=(1, 1))
            return result

        monkeypatch.setattr(pipeline, "zip_record", zip_then_touch)
        assert main(upload) == 1
        err = capsys.readouterr().err
        assert f"{recid}_bundle.zip changed on disk after it was verified" in err
        monkeypatch.setattr(pipeline, "zip_record", real_zip)

        assert main(upload) == 0, capsys.readouterr().err  # the zip stage re-checks it (CRC32s) and keeps it
        assert hashed == []  # no separate hashing: md5s came from the uploads' reads
        rec = dest / recid
        manifest = load_manifest(rec, recid)
        bundles = [k for k in manifest.entries if k.endswith(".zip")]
        assert len(bundles) == 2
        remote = {f["key"]: f for f in _draft_files(repo, recid)}
        assert len(remote) == 3
        sent = {r["file"]: r["transfer"] for r in _rows(stats) if r["stage"] == "upload" and r["status"] == "started"}
        assert sorted(sent[k] for k in bundles) == ["L", "M"]  # one multipart (hashed beside its parts)
        parts = [r for r in repo.requests_log() if r["method"] == "PUT" and f"{recid}_bundle.zip/content/" in r["path"]]
        assert parts
        with Ledger.open(dest / ".ferry" / "ledger-sandbox.sqlite", readonly=True) as ledger:
            rows = {f.key: f for f in ledger.file_status(recid)}
        for key in [*bundles, f"{recid}_bundle_manifest.json"]:
            md5 = md5_file(rec / key)
            assert manifest.entries[key].checksums["md5"] == md5 == remote[key]["checksum"].removeprefix("md5:")
            assert rows[key].checksum == Checksum("md5", md5) and rows[key].status == "verified"

        # Known md5s: nothing hashed, nothing sent.
        stats_before = len(list(_rows(stats)))
        assert main(upload) == 0, capsys.readouterr().err
        new = _rows(stats)[stats_before:]
        assert hashed == [] and not [r for r in new if r["stage"] == "upload" and r["status"] == "ok"]

        # The staged folder gone: downloaded and zipped again to the same bytes, md5 unknown.
        # Each bundle is hashed once to compare with the target, and nothing is sent.
        shutil.rmtree(rec)
        stats_before = len(_rows(stats))
        assert main(upload) == 0, capsys.readouterr().err
        new = _rows(stats)[stats_before:]
        assert sorted(hashed) == sorted(bundles)
        assert not [r for r in new if r["stage"] == "upload" and r["status"] == "ok"]
        manifest = load_manifest(rec, recid)
        assert all(manifest.entries[k].checksums["md5"] == md5_file(rec / k) for k in bundles)


def _rows(stats: Path) -> list[dict[str, Any]]:
    return stats_rows(stats)  # runs in the order they started (see there)


def _draft_files(repo: RepositoryHandle, recid: str) -> list[dict[str, Any]]:
    (entity,) = [e for e in repo.state()["entities"] if e["recid"] == recid]
    return [{"key": k, **v} for k, v in entity["draft_files"].items()]


def test_upload_killed_mid_file_resumes_without_duplicates(
    tmp_path: Path, repository_factory: Callable[..., RepositoryHandle]
) -> None:
    recid = "975001"
    repo = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000, latency_ms=150)
    with synthetic_source([record(recid, [12 * 1024 * 1024, 3_000_000])]) as src:
        # Multipart with 1 MiB parts and 150 ms per request: the big file takes a few seconds.
        config = write_config(tmp_path, src, repo, multipart_threshold=1 << 20, part_size=1 << 20)
        dest, log = tmp_path / "data", tmp_path / "ferry.log"
        args = ["--config", str(config), "upload", recid, "--target", "sandbox", "--dest", str(dest)]
        proc = spawn_ferry(args, log)

        def parts_sent() -> int:
            return sum(1 for row in repo.requests_log() if row["method"] == "PUT" and "/content/" in row["path"])

        assert wait_for(lambda: parts_sent() >= 2, timeout=60), log.read_text()
        kill9(proc)
        assert parts_sent() < 12  # killed in the middle of the big file
        assert run_ferry_process(args, log) == 0, log.read_text()
        source_md5 = src.source_md5(recid)

    state = repo.state()
    assert state["by_recid"][recid]["drafts"] == 1
    (entity,) = [e for e in state["entities"] if e["recid"] == recid]
    files = entity["draft_files"]
    assert {k: v["status"] for k, v in files.items()} == {k: "completed" for k in source_md5}
    assert {k: v["checksum"] for k, v in files.items()} == {k: f"md5:{v}" for k, v in source_md5.items()}
