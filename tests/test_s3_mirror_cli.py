"""``ferry mirror`` as a user runs it: a subprocess, the Zenodo stand-in, a real S3 server;
and a mirror killed with SIGKILL half way, then run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures_s3 import S3Server
from tests.fixtures_zenodo import ZenodoHandle
from tests.test_s3_target import objects, uploads
from tests.test_zenodo_source import publish

MiB = 1024 * 1024


def _command(server: S3Server, config: Path, args: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= server.env() | {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return [sys.executable, "-m", "ferry.cli", "--config", str(config), "mirror", *args], env


def ferry(server: S3Server, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd, env = _command(server, config, args)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def ferry_started(server: S3Server, config: Path, *args: str) -> subprocess.Popen[str]:
    cmd, env = _command(server, config, args)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def config(tmp_path: Path, zenodo: ZenodoHandle, s3_server: S3Server) -> Path:
    path = tmp_path / "ferry.toml"
    path.write_text(
        f'[source.zenodo]\nurl = "{zenodo.url}"\n\n'
        f'[targets.cpg]\ntype = "s3"\nurl = "s3://BUCKET/cpg0042/jump_rr"\nendpoint_url = "{s3_server.endpoint_url}"\n'
        "multipart_threshold = 6291456\npart_size = 5242880\n"
    )
    return path


def test_mirror_cli_twice_dry_run_and_unknown_only(
    zenodo: ZenodoHandle, s3_server: S3Server, s3_bucket: str, config: Path
) -> None:
    config.write_text(config.read_text().replace("BUCKET", s3_bucket))
    rec = publish(zenodo, {"a.parquet": b"A" * 3000, "b.parquet": os.urandom(7 * MiB)})
    spec = f"zenodo:concept:{rec['conceptrecid']}"

    dry = ferry(s3_server, config, spec, "cpg", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "stream a.parquet" in dry.stdout and "nothing written" in dry.stdout
    assert objects(s3_server, s3_bucket) == {}

    unknown = ferry(s3_server, config, spec, "cpg", "--only", "c.parquet")
    assert unknown.returncode == 2 and "c.parquet" in unknown.stderr and "a.parquet, b.parquet" in unknown.stderr

    first = ferry(s3_server, config, spec, "cpg")
    assert first.returncode == 0, first.stderr
    assert "2 streamed" in first.stdout and "latest/: 2 copied" in first.stdout
    held = objects(s3_server, s3_bucket)
    rid = rec["id"]
    assert set(held) == {
        f"cpg0042/jump_rr/{rid}/a.parquet/content",
        f"cpg0042/jump_rr/{rid}/b.parquet/content",
        "cpg0042/jump_rr/latest/a.parquet/content",
        "cpg0042/jump_rr/latest/b.parquet/content",
        "cpg0042/jump_rr/latest/_manifest.json",
    }
    second = ferry(s3_server, config, spec, f"s3://{s3_bucket}/cpg0042/jump_rr")  # a URL works too
    assert second.returncode == 0, second.stderr
    assert "0 streamed (0 bytes)" in second.stdout and "2 already there" in second.stdout
    assert "latest/: 0 copied, 0 removed" in second.stdout
    assert objects(s3_server, s3_bucket) == held


def test_kill_9_mid_mirror_then_run_again(
    zenodo: ZenodoHandle, s3_server: S3Server, s3_bucket: str, config: Path
) -> None:
    config.write_text(config.read_text().replace("BUCKET", s3_bucket))
    files = {f"f{i:02d}.bin": os.urandom(7 * MiB) for i in range(8)}
    rec = publish(zenodo, files)
    zenodo.configure(latency_ms=300)  # slow enough to be caught half way
    proc = ferry_started(s3_server, config, f"zenodo:{rec['id']}", "cpg", "--jobs", "2")
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = [k for k in objects(s3_server, s3_bucket) if k.endswith("/content")]
            if done and uploads(s3_server, s3_bucket):
                break  # some files complete, another one half sent
            time.sleep(0.05)
        assert proc.poll() is None, f"the mirror ended before it could be killed: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    assert not any(k.startswith("cpg0042/jump_rr/latest/") for k in objects(s3_server, s3_bucket))
    zenodo.configure(latency_ms=0)

    again = ferry(s3_server, config, f"zenodo:{rec['id']}", "cpg")  # the dead holder's lock is taken over
    assert again.returncode == 0, again.stderr
    held = objects(s3_server, s3_bucket)
    version = {k for k in held if k.startswith(f"cpg0042/jump_rr/{rec['id']}/")}
    assert version == {f"cpg0042/jump_rr/{rec['id']}/{k}/content" for k in files}
    assert uploads(s3_server, s3_bucket) == []  # the killed run's unfinished upload was aborted
    assert "cpg0042/jump_rr/.ferry-mirror.lock" not in held
    client = s3_server.sync_client()
    for key, data in files.items():
        body = client.get_object(Bucket=s3_bucket, Key=f"cpg0042/jump_rr/latest/{key}/content")["Body"].read()
        assert body == data
