"""``ferry sandbox`` starts an S3 server too, and the ``[targets.s3-sandbox*]`` sections it
prints work as printed: with no AWS settings in the environment or in ``~/.aws``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sandbox.s3 import BUCKET, S3Sandbox


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # No credentials anywhere but the file the sandbox names in its sections.
    return env | {
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "HOME": str(tmp_path),
    }


def printed_toml(lines: list[str]) -> str:
    start = next(i for i, line in enumerate(lines) if line.startswith("ferry.toml (save it"))
    end = next(i for i, line in enumerate(lines) if line.startswith("try, in another shell"))
    return textwrap.dedent("".join(lines[start + 1 : end]))


def test_sandbox_serves_s3_and_its_printed_sections_work(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    env = clean_env(tmp_path)
    cmd = [sys.executable, "-m", "ferry.cli", "sandbox", "--workdir", str(tmp_path / "sb"), "--no-repository"]
    cmd += ["--recids", "80509", "--scale", "0.0001", "--ready-file", str(ready)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C stops the sandbox"):
                break
        assert lines and lines[-1].startswith("Ctrl-C"), "".join(lines) + (proc.stderr.read() if proc.poll() else "")
        while not ready.exists() and time.monotonic() < deadline:  # written just after the banner
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        toml = printed_toml(lines)
        assert "[targets.s3-sandbox]" in toml and 'layout = "versioned"' in toml
        assert f'endpoint_url = "{info["s3_endpoint_url"]}"' in toml
        config = tmp_path / "ferry.toml"
        config.write_text(toml)

        folder = tmp_path / "cart"
        (folder / "tiles").mkdir(parents=True)
        (folder / "tiles" / "a.pmtiles").write_bytes(b"a" * 4000)
        (folder / "catalog.yaml").write_text("id: cart\n")
        ferry = [sys.executable, "-m", "ferry.cli", "--config", str(config)]
        push = subprocess.run(
            [*ferry, "push", str(folder), "--target", "s3-sandbox-push"], env=env, capture_output=True, text=True
        )
        assert push.returncode == 0, push.stderr
        assert "2 sent" in push.stdout

        held = S3Sandbox(tmp_path / "unused", port=int(info["s3_endpoint_url"].rsplit(":", 1)[1])).client()
        listed = held.list_objects_v2(Bucket=BUCKET, Prefix="push/").get("Contents") or []
        assert sorted(o["Key"] for o in listed) == ["push/catalog.yaml", "push/tiles/a.pmtiles"]
        body = held.get_object(Bucket=BUCKET, Key="push/tiles/a.pmtiles")["Body"].read()
        assert body == b"a" * 4000
        s3_pid = int(info["s3_pid"])
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    with pytest.raises(ProcessLookupError):  # the S3 server stopped with the sandbox
        for _ in range(50):
            os.kill(s3_pid, 0)
            time.sleep(0.1)
