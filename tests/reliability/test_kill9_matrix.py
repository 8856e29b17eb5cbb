"""kill -9 at random moments, then the same command again, per command that writes and per
target (issue 16, section 5): 0 lost, 0 duplicated, every checksum verified.

Each case starts the command as a child process, waits until it has begun writing (files
in its folder or requests at the target), kills it after a random moment, ``KILLS`` times
(1 in CI, 10 with ``--long``), and then lets the same command finish. The target is read
back with its own tools (sandbox admin endpoints, boto, the file system) and compared
with the source's bytes: every file once, with the source's md5, nothing else.
``ferry bulk`` has its own loop in tests/test_bulk_reliability.py.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bulk_support import (
    BASE,
    SyntheticSource,
    is_content_put,
    make_record,
    synthetic_source,
    target_problems,
    write_config,
)
from tests.fixtures_repository import RepositoryHandle
from tests.fixtures_s3 import S3Server
from tests.fixtures_zenodo import ZenodoHandle
from tests.reliability.kill_support import (
    exactly,
    kill_rounds,
    md5,
    s3_objects,
    s3_open_uploads,
    tree_md5,
    zenodo_problems,
)
from tests.reliability.options import rounds

RepoFactory = Callable[..., RepositoryHandle]
ZenFactory = Callable[..., ZenodoHandle]
RECID = "976001"  # 6 files, ~8 MB: long enough for a kill to land in the download or the upload
ZIPPED = "976002"  # 24 small files: bundled before upload (a kill can hit the zip stage)
SIZES = [3_000_000, 2_500_000, 400_000, 900_000, 1_200_000, 60_000]


def _files(recid: str, sizes: list[int]) -> list[dict[str, Any]]:
    return [
        {"uri": f"root://eospublic.cern.ch/{BASE}/{recid}/f{j:02d}_{recid}.dat", "size": s, "checksum": ""}
        for j, s in enumerate(sizes)
    ]


@pytest.fixture(scope="module")
def source() -> Iterator[SyntheticSource]:
    records = [
        make_record(RECID, _files(RECID, SIZES), ["Collision"]),
        make_record(ZIPPED, _files(ZIPPED, [1_500 + 97 * j for j in range(24)]), ["Simulated"]),
    ]
    with synthetic_source(records) as src:
        yield src


@pytest.fixture
def kills(long_run: bool) -> int:
    return rounds(long_run, 1, 10)


def _config(tmp_path: Path, src: SyntheticSource, section: dict[str, Any]) -> Path:
    lines = ["[source.cernopendata]", f'portal = "{src.portal_url}"', "", "[targets.t]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in section.items()]
    lines += ["", "[limits]", "backoff_base = 0.05", "backoff_max = 0.5", "retries = 3"]
    path = tmp_path / "ferry.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _began(dest: Path) -> Callable[[], bool]:
    """The child has begun to write: a data file (or its .part) in its download folder."""
    return lambda: any(dest.glob("*/*.dat*"))


def _assert_rounds(done: Any, log: Path) -> None:
    text = log.read_text(errors="replace")
    assert done.final_rc == 0, text[-3000:]
    assert done.killed >= 1, f"no kill landed while the command ran: {done}"
    assert "Traceback" not in text, text[-3000:]


# --- ferry upload, per target ---------------------------------------------------------------


def test_upload_invenio(tmp_path: Path, source: SyntheticSource, repository_factory: RepoFactory, kills: int) -> None:
    repo = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000, latency_ms=20)
    config = write_config(tmp_path, source, repo)
    dest, log = tmp_path / "data", tmp_path / "ferry.log"
    for recid in (RECID, ZIPPED):
        args = ["--config", str(config), "upload", recid, "--target", "sandbox", "--dest", str(dest), "--publish"]
        moments = [_began(dest), lambda: any(is_content_put(r) for r in repo.requests_log())]
        done = kill_rounds(args, log, kills=kills, moments=moments, seed=int(recid))
        _assert_rounds(done, log)
    assert target_problems(repo, source, dest, [RECID, ZIPPED]) == []
    assert all(e["published"] and not e["has_draft"] for e in repo.state()["entities"])


def test_upload_zenodo(tmp_path: Path, source: SyntheticSource, zenodo_factory: ZenFactory, kills: int) -> None:
    zen = zenodo_factory(latency_ms=20)
    token = tmp_path / "zenodo.token"
    token.write_text(zen.token)
    config = _config(tmp_path, source, {"type": "zenodo", "url": zen.url, "token_file": str(token)})
    dest, log = tmp_path / "data", tmp_path / "ferry.log"
    args = ["--config", str(config), "upload", RECID, "--target", "t", "--dest", str(dest)]
    sending = lambda: any(r["method"] == "PUT" for r in zen.writes())  # noqa: E731
    done = kill_rounds(args, log, kills=kills, moments=[_began(dest), sending], seed=2)
    _assert_rounds(done, log)
    assert zenodo_problems(zen, source.source_md5(RECID)) == []


def test_upload_s3(tmp_path: Path, source: SyntheticSource, moto_s3: S3Server, kills: int) -> None:
    bucket = moto_s3.make_bucket()
    section = {"type": "s3", "url": f"s3://{bucket}/kill", "endpoint_url": moto_s3.endpoint_url}
    config = _config(tmp_path, source, {**section, "multipart_threshold": 6291456, "part_size": 5242880})
    dest, log = tmp_path / "data", tmp_path / "ferry.log"
    args = ["--config", str(config), "upload", RECID, "--target", "t", "--dest", str(dest)]
    client = moto_s3.sync_client()
    sending = lambda: client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) > 0 or bool(  # noqa: E731
        s3_open_uploads(moto_s3, bucket)
    )
    done = kill_rounds(args, log, kills=kills, moments=[_began(dest), sending], seed=3, env=_s3_env(moto_s3))
    _assert_rounds(done, log)
    held = s3_objects(moto_s3, bucket)
    data = [(k.removesuffix("/content").rsplit("/", 1)[1], md5(v)) for k, v in held.items() if k.endswith("/content")]
    assert exactly(source.source_md5(RECID), data, "s3") == [], sorted(held)
    assert s3_open_uploads(moto_s3, bucket) == []


def test_upload_local(tmp_path: Path, source: SyntheticSource, kills: int) -> None:
    root = tmp_path / "archive"
    config = _config(tmp_path, source, {"type": "local", "url": str(root)})
    dest, log = tmp_path / "data", tmp_path / "ferry.log"
    args = ["--config", str(config), "upload", RECID, "--target", "t", "--dest", str(dest)]
    sending = lambda: any(p.is_file() for p in root.rglob("*"))  # noqa: E731
    done = kill_rounds(args, log, kills=kills, moments=[_began(dest), sending], seed=4)
    _assert_rounds(done, log)
    held = tree_md5(root)
    assert exactly(source.source_md5(RECID), [(Path(k).name, v) for k, v in held], "local") == [], held


def _s3_env(server: S3Server) -> dict[str, str]:
    return {
        **server.env(),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


_ = zipfile  # used by the zip cases below
