"""``ferry mirror ... --cluster local:2``: one Dask task per file, two worker processes.

As a user runs it (a subprocess), the Zenodo stand-in as the source and a real S3 server,
moto and SeaweedFS (``s3_server``: SeaweedFS checks signatures and ``Content-MD5``, which
moto does not); judged by what the bucket holds (every object once, the source's bytes,
latest/ and its manifest, no open upload, no lock) and by the merged stats (one upload row
per file, each carrying its worker). One worker is killed by PID with uploads open: its
files are streamed again elsewhere and the client aborts what the dead worker left open.

``ferry mirror`` writes to s3 targets only (``ferry.cli.commands.mirror.target_config``),
so the sources it mirrors from (Zenodo, CERN) into S3 are the pairs there are; a Zenodo or
InvenioRDM target is refused before any worker starts (the last test).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.bulk_support import stats_rows
from tests.fixtures_s3 import S3Server
from tests.fixtures_zenodo import ZenodoHandle
from tests.test_s3_mirror_cli import ferry, ferry_started
from tests.test_s3_target import objects, uploads
from tests.test_zenodo_source import publish

pytest.importorskip("distributed", reason="dataferry[cluster] (dask distributed) is installed by `make setup`")

from tests.test_cluster import _worker_pids  # after the skip: it needs distributed

MiB = 1024 * 1024
PFX = "cpg0042/jump_rr"


def write_config(path: Path, zenodo: ZenodoHandle, server: S3Server, bucket: str) -> Path:
    path.write_text(
        f'[source.zenodo]\nurl = "{zenodo.url}"\n\n'
        f'[targets.cpg]\ntype = "s3"\nurl = "s3://{bucket}/{PFX}"\nendpoint_url = "{server.endpoint_url}"\n'
        "multipart_threshold = 6291456\npart_size = 5242880\n\n"
        # A target ferry mirror cannot write to (it has a request budget; S3 has none).
        f'[targets.zen]\ntype = "zenodo"\nurl = "{zenodo.url}"\ntoken_env = "FERRY_TEST_NO_TOKEN"\n'
        "requests_per_minute = 20\n\n"
        # An S3 target with a budget below S3's own: kept without --cluster, refused with it.
        f'[targets.slow]\ntype = "s3"\nurl = "s3://{bucket}/{PFX}"\nendpoint_url = "{server.endpoint_url}"\n'
        "requests_per_minute = 600\n"
    )
    return path


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.make_bucket()


@pytest.fixture
def config(tmp_path: Path, zenodo: ZenodoHandle, s3_server: S3Server, bucket: str) -> Path:
    return write_config(tmp_path / "ferry.toml", zenodo, s3_server, bucket)


def _check_bucket(server: S3Server, bucket: str, rid: str, files: dict[str, bytes]) -> None:
    held = objects(server, bucket)
    version = {f"{PFX}/{rid}/{k}/content" for k in files}
    latest = {f"{PFX}/latest/{k}/content" for k in files}
    assert set(held) == version | latest | {f"{PFX}/latest/_manifest.json"}, sorted(held)
    client = server.sync_client()
    for key, data in files.items():
        for where in (rid, "latest"):
            obj = client.get_object(Bucket=bucket, Key=f"{PFX}/{where}/{key}/content")
            assert hashlib.md5(obj["Body"].read()).hexdigest() == hashlib.md5(data).hexdigest(), (where, key)
            assert obj["Metadata"].get("ferry-md5") in (None, hashlib.md5(data).hexdigest())
    manifest = json.loads(client.get_object(Bucket=bucket, Key=f"{PFX}/latest/_manifest.json")["Body"].read())
    assert manifest["record_id"] == rid and {f["key"] for f in manifest["files"]} == set(files)
    assert uploads(server, bucket) == []


@pytest.mark.timeout(240)
def test_mirror_ten_files_on_two_workers_then_again(
    tmp_path: Path, zenodo: ZenodoHandle, s3_server: S3Server, bucket: str, config: Path
) -> None:
    files = {f"part-{i:02d}.parquet": os.urandom(200_000 + 1000 * i) for i in range(9)}
    files["big.bin"] = os.urandom(7 * MiB)  # a multipart upload
    rec = publish(zenodo, files)
    rid, stats = str(rec["id"]), tmp_path / "stats"

    first = ferry(s3_server, config, f"zenodo:{rid}", "cpg", "--cluster", "local:2", "--stats-dir", str(stats))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "10 streamed" in first.stdout and "latest/: 10 copied" in first.stdout, first.stdout
    _check_bucket(s3_server, bucket, rid, files)
    assert f"{PFX}/.ferry-mirror.lock" not in objects(s3_server, bucket)
    # Merged once per file: the workers' rows come back through the client, each with its worker.
    rows = stats_rows(stats)
    done = [r for r in rows if r["stage"] == "upload" and r["status"] == "ok"]
    assert sorted(r["file"] for r in done) == sorted(files), done
    assert all(r.get("worker") and r["recid"] == rid for r in done), done
    assert len(list(stats.glob("*-*.jsonl"))) >= 1  # <run_id>-<worker>.jsonl beside the client's file

    held = objects(s3_server, bucket)
    again = ferry(s3_server, config, f"zenodo:{rid}", "cpg", "--cluster", "local:2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 streamed (0 bytes)" in again.stdout and "10 already there" in again.stdout, again.stdout
    assert "latest/: 0 copied, 0 removed" in again.stdout
    assert objects(s3_server, bucket) == held


@pytest.mark.timeout(300)
def test_worker_killed_mid_mirror(zenodo: ZenodoHandle, s3_server: S3Server, bucket: str, config: Path) -> None:
    files = {f"f{i:02d}.bin": os.urandom(7 * MiB) for i in range(6)}
    rec = publish(zenodo, files)
    rid = str(rec["id"])
    zenodo.configure(latency_ms=300)  # slow enough to be caught with uploads open
    proc = ferry_started(s3_server, config, f"zenodo:{rid}", "cpg", "--cluster", "local:2", "--jobs", "1")
    try:
        deadline, killed = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            workers = _worker_pids(proc.pid)
            if len(workers) == 2 and uploads(s3_server, bucket):
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
                break
            time.sleep(0.05)
        assert killed is not None, f"no worker killed with an upload open: {proc.poll()}"
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "6 streamed" in out or "already there" in out, out
    _check_bucket(s3_server, bucket, rid, files)  # every file once, no upload left open
    assert f"{PFX}/.ferry-mirror.lock" not in objects(s3_server, bucket)


def test_cluster_refuses_what_it_cannot_honour(tmp_path: Path, zenodo: ZenodoHandle, moto_s3: S3Server) -> None:
    config = write_config(tmp_path / "ferry.toml", zenodo, moto_s3, "unused")  # nothing is written
    dry = ferry(moto_s3, config, "zenodo:1", "cpg", "--cluster", "local:2", "--dry-run")
    assert dry.returncode == 2 and "--dry-run" in dry.stderr and "without --cluster" in dry.stderr, dry.stderr
    cfg = ferry(moto_s3, config, "zenodo:1", "cpg", "--cluster", "local:2", "--cluster-config", "site.yaml")
    assert cfg.returncode == 2 and "--cluster-config" in cfg.stderr, cfg.stderr
    odd = ferry(moto_s3, config, "zenodo:1", "cpg", "--cluster", "kubernetes")
    assert odd.returncode == 2 and "local:N" in odd.stderr, odd.stderr
    # Only s3 targets: a target with a request budget (Zenodo, InvenioRDM) is refused, on a
    # cluster as without, before the source is asked or a worker starts.
    zen = ferry(moto_s3, config, "zenodo:1", "zen", "--cluster", "local:2")
    assert zen.returncode == 2 and "ferry mirror writes to s3 targets, not 'zenodo'" in zen.stderr, zen.stderr
    slow = ferry(moto_s3, config, "zenodo:1", "slow", "--cluster", "local:2")
    assert slow.returncode == 2 and "targets.slow" in slow.stderr and "without --cluster" in slow.stderr, slow.stderr
