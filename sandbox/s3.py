"""An S3 server for the sandbox: ``moto_server`` (the ``moto[server]`` package) on 127.0.0.1.

moto keeps every object in memory (it is gone when the sandbox stops) and checks AWS's
rules for metadata, multipart parts and copies, which is what a try-out needs. It takes
any credentials, but the AWS chain needs some: the sandbox writes its own shared
credentials file and names it in the target section (``credentials_file``), so neither
``~/.aws`` nor the environment is touched.

    with S3Sandbox(workdir) as s3:
        print("\\n".join(s3.toml()))
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
BUCKET = "ferry-sandbox"
PROFILE = "ferry-sandbox"
REGION = "us-east-1"
S3_TARGET = "s3-sandbox"  # versioned layout: what ``ferry mirror`` writes
S3_PUSH_TARGET = "s3-sandbox-push"  # plain layout: what ``ferry push DIR`` writes
START_TIMEOUT = 60.0
# Fixed and harmless: moto checks no signature; they only satisfy the credential chain.
ACCESS_KEY, SECRET_KEY = "sandbox", "sandbox-secret"


class S3SandboxError(RuntimeError):
    pass


def available() -> bool:
    """Whether moto's server can run here (it comes with the test requirements)."""
    return importlib.util.find_spec("moto") is not None and importlib.util.find_spec("flask") is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class S3Sandbox:
    def __init__(self, workdir: Path, *, port: int = 0) -> None:
        self.workdir = Path(workdir)
        self.port = port or _free_port()
        self.endpoint_url = f"http://{HOST}:{self.port}"
        self.credentials_file = self.workdir / "aws-credentials"
        self.log_path = self.workdir / "moto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> S3Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if not available():
            raise S3SandboxError("the S3 sandbox needs moto[server] (pip install 'moto[server]')")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.credentials_file.write_text(
            f"[{PROFILE}]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        )
        self.credentials_file.chmod(0o600)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            self._wait_ready()
            self.client().create_bucket(Bucket=BUCKET)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise S3SandboxError(f"moto_server exited with {self._proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(self.endpoint_url + "/", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise S3SandboxError(f"moto_server not answering on {self.endpoint_url} after {START_TIMEOUT:.0f}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def client(self) -> Any:
        """A plain botocore client on the sandbox server (to look at what it holds)."""
        import botocore.session
        from botocore.config import Config

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def toml(self) -> list[str]:
        """``[targets.s3-sandbox]`` (versioned, for ``ferry mirror``) and a plain one for ``ferry push``."""
        common = [
            f'endpoint_url = "{self.endpoint_url}"',
            f'aws_profile = "{PROFILE}"',
            f'credentials_file = "{self.credentials_file}"',
        ]
        return [
            f"[targets.{S3_TARGET}]",
            'type = "s3"',
            f'url = "s3://{BUCKET}/mirror"',
            'layout = "versioned"',
            *common,
            "",
            f"[targets.{S3_PUSH_TARGET}]",
            'type = "s3"',
            f'url = "s3://{BUCKET}/push"',
            'layout = "plain"',
            *common,
            "",
        ]

    def info(self) -> dict[str, str]:
        return {
            "s3_endpoint_url": self.endpoint_url,
            "s3_bucket": BUCKET,
            "s3_credentials_file": str(self.credentials_file),
            "s3_profile": PROFILE,
            "s3_pid": str(self._proc.pid if self._proc is not None else ""),
        }


__all__ = ["BUCKET", "S3_PUSH_TARGET", "S3_TARGET", "S3Sandbox", "S3SandboxError", "available"]
