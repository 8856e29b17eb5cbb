"""``ferry push DIR --target S3NAME``: a directory into an S3 prefix (``plain`` layout),
through the same command and pipeline as Zenodo; what reaches the server is counted by a
proxy in front of moto."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_s3 import S3Proxy, S3Server
from tests.test_s3_target import objects, uploads

MiB = 1024 * 1024
PREFIX = "cart/run3"


def ferry(server: S3Server, proxy: S3Proxy, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= server.env() | {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    env |= {"AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL_S3": proxy.endpoint_url}
    cmd = [sys.executable, "-m", "ferry.cli", "--config", str(config), "push", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def bucket(moto_s3: S3Server) -> str:
    return moto_s3.make_bucket()


@pytest.fixture
def config(tmp_path: Path, s3_proxy: S3Proxy, bucket: str) -> Path:
    path = tmp_path / "ferry.toml"
    path.write_text(
        f'[targets.cart]\ntype = "s3"\nurl = "s3://{bucket}/{PREFIX}"\nlayout = "plain"\n'
        f'endpoint_url = "{s3_proxy.endpoint_url}"\nmultipart_threshold = 6291456\npart_size = 5242880\n'
    )
    return path


def make_dir(base: Path, files: dict[str, bytes]) -> Path:
    d = base / "out"
    for name, data in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return d


def stored(server: S3Server, bucket: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    client = server.sync_client()
    out = {}
    for key in objects(server, bucket):
        got = client.get_object(Bucket=bucket, Key=key)
        out[key] = (got["Body"].read(), got["Metadata"])
    return out


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sent_bytes(proxy: S3Proxy) -> list[str]:
    """Object paths that got bytes (single PUTs and parts; not the lock, there is none)."""
    return [p.split("?")[0] for m, p, status in proxy.writes() if m == "PUT" and status < 300]


def test_push_twice_changed_file_replaced_and_dry_run(
    tmp_path: Path, moto_s3: S3Server, s3_proxy: S3Proxy, bucket: str, config: Path
) -> None:
    files = {
        "catalog.yaml": b"id: run3\n",
        "tiles/a.pmtiles": os.urandom(7 * MiB),  # multipart
        "tiles/b.pmtiles": b"b" * 5000,
        "genes.tsv": b"g\t1\n" * 100,
    }
    d = make_dir(tmp_path, files)
    dry = ferry(moto_s3, s3_proxy, config, str(d), "--target", "cart", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "4 to send" in dry.stdout and s3_proxy.writes() == [] and objects(moto_s3, bucket) == {}

    first = ferry(moto_s3, s3_proxy, config, str(d), "--target", "cart", "--jobs", "3")
    assert first.returncode == 0, first.stderr
    assert "4 sent, 0 already there" in first.stdout
    held = stored(moto_s3, bucket)
    assert set(held) == {f"{PREFIX}/{k}" for k in files}  # plain layout: <prefix>/<relative path>
    for key, data in files.items():
        body, meta = held[f"{PREFIX}/{key}"]
        assert body == data and meta["ferry-md5"] == md5(data) and meta["ferry-size"] == str(len(data))
    assert uploads(moto_s3, bucket) == []

    s3_proxy.reset()
    second = ferry(moto_s3, s3_proxy, config, str(d), "--target", "cart")
    assert second.returncode == 0, second.stderr
    assert "0 sent, 4 already there" in second.stdout
    assert s3_proxy.writes() == []  # the second push sends 0 bytes (and writes nothing at all)

    changed = b"B" * 5000  # same size, other bytes
    (d / "tiles/b.pmtiles").write_bytes(changed)
    s3_proxy.reset()
    dry = ferry(moto_s3, s3_proxy, config, str(d), "--target", "cart", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "replace tiles/b.pmtiles" in dry.stdout and "1 to send" in dry.stdout
    assert s3_proxy.writes() == []
    third = ferry(moto_s3, s3_proxy, config, str(d), "--target", "cart")
    assert third.returncode == 0, third.stderr
    assert "1 sent, 3 already there" in third.stdout
    assert sent_bytes(s3_proxy) == [f"/{bucket}/{PREFIX}/tiles/b.pmtiles"]
    body, meta = stored(moto_s3, bucket)[f"{PREFIX}/tiles/b.pmtiles"]
    assert body == changed and meta["ferry-md5"] == md5(changed)


def test_select_files_and_a_foreign_object_is_replaced_not_trusted(
    tmp_path: Path, moto_s3: S3Server, s3_proxy: S3Proxy, bucket: str, config: Path
) -> None:
    d = make_dir(tmp_path, {"a.h5": b"a" * 100, "b.h5": b"b" * 100, "c.h5": b"c" * 100})
    # An object someone else put at a.h5's key, with other bytes and no ferry metadata.
    moto_s3.sync_client().put_object(Bucket=bucket, Key=f"{PREFIX}/a.h5", Body=b"x" * 100)
    run = ferry(moto_s3, s3_proxy, config, str(d), "--target", "cart", "--select", "files", "--files", "a.h5", "b.h5")
    assert run.returncode == 0, run.stderr
    held = stored(moto_s3, bucket)
    assert set(held) == {f"{PREFIX}/a.h5", f"{PREFIX}/b.h5"}
    assert held[f"{PREFIX}/a.h5"][0] == b"a" * 100
