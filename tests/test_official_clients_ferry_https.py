"""ferry itself against the sandbox over HTTPS (its own CA), with TLS verification on.

`targets.X.ca_file` trusts the sandbox CA; without it the same run must fail on the
certificate (proof that verification is really on), and NRP's single-PUT cap must not
trip ferry's multipart threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ferry.core.config import TargetConfig
from sandbox.repository_options import NRP_SINGLE_PUT, RepositoryOptions
from tests.fixtures_repository import RepositoryHandle
from tests.fixtures_xrootd import SandboxSource
from tests.test_pipeline import run_ferry, write_config


@pytest.fixture(autouse=True)
def _no_ambient_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only ca_file may make ferry trust the sandbox CA in these tests.
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def _upload(config: Path, recid: str, tmp_path: Path) -> int:
    return run_ferry(config, "upload", recid, "--target", "sandbox", "--dest", str(tmp_path / "data"))


def test_ferry_upload_over_https_with_ca_file(
    tmp_path: Path,
    sandbox_source: SandboxSource,
    https_repository: RepositoryHandle,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = https_repository
    assert repo.url.startswith("https://") and repo.ca_file is not None and repo.ca_file.is_file()
    recid = sandbox_source.cases["plain"]

    (tmp_path / "untrusted").mkdir()
    untrusted = write_config(tmp_path / "untrusted", sandbox_source, repo)
    assert _upload(untrusted, recid, tmp_path / "untrusted") != 0
    err = capsys.readouterr().err
    assert "certificate" in err.lower() or "ssl" in err.lower(), err
    assert repo.state()["drafts"] == 0  # nothing was written without a verified connection

    config = write_config(tmp_path, sandbox_source, repo, ca_file=str(repo.ca_file))
    code = _upload(config, recid, tmp_path)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"record {recid}: ok" in out.out
    assert repo.state()["by_recid"][recid]["drafts"] + repo.state()["by_recid"][recid]["records"] == 1


def test_ca_file_that_does_not_exist_is_a_config_error(
    tmp_path: Path,
    sandbox_source: SandboxSource,
    https_repository: RepositoryHandle,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, sandbox_source, https_repository, ca_file=str(tmp_path / "missing.pem"))
    assert _upload(config, sandbox_source.cases["plain"], tmp_path) == 2
    assert "targets.sandbox.ca_file" in capsys.readouterr().err


def test_nrp_single_put_cap_meets_ferrys_multipart_threshold() -> None:
    # On by default in NRP mode, and exactly where ferry starts sending multipart: a file
    # ferry sends in one PUT is never over the cap.
    assert RepositoryOptions().single_put_cap() == NRP_SINGLE_PUT
    assert RepositoryOptions(nrp=False).single_put_cap() == 0
    defaults: Any = TargetConfig.__dataclass_fields__
    assert defaults["multipart_threshold"].default <= NRP_SINGLE_PUT


def test_ferry_goes_multipart_above_the_cap(
    tmp_path: Path,
    sandbox_source: SandboxSource,
    repository_factory: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The same rule at a small scale: cap and threshold both below the case's biggest file.
    recid = sandbox_source.cases["plain"]
    sizes = [int(f["size"]) for f in sandbox_source.record(recid)["files"]]
    cap = max(sizes) - 1
    repo = repository_factory(max_single_put=cap)
    config = write_config(tmp_path, sandbox_source, repo, multipart_threshold=cap, part_size=cap)
    code = _upload(config, recid, tmp_path)
    assert code == 0, capsys.readouterr().err
    rows = [r for r in repo.requests_log() if r["method"] == "PUT" and "/content" in r["path"]]
    whole = [r for r in rows if r["path"].endswith("/content")]
    parts = [r for r in rows if not r["path"].endswith("/content")]
    assert parts, "the biggest file should have gone multipart"
    assert all(r["request_bytes"] <= cap for r in whole)
    assert all(r["status"] == 200 for r in rows)
