"""``ferry upload --stream`` / ``ferry bulk --stream``: source bytes straight into S3 (moto),
nothing staged, nothing zipped; the one streaming path the mirror uses (pipeline/stream.py).

Sources are real servers on 127.0.0.1: the Zenodo stand-in over HTTPS (md5 listed) and the
portal + XRootD sandbox (adler32 listed). A cutting proxy in front of the Zenodo stand-in
breaks content downloads half way, to show a broken stream resumes (``Range``) and a
stream that stays short is never completed on S3.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bulk_support import BASE, SyntheticSource, make_record, synthetic_source
from tests.fixtures_s3 import S3Proxy, S3Server
from tests.fixtures_zenodo import CuttingProxy, ZenodoHandle
from tests.test_s3_target import objects, uploads
from tests.test_zenodo_source import publish

MiB = 1024 * 1024
PREFIX = "pfx"


@pytest.fixture
def bucket(moto_s3: S3Server) -> str:
    return moto_s3.make_bucket()


def _env(server: S3Server, proxy: S3Proxy | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= server.env() | {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    if proxy is not None:
        env["AWS_ENDPOINT_URL_S3"] = proxy.endpoint_url
    return env


def ferry(env: dict[str, str], config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if "--dest" not in args:  # the ledger lives in --dest: never the working directory's ./data
        args = (*args, "--dest", str(config.parent / "data"))
    cmd = [sys.executable, "-m", "ferry.cli", "--config", str(config), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def zenodo_config(tmp_path: Path, zen: ZenodoHandle, endpoint: str, bucket: str) -> Path:
    path = tmp_path / "ferry.toml"
    path.write_text(
        f'[source.zenodo]\nurl = "{zen.url}"\n\n'
        f'[targets.cpg]\ntype = "s3"\nurl = "s3://{bucket}/{PREFIX}"\nendpoint_url = "{endpoint}"\n'
        "multipart_threshold = 6291456\npart_size = 5242880\n\n"
        "[limits]\nbackoff_base = 0.05\nbackoff_max = 0.5\nretries = 2\n"
    )
    return path


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def stored(server: S3Server, bucket: str, key: str) -> bytes:
    body: bytes = server.sync_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def staged(dest: Path) -> list[str]:
    """Files under --dest other than the ledger's folder: what --stream must never write."""
    if not dest.exists():
        return []
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and ".ferry" not in p.parts)


# --- ferry upload --stream ----------------------------------------------------------------


def test_upload_stream_nothing_staged_then_run_again_writes_nothing(
    tmp_path: Path, zenodo: ZenodoHandle, moto_s3: S3Server, s3_proxy: S3Proxy, bucket: str
) -> None:
    files = {"big.parquet": os.urandom(13 * MiB), "small.csv": b"a,b\n1,2\n", "notes.txt": b"n" * 5000}
    rid = str(publish(zenodo, files)["id"])
    config = zenodo_config(tmp_path, zenodo, s3_proxy.endpoint_url, bucket)
    dest = tmp_path / "data"
    env = _env(moto_s3, s3_proxy)

    plan = ferry(
        env, config, "upload", f"zenodo:{rid}", "--target", "cpg", "--stream", "--dest", str(dest), "--dry-run"
    )
    assert plan.returncode == 0, plan.stderr
    assert "stream: 3 file(s) from the source straight into the target" in plan.stdout
    assert s3_proxy.writes() == [] and objects(moto_s3, bucket) == {}

    first = ferry(env, config, "upload", f"zenodo:{rid}", "--target", "cpg", "--stream", "--dest", str(dest))
    assert first.returncode == 0, first.stderr
    assert f"record {rid}: ok, 3 file(s) verified on the target" in first.stdout
    for key, data in files.items():
        assert stored(moto_s3, bucket, f"{PREFIX}/{rid}/{key}/content") == data
        head = moto_s3.sync_client().head_object(Bucket=bucket, Key=f"{PREFIX}/{rid}/{key}/content")
        assert head["Metadata"]["ferry-md5"] == md5(data) and head["Metadata"]["ferry-record"] == rid
    assert staged(dest) == []  # not one byte on local disk
    assert uploads(moto_s3, bucket) == []
    # The big file went in parts (13 MiB, 5 MiB parts), each with its Content-MD5.
    parts = [p for m, p, _ in s3_proxy.writes() if m == "PUT" and "partNumber=" in p]
    assert len(parts) == 3

    s3_proxy.reset()
    again = ferry(env, config, "upload", f"zenodo:{rid}", "--target", "cpg", "--stream", "--dest", str(dest))
    assert again.returncode == 0, again.stderr
    assert f"record {rid}: skipped" in again.stdout
    assert s3_proxy.writes() == []  # nothing written, nothing fetched either
    assert staged(dest) == []


def test_stream_broken_half_way_resumes_from_the_byte_reached(
    tmp_path: Path, cut_zenodo: tuple[ZenodoHandle, CuttingProxy], moto_s3: S3Server, bucket: str
) -> None:
    zen, cutter = cut_zenodo
    data = os.urandom(17 * MiB)
    rid = str(publish(zen, {"run.root": data})["id"])
    config = zenodo_config(tmp_path, zen, moto_s3.endpoint_url, bucket)
    cutter.cuts = [7 * MiB, 4 * MiB]  # two breaks in one stream, then whole
    done = ferry(_env(moto_s3), config, "upload", f"zenodo:{rid}", "--target", "cpg", "--stream")
    assert done.returncode == 0, done.stderr
    assert stored(moto_s3, bucket, f"{PREFIX}/{rid}/run.root/content") == data
    ranges = [r for _, r in cutter.seen]
    assert len(ranges) == 3 and ranges[0] is None  # one stream, resumed twice from where it broke
    assert all(r is not None and r.startswith("bytes=") and r.endswith("-") for r in ranges[1:]), ranges
    starts = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges[1:] if r]
    assert 0 < starts[0] < 7 * MiB and starts[0] < starts[1] < 11 * MiB, starts
    assert uploads(moto_s3, bucket) == []


def test_a_stream_that_stays_short_or_corrupt_is_never_completed(
    tmp_path: Path, cut_zenodo: tuple[ZenodoHandle, CuttingProxy], moto_s3: S3Server, bucket: str
) -> None:
    zen, cutter = cut_zenodo
    # short.bin goes in parts (over the 6 MiB threshold), bad.bin as one PUT.
    files = {"short.bin": os.urandom(9 * MiB), "bad.bin": os.urandom(5 * MiB + 77), "ok.txt": b"fine"}
    rid = str(publish(zen, files)["id"])
    zen.corrupt(rid, "bad.bin", offset=4 * MiB)
    config = zenodo_config(tmp_path, zen, moto_s3.endpoint_url, bucket)
    # Every download of short.bin dies at 6 MiB, every resume at once: resumes cannot help.
    cutter.always, cutter.always_range = 6 * MiB, 300
    env = _env(moto_s3)
    failed = ferry(env, config, "upload", f"zenodo:{rid}", "--target", "cpg", "--stream")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "short.bin" in failed.stderr and "bad.bin" in failed.stderr
    assert objects(moto_s3, bucket) == {f"{PREFIX}/{rid}/ok.txt/content": 4}  # nothing partial, nothing wrong
    assert uploads(moto_s3, bucket) == []  # every started multipart upload aborted
    assert len([r for _, r in cutter.seen if r is not None]) >= 3  # it did try to resume

    cutter.always = cutter.always_range = None
    again = ferry(env, config, "upload", f"zenodo:{rid}", "--target", "cpg", "--stream")
    assert again.returncode == 1 and "bad.bin" in again.stderr  # still corrupt at the source
    assert stored(moto_s3, bucket, f"{PREFIX}/{rid}/short.bin/content") == files["short.bin"]
    assert f"{PREFIX}/{rid}/bad.bin/content" not in objects(moto_s3, bucket)
    assert uploads(moto_s3, bucket) == []


def test_stream_refused_for_a_target_without_streaming_put(tmp_path: Path, zenodo: ZenodoHandle) -> None:
    rid = str(publish(zenodo, {"a.txt": b"a"})["id"])
    shelf = tmp_path / "shelf"
    config = tmp_path / "ferry.toml"
    config.write_text(f'[source.zenodo]\nurl = "{zenodo.url}"\n\n[targets.shelf]\ntype = "local"\nurl = "{shelf}"\n')
    done = ferry(dict(os.environ), config, "upload", f"zenodo:{rid}", "--target", "shelf", "--stream")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "targets.shelf" in done.stderr and "--stream" in done.stderr
    assert not any(shelf.rglob("*")) if shelf.exists() else True


# --- ferry bulk --stream: CERN records over XRootD (adler32), one over the zip threshold ------


def _cern_files(recid: str, sizes: list[int]) -> list[dict[str, Any]]:
    uri = f"root://eospublic.cern.ch/{BASE}/{recid}/f{{:02d}}_{recid}.dat"
    return [{"uri": uri.format(j), "size": s, "checksum": ""} for j, s in enumerate(sizes)]


@pytest.fixture(scope="module")
def cern() -> Iterator[SyntheticSource]:
    records = [
        make_record("990001", _cern_files("990001", [7 * MiB + 123, 40_000]), ["Collision"]),
        make_record("990002", _cern_files("990002", [1_500 + 97 * j for j in range(24)]), ["Simulated"]),
    ]
    with synthetic_source(records) as src:
        yield src


def test_bulk_stream_cern_records_adler32_no_zip(
    tmp_path: Path, cern: SyntheticSource, moto_s3: S3Server, bucket: str
) -> None:
    config = tmp_path / "ferry.toml"
    config.write_text(
        f'[source.cernopendata]\nportal = "{cern.portal_url}"\n\n'
        f'[targets.cpg]\ntype = "s3"\nurl = "s3://{bucket}/{PREFIX}"\nendpoint_url = "{moto_s3.endpoint_url}"\n'
        "multipart_threshold = 6291456\npart_size = 5242880\n"
    )
    recids = tmp_path / "recids.txt"
    recids.write_text("990001\n990002\n")
    dest = tmp_path / "data"
    args = ("bulk", "--recids", str(recids), "--target", "cpg", "--stream", "--dest", str(dest))
    done = ferry(_env(moto_s3), config, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert staged(dest) == []
    client = moto_s3.sync_client()
    for recid in ("990001", "990002"):
        want = cern.source_md5(recid)
        listed = {f["uri"].rsplit("/", 1)[1]: f for f in cern.record(recid)["files"]}
        for name, digest in want.items():
            key = f"{PREFIX}/{recid}/{name}/content"  # each file as itself: 24 small files not zipped
            assert md5(stored(moto_s3, bucket, key)) == digest
            meta = client.head_object(Bucket=bucket, Key=key)["Metadata"]
            assert meta["ferry-adler32"] == str(listed[name]["checksum"]).split(":")[-1]
        assert len([k for k in objects(moto_s3, bucket) if k.startswith(f"{PREFIX}/{recid}/")]) == len(want)
    assert uploads(moto_s3, bucket) == []

    again = ferry(_env(moto_s3), config, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert staged(dest) == []


def _record_spans(stats_dir: Path) -> dict[str, tuple[int, int]]:
    """Each record's ``record`` event as (seq of its started line, seq of its terminal line)."""
    started: dict[str, int] = {}
    spans: dict[str, tuple[int, int]] = {}
    for path in stats_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["stage"] != "record" or row["recid"] is None:
                continue
            if row["status"] == "started":
                started[row["recid"]] = row["seq"]
            elif row["recid"] in started:
                spans[row["recid"]] = (started[row["recid"]], row["seq"])
    return spans


def test_bulk_stream_is_not_admitted_by_the_staging_budget(
    tmp_path: Path, cern: SyntheticSource, moto_s3: S3Server, s3_proxy: S3Proxy, bucket: str
) -> None:
    """A staging budget of 1000 bytes, smaller than either record: without --stream it still
    applies (a record over the budget goes alone: the two never run at once); with --stream
    nothing is staged, so it admits nothing: both records run at the same time (and finish)."""
    s3_proxy.configure(latency_s=0.1)  # every S3 answer late, so a record lasts a while
    env = _env(moto_s3, s3_proxy)
    recids = tmp_path / "recids.txt"
    recids.write_text("990001\n990002\n")
    spans: dict[str, dict[str, tuple[int, int]]] = {}
    for mode in ("staged", "stream"):
        work = tmp_path / mode
        work.mkdir()
        config = work / "ferry.toml"
        config.write_text(
            f'[source.cernopendata]\nportal = "{cern.portal_url}"\n\n'
            f'[targets.cpg]\ntype = "s3"\nurl = "s3://{bucket}/{mode}"\nendpoint_url = "{s3_proxy.endpoint_url}"\n'
            "multipart_threshold = 6291456\npart_size = 5242880\n"
        )
        dest, stats = work / "data", work / "stats"
        args = ["bulk", "--recids", str(recids), "--target", "cpg", "--dest", str(dest), "--stats-dir", str(stats)]
        args += ["--staging-gb", "0.000001", *(["--stream"] if mode == "stream" else [])]
        done = ferry(env, config, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "records: 2 of 2 done" in done.stderr + done.stdout, done.stdout + done.stderr
        spans[mode] = _record_spans(stats)
        assert sorted(spans[mode]) == ["990001", "990002"]
        assert (staged(dest) == []) == (mode == "stream")
        for recid in ("990001", "990002"):
            assert any(k.startswith(f"{mode}/{recid}/") for k in objects(moto_s3, bucket)), (mode, recid)
    for recid in ("990001", "990002"):  # streamed: each file as itself (the staged run zips the 24 small ones)
        for name, digest in cern.source_md5(recid).items():
            assert md5(stored(moto_s3, bucket, f"stream/{recid}/{name}/content")) == digest
    first, second = sorted(spans["staged"].values())
    assert second[0] > first[1], spans["staged"]  # one record at a time: the budget held the second back
    first, second = sorted(spans["stream"].values())
    assert second[0] < first[1], spans["stream"]  # the second started before the first had finished
    assert uploads(moto_s3, bucket) == []
