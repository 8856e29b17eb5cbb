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
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from archive.manifest import MANIFEST_NAME
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
from tests.push_support import TARGET, push_config
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
    print(f"kill rounds: {done.killed} killed, {done.finished_first} finished first")  # shown with -s


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

    def sending() -> bool:
        return client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) > 0 or bool(s3_open_uploads(moto_s3, bucket))

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


# --- ferry copy, into a folder and into S3 -------------------------------------------------


def test_copy_into_a_folder(tmp_path: Path, source: SyntheticSource, kills: int) -> None:
    config = _config(tmp_path, source, {"type": "local", "url": str(tmp_path / "unused")})
    out, dest, log = tmp_path / "copied", tmp_path / "data", tmp_path / "ferry.log"
    args = ["--config", str(config), "copy", RECID, str(out), "--dest", str(dest)]
    sending = lambda: any(p.is_file() for p in out.rglob("*.dat"))  # noqa: E731
    done = kill_rounds(args, log, kills=kills, moments=[_began(dest), sending], seed=5)
    _assert_rounds(done, log)
    held = tree_md5(out)
    assert exactly(source.source_md5(RECID), [(Path(k).name, v) for k, v in held], "folder") == [], held


def test_copy_into_s3(tmp_path: Path, source: SyntheticSource, moto_s3: S3Server, kills: int) -> None:
    bucket = moto_s3.make_bucket()
    config = _config(tmp_path, source, {"type": "local", "url": str(tmp_path / "unused")})
    dest, log = tmp_path / "data", tmp_path / "ferry.log"
    args = ["--config", str(config), "copy", RECID, f"s3://{bucket}/copied", "--dest", str(dest)]
    client = moto_s3.sync_client()
    sending = lambda: client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) > 0  # noqa: E731
    done = kill_rounds(args, log, kills=kills, moments=[_began(dest), sending], seed=6, env=_s3_env(moto_s3))
    _assert_rounds(done, log)
    held = s3_objects(moto_s3, bucket)
    data = [(k.removesuffix("/content").rsplit("/", 1)[1], md5(v)) for k, v in held.items() if k.endswith("/content")]
    assert exactly(source.source_md5(RECID), data, "s3") == [], sorted(held)
    assert s3_open_uploads(moto_s3, bucket) == []


# --- ferry push, a folder into a deposition (Zenodo) and a draft (InvenioRDM) ----------------

META = ["--title", "Kill matrix", "--creators", "Doe, Jane", "--description", "tiles", "--upload-type", "dataset"]


def _push_dir(tmp_path: Path) -> dict[str, str]:
    out = {}
    for i in range(16):
        data = os.urandom(200_000 + 1000 * i)
        path = tmp_path / "out" / f"f{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[path.name] = md5(data)
    return out


def test_push_zenodo(tmp_path: Path, zenodo_factory: ZenFactory, kills: int) -> None:
    zen = zenodo_factory(latency_ms=30)
    want = _push_dir(tmp_path)
    token = tmp_path / "zenodo.token"
    token.write_text(zen.token)
    config = tmp_path / "push.toml"
    config.write_text(f'[targets.t]\ntype = "zenodo"\nurl = "{zen.url}"\ntoken_file = "{token}"\n')
    args = ["--config", str(config), "push", str(tmp_path / "out"), "--target", "t", "--jobs", "2", *META]
    log = tmp_path / "ferry.log"
    created = lambda: any(r["method"] == "POST" for r in zen.writes())  # noqa: E731
    sending = lambda: sum(r["method"] == "PUT" for r in zen.writes()) >= 3  # noqa: E731
    done = kill_rounds(args, log, kills=kills, moments=[created, sending], seed=7)
    _assert_rounds(done, log)
    assert zenodo_problems(zen, want) == []


def test_push_invenio(tmp_path: Path, repository_factory: RepoFactory, kills: int) -> None:
    repo = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000, latency_ms=30)
    want = _push_dir(tmp_path)
    config = push_config(tmp_path, repo)
    args = ["--config", str(config), "push", str(tmp_path / "out"), "--target", TARGET, "--jobs", "2", *META]
    log = tmp_path / "ferry.log"
    created = lambda: any(r["method"] == "POST" for r in repo.requests_log())  # noqa: E731
    sending = lambda: sum(is_content_put(r) for r in repo.requests_log()) >= 3  # noqa: E731
    done = kill_rounds(args, log, kills=kills, moments=[created, sending], seed=8)
    _assert_rounds(done, log)
    entities = repo.state()["entities"]
    assert len(entities) == 1, entities  # one draft, never a twin
    files = entities[0]["draft_files"]
    got = [(k, str(f.get("checksum") or "").removeprefix("md5:")) for k, f in files.items()]
    assert all(f["status"] == "completed" for f in files.values()), files
    assert exactly(want, got, "invenio") == []


# --- ferry archive upload / download (a folder archive and S3) ------------------------------


def _archive_src(tmp_path: Path) -> dict[str, bytes]:
    files = {f"part-{i}/f{i}.dat": os.urandom(300_000 + 7_000 * i) for i in range(12)}
    files["big.bin"] = os.urandom(6_000_000)
    for rel, data in files.items():
        p = tmp_path / "src" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".ferry" not in p.relative_to(root).parts and p.name != MANIFEST_NAME
    }


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_archive_upload_then_download(tmp_path: Path, where: str, kills: int, request: pytest.FixtureRequest) -> None:
    files = _archive_src(tmp_path)
    env: dict[str, str] = {}
    if where == "s3":
        server: S3Server = request.getfixturevalue("moto_s3")
        bucket = server.make_bucket()
        archive = f"s3://{bucket}/arch"
        env = _s3_env(server)
        client = server.sync_client()
        sent = lambda: client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) >= 2  # noqa: E731
    else:
        archive = str(tmp_path / "arch")
        sent = lambda: sum(1 for p in (tmp_path / "arch").rglob("*.dat") if p.is_file()) >= 2  # noqa: E731
    config = tmp_path / "ferry.toml"
    config.write_text("[limits]\nbackoff_base = 0.05\nretries = 3\n")
    log = tmp_path / "ferry.log"
    base = ["--config", str(config), "archive"]
    up = [*base, "upload", "set", "1", str(tmp_path / "src"), "--to", archive, "--jobs", "2"]
    done = kill_rounds(up, log, kills=kills, moments=[sent], seed=9, env=env)
    _assert_rounds(done, log)

    dst = tmp_path / "dst"
    fetched = lambda: any(p.is_file() for p in dst.rglob("*"))  # noqa: E731
    down = [*base, "download", "set", "1", str(dst), "--from", archive, "--jobs", "2"]
    done = kill_rounds(down, log, kills=kills, moments=[fetched], seed=10, env=env)
    _assert_rounds(done, log)
    assert _tree_bytes(dst) == files  # every file, once, byte for byte
    assert not list(dst.rglob("*.part"))
    listing = [*base, "revisions", "set", "--from", archive]
    out = subprocess.run(
        [sys.executable, "-m", "ferry.cli", *listing],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )
    assert out.stdout.split() == ["set,1"], out  # one complete revision, no twin


# --- ferry zip: bundles of a downloaded record ---------------------------------------------


def test_zip(tmp_path: Path, source: SyntheticSource, kills: int) -> None:
    config = _config(tmp_path, source, {"type": "local", "url": str(tmp_path / "unused")})
    dest, log = tmp_path / "data", tmp_path / "ferry.log"
    from ferry.cli import main

    assert main(["--config", str(config), "download", ZIPPED, "--dest", str(dest)]) == 0
    args = [
        "--config",
        str(config),
        "zip",
        ZIPPED,
        "--dest",
        str(dest),
        "--threshold",
        "5",
        "--max-bundle-size",
        "20000",
    ]

    def bundling() -> bool:
        return any((dest / ZIPPED / ".ferry").glob("*.partial")) or any((dest / ZIPPED).glob("*.zip"))

    done = kill_rounds(args, log, kills=kills, moments=[bundling], seed=11, window=0.05)
    _assert_rounds(done, log)
    want = source.source_md5(ZIPPED)
    members: list[tuple[str, str]] = []
    for bundle in sorted((dest / ZIPPED).glob("*.zip")):
        with zipfile.ZipFile(bundle) as zf:
            assert zf.testzip() is None
            members += [(Path(n).name, md5(zf.read(n))) for n in zf.namelist() if n.endswith(".dat")]
    assert exactly(want, members, "bundles") == []
    assert not list((dest / ZIPPED).rglob("*.partial"))
