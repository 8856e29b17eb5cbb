"""kill -9 at random moments, then the same ``ferry mirror`` again (issue 16, section 5): the
Zenodo stand-in -> S3 on moto, a first version and then a new one (a file changed, one
added, one removed), each killed ``KILLS`` times (1 in CI, 10 with ``--long``) at a random
moment: an object written, a multipart upload open, or ``latest/`` being updated.

Then, read with boto: each version's folder holds exactly its files with the source's
bytes; ``latest/`` holds exactly the newest version's files and a manifest naming it;
nothing else (no twin folder, no stray key), no open multipart upload, no lock left.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_s3 import S3Server
from tests.fixtures_zenodo import ZenodoHandle
from tests.reliability.kill_support import Rounds, exactly, kill_rounds, md5, s3_objects, s3_open_uploads
from tests.reliability.options import rounds
from tests.test_s3_mirror import new_version
from tests.test_zenodo_source import publish

MiB = 1024 * 1024
PREFIX = "mirror/kill"


@pytest.fixture
def kills(long_run: bool) -> int:
    return rounds(long_run, 1, 10)


def _env(server: S3Server) -> dict[str, str]:
    return {
        **server.env(),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _config(tmp_path: Path, zen: ZenodoHandle, server: S3Server, bucket: str) -> Path:
    path = tmp_path / "ferry.toml"
    path.write_text(
        f'[source.zenodo]\nurl = "{zen.url}"\n\n'
        f'[targets.m]\ntype = "s3"\nurl = "s3://{bucket}/{PREFIX}"\nendpoint_url = "{server.endpoint_url}"\n'
        "multipart_threshold = 5242880\npart_size = 5242880\n\n"
        "[limits]\nbackoff_base = 0.05\nbackoff_max = 0.5\nretries = 3\n"
    )
    return path


def _folder(held: dict[str, bytes], folder: str) -> list[tuple[str, str]]:
    start = f"{PREFIX}/{folder}/"
    return [
        (k[len(start) :].removesuffix("/content"), md5(v))
        for k, v in held.items()
        if k.startswith(start) and k.endswith("/content")
    ]


def test_mirror_killed_at_random_moments_then_run_again(
    tmp_path: Path, zenodo_factory: Callable[..., ZenodoHandle], moto_s3: S3Server, kills: int
) -> None:
    zen = zenodo_factory(latency_ms=40)
    bucket = moto_s3.make_bucket()
    config, log, env = _config(tmp_path, zen, moto_s3, bucket), tmp_path / "ferry.log", _env(moto_s3)
    client = moto_s3.sync_client()

    def stored() -> bool:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/").get("Contents") or []
        return any(o["Key"].endswith("/content") for o in listed if "/latest/" not in o["Key"])

    def open_upload() -> bool:
        return bool(s3_open_uploads(moto_s3, bucket))

    def latest_moving() -> bool:
        return client.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/latest/").get("KeyCount", 0) > 0

    v1_files = {f"f{i}.parquet": os.urandom(6 * MiB if i < 3 else 300_000 + i) for i in range(6)}
    v1 = publish(zen, v1_files)
    args = ["--config", str(config), "mirror", f"zenodo:{v1['id']}", "m", "--jobs", "2"]
    done = kill_rounds(args, log, kills=kills, moments=[stored, open_upload], seed=12, env=env)
    _check_rounds(done, log)

    # A new version: one file changed, one added, one removed; latest/ has to move.
    v2_put = {"f1.parquet": os.urandom(6 * MiB), "g.parquet": os.urandom(700_000)}
    v2 = new_version(zen, v1, v2_put, ["f4.parquet"])
    v2_files = {k: v for k, v in v1_files.items() if k != "f4.parquet"} | v2_put
    args = ["--config", str(config), "mirror", f"zenodo:{v2}", "m", "--jobs", "2"]
    moments = [stored, open_upload, lambda: latest_moving() and _manifest_names(client, bucket) != v2]
    done = kill_rounds(args, log, kills=kills, moments=moments, seed=13, env=env)
    _check_rounds(done, log)

    held = s3_objects(moto_s3, bucket)
    want = {rid: {k: md5(v) for k, v in files.items()} for rid, files in ((str(v1["id"]), v1_files), (v2, v2_files))}
    problems = [p for rid, files in want.items() for p in exactly(files, _folder(held, rid), rid)]
    problems += exactly(want[v2], _folder(held, "latest"), "latest")
    expected = {f"{PREFIX}/{rid}/{k}/content" for rid, files in want.items() for k in files}
    expected |= {f"{PREFIX}/latest/{k}/content" for k in v2_files} | {f"{PREFIX}/latest/_manifest.json"}
    problems += [f"stray object {k}" for k in sorted(set(held) - expected)]  # incl. a lock left behind
    problems += [f"open multipart upload {k}" for k in s3_open_uploads(moto_s3, bucket)]
    assert problems == [], log.read_text(errors="replace")[-3000:]
    manifest = json.loads(held[f"{PREFIX}/latest/_manifest.json"])
    assert manifest["record_id"] == v2 and sorted(f["key"] for f in manifest["files"]) == sorted(v2_files)


def _manifest_names(client: Any, bucket: str) -> str | None:
    """The version latest/'s manifest names (None before the first is written)."""
    try:
        body = client.get_object(Bucket=bucket, Key=f"{PREFIX}/latest/_manifest.json")["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return str(json.loads(body)["record_id"])


def _check_rounds(done: Rounds, log: Path) -> None:
    text = log.read_text(errors="replace")
    assert done.final_rc == 0, text[-3000:]
    assert done.killed >= 1, f"no kill landed while the mirror ran: {done}"
    assert "Traceback" not in text, text[-3000:]
    print(f"mirror kill rounds: {done.killed} killed, {done.finished_first} finished first")  # shown with -s
