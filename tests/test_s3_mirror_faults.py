"""``ferry mirror`` through a counting, fault-injecting proxy in front of moto: what reaches
the server side is counted there (not by the client), and the faults are real HTTP answers
the client's own stack has to interpret (expired credentials, a 403 on HEAD)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path

import pytest

from tests.fixtures_s3 import S3Proxy, S3Server, ferry_through, proxied_target
from tests.fixtures_zenodo import ZenodoHandle
from tests.test_s3_target import objects, uploads
from tests.test_zenodo_source import publish

MiB = 1024 * 1024
PREFIX = "cpg0042/jump_rr"


def ferry(server: S3Server, proxy: S3Proxy, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return ferry_through(server, proxy, config, "mirror", *args)


@pytest.fixture
def config(tmp_path: Path, zenodo: ZenodoHandle, s3_proxy: S3Proxy, moto_bucket: str) -> Path:
    path = tmp_path / "ferry.toml"
    source = f'[source.zenodo]\nurl = "{zenodo.url}"\n\n'
    path.write_text(source + proxied_target("cpg", f"s3://{moto_bucket}/{PREFIX}", s3_proxy))
    return path


def bodies(server: S3Server, bucket: str) -> dict[str, bytes]:
    client = server.sync_client()
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in objects(server, bucket)}


def test_dry_run_sends_no_writing_request_to_the_server(
    zenodo: ZenodoHandle, moto_s3: S3Server, s3_proxy: S3Proxy, moto_bucket: str, config: Path
) -> None:
    v1 = publish(zenodo, {"a.csv": b"a" * 3000, "b.bin": os.urandom(7 * MiB), "old.txt": b"old"})
    dry = ferry(moto_s3, s3_proxy, config, f"zenodo:{v1['id']}", "cpg", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert s3_proxy.writes() == [] and s3_proxy.reads() and objects(moto_s3, moto_bucket) == {}

    assert ferry(moto_s3, s3_proxy, config, f"zenodo:{v1['id']}", "cpg").returncode == 0
    assert s3_proxy.writes()  # the proxy does see a real mirror's writes
    before = bodies(moto_s3, moto_bucket)
    # A plan with something of every kind: stream, copy to latest/, remove from latest/.
    from tests.test_s3_mirror import new_version

    v2 = new_version(zenodo, v1, {"a.csv": b"A" * 3000}, ["old.txt"])
    s3_proxy.reset()
    dry = ferry(moto_s3, s3_proxy, config, f"zenodo:{v2}", "cpg", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"stream a.csv (3000 bytes) -> {v2}/a.csv/content" in dry.stdout
    assert "remove latest/old.txt" in dry.stdout and f"copy {v2}/a.csv -> latest/a.csv/content" in dry.stdout
    assert s3_proxy.writes() == [], s3_proxy.writes()
    assert {m for m, _, _ in s3_proxy.reads()} <= {"GET", "HEAD"} and s3_proxy.reads()
    assert bodies(moto_s3, moto_bucket) == before


def test_expired_credentials_mid_run_stop_cleanly_and_the_rerun_completes(
    zenodo: ZenodoHandle, moto_s3: S3Server, s3_proxy: S3Proxy, moto_bucket: str, config: Path
) -> None:
    files = {f"f{i}.bin": os.urandom(7 * MiB) for i in range(4)}
    rec = publish(zenodo, files)
    lock = threading.Lock()
    parts = {"n": 0}

    def expire_after_three_parts(method: str, path: str) -> tuple[int, str] | None:
        # From the fourth part on every request is refused, as a session token that ran out.
        with lock:
            if parts["n"] >= 3:
                return 400, "ExpiredToken"
            if method == "PUT" and "partNumber=" in path:
                parts["n"] += 1
        return None

    s3_proxy.fail_when(expire_after_three_parts)
    run = ferry(moto_s3, s3_proxy, config, f"zenodo:{rec['id']}", "cpg", "--jobs", "2")
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert "expired" in run.stderr.lower() and "Traceback" not in run.stderr, run.stderr
    assert sum(1 for m, _, status in s3_proxy.requests if status == 400) >= 1
    # Never half-written: nothing of the version completed with other bytes, latest/ untouched.
    for key, data in bodies(moto_s3, moto_bucket).items():
        if key.endswith("/content"):
            name = key.split("/")[-2]
            assert data == files[name], f"{key} completed with wrong bytes"
    assert not any(k.startswith(f"{PREFIX}/latest/") for k in objects(moto_s3, moto_bucket))

    s3_proxy.heal()  # renewed credentials
    again = ferry(moto_s3, s3_proxy, config, f"zenodo:{rec['id']}", "cpg")
    assert again.returncode == 0, again.stderr
    held = bodies(moto_s3, moto_bucket)
    for key, data in files.items():
        assert held[f"{PREFIX}/{rec['id']}/{key}/content"] == data
        assert held[f"{PREFIX}/latest/{key}/content"] == data
    assert uploads(moto_s3, moto_bucket) == []  # the stopped run's open upload was aborted
    assert f"{PREFIX}/.ferry-mirror.lock" not in held


def test_head_403_stops_the_mirror_and_overwrites_nothing(
    zenodo: ZenodoHandle, moto_s3: S3Server, s3_proxy: S3Proxy, moto_bucket: str, config: Path
) -> None:
    rec = publish(zenodo, {"a.bin": b"new bytes", "b.bin": b"b" * 100})
    key = f"{PREFIX}/{rec['id']}/a.bin/content"
    moto_s3.sync_client().put_object(Bucket=moto_bucket, Key=key, Body=b"precious")
    s3_proxy.fail_when(lambda method, path: (403, "AccessDenied") if method == "HEAD" and "/a.bin/" in path else None)
    run = ferry(moto_s3, s3_proxy, config, f"zenodo:{rec['id']}", "cpg")
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert "a.bin" in run.stderr and ("403" in run.stderr or "denied" in run.stderr.lower()), run.stderr
    assert bodies(moto_s3, moto_bucket)[key] == b"precious"  # a refused HEAD is not "absent"
    assert not any(k.startswith(f"{PREFIX}/latest/") for k in objects(moto_s3, moto_bucket))
    assert not any(m == "PUT" and "/a.bin/" in p for m, p, _ in s3_proxy.writes())


def test_a_changed_source_file_is_sent_again_and_only_it(
    tmp_path: Path, moto_s3: S3Server, s3_proxy: S3Proxy, moto_bucket: str, config: Path
) -> None:
    folder = tmp_path / "plate7"
    folder.mkdir()
    files = {"a.csv": b"a" * 4000, "b.bin": os.urandom(7 * MiB), "c.txt": b"ccc"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    first = ferry(moto_s3, s3_proxy, config, f"dir:{folder}", "cpg")
    assert first.returncode == 0, first.stderr
    assert "3 streamed" in first.stdout

    changed = b"A" * 4000  # the same size: only the checksum tells
    (folder / "a.csv").write_bytes(changed)
    s3_proxy.reset()
    second = ferry(moto_s3, s3_proxy, config, f"dir:{folder}", "cpg")
    assert second.returncode == 0, second.stderr
    assert "1 streamed (4000 bytes)" in second.stdout and "2 already there" in second.stdout
    assert "latest/: 1 copied, 0 removed" in second.stdout
    data_writes = [p for m, p, _ in s3_proxy.writes() if m == "PUT" and "/content" in p]
    assert data_writes and all("/a.csv/content" in p for p in data_writes), data_writes
    held = bodies(moto_s3, moto_bucket)
    assert held[f"{PREFIX}/plate7/a.csv/content"] == changed
    assert held[f"{PREFIX}/latest/a.csv/content"] == changed
    assert held[f"{PREFIX}/latest/b.bin/content"] == files["b.bin"]
    stored = moto_s3.sync_client().head_object(Bucket=moto_bucket, Key=f"{PREFIX}/plate7/a.csv/content")
    assert stored["Metadata"]["ferry-md5"] == hashlib.md5(changed).hexdigest()
