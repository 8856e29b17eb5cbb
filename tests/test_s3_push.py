"""``ferry push DIR --target S3NAME``: a directory into an S3 prefix (``plain`` layout),
through the same command and pipeline as Zenodo; what reaches the server is counted by a
proxy in front of moto."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.fixtures_s3 import S3Proxy, S3Server, ferry_through, proxied_target
from tests.test_push import make_dir, md5
from tests.test_s3_target import objects, uploads

MiB = 1024 * 1024
PREFIX = "cart/run3"


def ferry(server: S3Server, proxy: S3Proxy, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return ferry_through(server, proxy, config, "push", *args)


@pytest.fixture
def config(tmp_path: Path, s3_proxy: S3Proxy, moto_bucket: str) -> Path:
    path = tmp_path / "ferry.toml"
    path.write_text(proxied_target("cart", f"s3://{moto_bucket}/{PREFIX}", s3_proxy, layout="plain"))
    return path


def stored(server: S3Server, bucket: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    client = server.sync_client()
    out = {}
    for key in objects(server, bucket):
        got = client.get_object(Bucket=bucket, Key=key)
        out[key] = (got["Body"].read(), got["Metadata"])
    return out


def sent_bytes(proxy: S3Proxy) -> list[str]:
    """Object paths that got bytes (single PUTs and parts; not the lock, there is none)."""
    return [p.split("?")[0] for m, p, status in proxy.writes() if m == "PUT" and status < 300]


def test_push_twice_changed_file_replaced_and_dry_run(
    tmp_path: Path, moto_s3: S3Server, s3_proxy: S3Proxy, moto_bucket: str, config: Path
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
    assert "4 to send" in dry.stdout and s3_proxy.writes() == [] and objects(moto_s3, moto_bucket) == {}

    first = ferry(moto_s3, s3_proxy, config, str(d), "--target", "cart", "--jobs", "3")
    assert first.returncode == 0, first.stderr
    assert "4 sent, 0 already there" in first.stdout
    held = stored(moto_s3, moto_bucket)
    assert set(held) == {f"{PREFIX}/{k}" for k in files}  # plain layout: <prefix>/<relative path>
    for key, data in files.items():
        body, meta = held[f"{PREFIX}/{key}"]
        assert body == data and meta["ferry-md5"] == md5(data) and meta["ferry-size"] == str(len(data))
    assert uploads(moto_s3, moto_bucket) == []

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
    assert sent_bytes(s3_proxy) == [f"/{moto_bucket}/{PREFIX}/tiles/b.pmtiles"]
    body, meta = stored(moto_s3, moto_bucket)[f"{PREFIX}/tiles/b.pmtiles"]
    assert body == changed and meta["ferry-md5"] == md5(changed)


def test_select_files_and_a_foreign_object_is_replaced_not_trusted(
    tmp_path: Path, moto_s3: S3Server, s3_proxy: S3Proxy, moto_bucket: str, config: Path
) -> None:
    d = make_dir(tmp_path, {"a.h5": b"a" * 100, "b.h5": b"b" * 100, "c.h5": b"c" * 100})
    # An object someone else put at a.h5's key, with other bytes and no ferry metadata.
    moto_s3.sync_client().put_object(Bucket=moto_bucket, Key=f"{PREFIX}/a.h5", Body=b"x" * 100)
    run = ferry(moto_s3, s3_proxy, config, str(d), "--target", "cart", "--select", "files", "--files", "a.h5", "b.h5")
    assert run.returncode == 0, run.stderr
    held = stored(moto_s3, moto_bucket)
    assert set(held) == {f"{PREFIX}/a.h5", f"{PREFIX}/b.h5"}
    assert held[f"{PREFIX}/a.h5"][0] == b"a" * 100


def test_a_lost_create_answer_leaves_no_open_upload(
    tmp_path: Path, moto_s3: S3Server, s3_proxy: S3Proxy, moto_bucket: str, config: Path
) -> None:
    # The create-multipart request reaches moto (the upload exists) and its answer is lost;
    # botocore sends it again and the push goes on with the second upload. The first one's
    # id never came back, so no abort of the push knew it: it held its parts until the next
    # run (the cause of test_target_down_for_a_while_then_back[s3] failing now and then).
    data = os.urandom(7 * MiB)  # multipart
    d = make_dir(tmp_path, {"tiles/a.pmtiles": data})
    s3_proxy.configure(faulty=lambda method, path: method == "POST" and path.endswith("?uploads"), lost_next=1)
    done = ferry(moto_s3, s3_proxy, config, str(d), "--target", "cart")
    assert done.returncode == 0, done.stderr
    creates = [r for r in s3_proxy.log if r["method"] == "POST" and r["path"].endswith("?uploads")]
    assert [r["fault"] for r in creates] == ["lost", ""], creates  # lost for certain, then sent again
    body, meta = stored(moto_s3, moto_bucket)[f"{PREFIX}/tiles/a.pmtiles"]
    assert body == data and meta["ferry-md5"] == md5(data)
    assert uploads(moto_s3, moto_bucket) == []


def test_a_push_to_a_fresh_prefix_heads_nothing(
    tmp_path: Path, moto_s3: S3Server, s3_proxy: S3Proxy, moto_bucket: str, config: Path
) -> None:
    """Every put is proved by its answer's ETag, so the final check is one LIST (its sizes
    and ETags are those puts'), and the check before it finds nothing to HEAD: no HEAD at
    all, whether the md5s are hashed while sending (the first push) or already known (the
    cache of that push, pushing again to another prefix). The files are still verified:
    a second push to the first prefix skips all of them by their stored md5s."""
    files = {"catalog.yaml": b"id: run3\n", "tiles/a.pmtiles": os.urandom(7 * MiB), "genes.tsv": b"g\t1\n" * 100}
    d = make_dir(tmp_path, files)
    first = ferry(moto_s3, s3_proxy, config, str(d), "--target", "cart")
    assert first.returncode == 0, first.stderr
    assert "3 sent, 0 already there" in first.stdout
    assert [r for r in s3_proxy.requests if r[0] == "HEAD"] == []

    other = tmp_path / "other.toml"
    other.write_text(proxied_target("cart", f"s3://{moto_bucket}/elsewhere", s3_proxy, layout="plain"))
    s3_proxy.reset()
    cached = ferry(moto_s3, s3_proxy, other, str(d), "--target", "cart")
    assert cached.returncode == 0, cached.stderr
    assert "3 sent, 0 already there" in cached.stdout
    assert [r for r in s3_proxy.requests if r[0] == "HEAD"] == []
    assert stored(moto_s3, moto_bucket)["elsewhere/tiles/a.pmtiles"][1]["ferry-md5"] == md5(files["tiles/a.pmtiles"])

    s3_proxy.reset()
    again = ferry(moto_s3, s3_proxy, config, str(d), "--target", "cart")
    assert again.returncode == 0, again.stderr
    assert "0 sent, 3 already there" in again.stdout and s3_proxy.writes() == []
