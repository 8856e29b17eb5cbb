"""``ferry mirror`` when the source keeps serving a file short (issue 12: "a truncated source
stream ... object never completed, no object left with a wrong checksum").

A cutting proxy (tests/fixtures_zenodo.CuttingProxy) sits in front of the Zenodo stand-in
and closes every download of two files of a new version early, and every resume of them at
once, so neither the stream's resumes nor the mirror's fresh tries can save them: one goes
as a multipart upload (over SMALL_PARTS' threshold), one as a single PUT. The run must fail
naming both (exit 1), complete the version's other files, leave no object and no open
multipart upload for the short ones, and leave latest/ on the version before; once the
source is healthy, the same command completes the version and switches latest/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures_s3 import SMALL_PARTS, S3Server
from tests.fixtures_zenodo import CuttingProxy, ZenodoHandle
from tests.test_s3_mirror import new_version
from tests.test_s3_target import objects, uploads
from tests.test_zenodo_source import publish

MiB = 1024 * 1024
PREFIX = "jump"


def _config(tmp_path: Path, zen: ZenodoHandle, server: S3Server, bucket: str) -> Path:
    path = tmp_path / "ferry.toml"
    path.write_text(
        f'[source.zenodo]\nurl = "{zen.url}"\n\n'
        f'[targets.cpg]\ntype = "s3"\nurl = "s3://{bucket}/{PREFIX}"\nendpoint_url = "{server.endpoint_url}"\n'
        f"multipart_threshold = {SMALL_PARTS['multipart_threshold']}\npart_size = {SMALL_PARTS['part_size']}\n\n"
        # One fresh try per file after the first (each with its own resumes), short waits.
        "[limits]\nretries = 1\nbackoff_base = 0.05\nbackoff_max = 0.5\n"
    )
    return path


def mirror(server: S3Server, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= server.env() | {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    cmd = [sys.executable, "-m", "ferry.cli", "--config", str(config), "mirror", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def body(server: S3Server, bucket: str, key: str) -> bytes:
    data: bytes = server.sync_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def test_a_source_that_stays_short_fails_the_file_and_latest_stays(
    tmp_path: Path, cut_zenodo: tuple[ZenodoHandle, CuttingProxy], moto_s3: S3Server
) -> None:
    zen, cutter = cut_zenodo
    bucket = moto_s3.make_bucket()
    config = _config(tmp_path, zen, moto_s3, bucket)
    v1_files = {"short.bin": os.urandom(9 * MiB), "gone.txt": b"old"}
    v1 = publish(zen, v1_files)
    spec = f"zenodo:concept:{v1['conceptrecid']}"
    first = mirror(moto_s3, config, spec, "cpg")
    assert first.returncode == 0, first.stderr
    v1_latest = {k: v for k, v in objects(moto_s3, bucket).items() if k.startswith(f"{PREFIX}/latest/")}
    assert set(v1_latest) == {f"{PREFIX}/latest/{k}/content" for k in v1_files} | {f"{PREFIX}/latest/_manifest.json"}

    # A new version: short.bin changed (9 MiB: multipart), tiny.bin new (3 MiB: one PUT),
    # big.bin and ok.txt healthy (big.bin multipart too), gone.txt removed.
    v2_files = {
        "short.bin": os.urandom(9 * MiB),
        "tiny.bin": os.urandom(3 * MiB + 11),
        "big.bin": os.urandom(7 * MiB),
        "ok.txt": b"fine",
    }
    v2 = new_version(zen, v1, v2_files, ["gone.txt"])
    # Every download of short.bin dies at 6 MiB, of tiny.bin at 1 MiB; every resume of either
    # 256 KiB in: the source serves them short, always.
    cutter.by_file = {"short.bin": (6 * MiB, 256 * 1024), "tiny.bin": (1 * MiB, 256 * 1024)}
    failed = mirror(moto_s3, config, spec, "cpg")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("ferry: error:")]
    assert sorted(line.split(", file ")[1].split(":")[0] for line in errors) == ["short.bin", "tiny.bin"], errors
    assert all(f"record {v2}" in line for line in errors)
    assert "latest/ unchanged" in failed.stdout

    held = objects(moto_s3, bucket)
    version = {k for k in held if k.startswith(f"{PREFIX}/{v2}/")}
    assert version == {f"{PREFIX}/{v2}/big.bin/content", f"{PREFIX}/{v2}/ok.txt/content"}  # the others complete
    for key in ("big.bin", "ok.txt"):
        assert body(moto_s3, bucket, f"{PREFIX}/{v2}/{key}/content") == v2_files[key]
    assert uploads(moto_s3, bucket) == []  # short.bin's multipart uploads all aborted
    # latest/ still shows v1, byte for byte, and its manifest says so.
    assert {k: v for k, v in held.items() if k.startswith(f"{PREFIX}/latest/")} == v1_latest
    assert body(moto_s3, bucket, f"{PREFIX}/latest/short.bin/content") == v1_files["short.bin"]
    assert json.loads(body(moto_s3, bucket, f"{PREFIX}/latest/_manifest.json"))["record_id"] == str(v1["id"])
    # It did try: resumed requests (Range) of both files, and more than one fresh stream each.
    for key in ("short.bin", "tiny.bin"):
        tries = [(line, r) for line, r in cutter.seen if f"/files/{key}/content " in line and f"/{v2}/" in line]
        assert sum(1 for _, r in tries if r is None) == 2, tries  # the first try and one retry
        assert any(r is not None for _, r in tries), tries

    # The source is healthy again: the same command completes the version, switches latest/.
    cutter.by_file = {}
    again = mirror(moto_s3, config, spec, "cpg")
    assert again.returncode == 0, again.stderr
    assert "2 streamed" in again.stdout and "2 already there" in again.stdout
    held = objects(moto_s3, bucket)
    for key, data in v2_files.items():
        assert body(moto_s3, bucket, f"{PREFIX}/{v2}/{key}/content") == data
        assert body(moto_s3, bucket, f"{PREFIX}/latest/{key}/content") == data
    assert f"{PREFIX}/latest/gone.txt/content" not in held
    assert json.loads(body(moto_s3, bucket, f"{PREFIX}/latest/_manifest.json"))["record_id"] == v2
    assert uploads(moto_s3, bucket) == []
