"""`ferry copy SOURCE TARGET` end to end: CERN (XRootD + portal), Zenodo and folders into
folders and the sandbox repository, dry runs, bad specs."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import zlib
from pathlib import Path
from typing import Any

import pytest

from ferry.cli import main
from stats.events import read_jsonl
from tests.fixtures_repository import RepositoryHandle
from tests.fixtures_xrootd import SandboxSource
from tests.fixtures_zenodo import ZenodoHandle
from tests.test_zenodo_source import payload, publish


def write_config(tmp_path: Path, *, portal: str = "", zenodo: str = "", repo: RepositoryHandle | None = None) -> Path:
    lines = ["[limits]", "backoff_base = 0.05", "retries = 2"]
    if portal:
        lines += ["[source.cernopendata]", f'portal = "{portal}"']
    if zenodo:
        lines += ["[source.zenodo]", f'url = "{zenodo}"']
    if repo is not None:
        token = tmp_path / "token"
        token.write_text(repo.token)
        token.chmod(0o600)
        lines += [
            "[targets.sandbox]",
            'type = "invenio"',
            f'url = "{repo.url}"',
            f'token_file = "{token}"',
            'profile = "inveniordm"',
            "requests_per_minute = 6000",
            "requests_per_hour = 100000",
        ]
    path = tmp_path / "ferry.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def ferry(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def tree(root: Path, *, state: bool = True) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: relative path -> (size, mtime_ns); without
    ``state``, ferry's own .ferry/ folders are left out (reading a state may touch them)."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if not state:
            dirnames[:] = [d for d in dirnames if d != ".ferry"]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return out


def adler32(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


def test_a_cern_record_into_a_folder_verified_then_nothing_moves_again(
    tmp_path: Path, sandbox_source: SandboxSource, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, portal=sandbox_source.portal_url)
    recid = sandbox_source.cases["plain"]
    mirror, dest, stats = tmp_path / "mirror", tmp_path / "data", tmp_path / "stats"
    args = ("copy", recid, str(mirror), "--dest", str(dest), "--stats-dir", str(stats))
    assert ferry(config, *args) == 0, capsys.readouterr().err
    assert f"record {recid}: ok, 3 file(s) verified on the target" in capsys.readouterr().out
    listed = sandbox_source.record(recid)["files"]
    assert len(listed) == 3
    for entry in listed:
        copied = mirror / recid / posixpath.basename(entry["uri"])
        data = copied.read_bytes()
        assert len(data) == entry["size"] and f"adler32:{adler32(data)}" == entry["checksum"]
    assert (mirror / recid / ".ferry" / "archive-state.sqlite").is_file()  # checksums kept beside them
    rows = [r for f in stats.glob("*.jsonl") for r in read_jsonl(f)]
    assert [r["status"] for r in rows if r["stage"] == "record"] == ["started", "ok"]
    assert len([r for r in rows if r["stage"] == "upload" and r["status"] == "ok"]) == 3

    before = tree(mirror, state=False)
    assert ferry(config, *args) == 0, capsys.readouterr().err
    assert f"record {recid}: skipped" in capsys.readouterr().out
    assert tree(mirror, state=False) == before  # the second run wrote no file into the target


def test_a_dry_run_writes_nothing_anywhere(
    tmp_path: Path, sandbox_source: SandboxSource, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, portal=sandbox_source.portal_url)
    recid = sandbox_source.cases["plain"]
    before = tree(tmp_path)
    code = ferry(config, "copy", recid, str(tmp_path / "mirror"), "--dest", str(tmp_path / "data"), "--dry-run")
    out = capsys.readouterr()
    assert code == 0, out.err
    assert recid in out.out and "plain_0.dat" in out.out  # the plan names the record and its files
    assert tree(tmp_path) == before


def test_a_zenodo_record_into_a_file_url(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {"events.root": payload(300_000), "README.txt": b"hello\n"}
    rec = publish(zenodo, files)
    config = write_config(tmp_path, zenodo=zenodo.url)
    mirror = tmp_path / "mirror"
    code = ferry(config, "copy", f"zenodo:{rec['id']}", mirror.as_uri(), "--dest", str(tmp_path / "data"))
    assert code == 0, capsys.readouterr().err
    for key, data in files.items():
        copied = (mirror / str(rec["id"]) / key).read_bytes()
        assert hashlib.md5(copied).hexdigest() == hashlib.md5(data).hexdigest() and copied == data


def test_a_folder_into_the_sandbox_repository(
    tmp_path: Path, repository: RepositoryHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    meta: dict[str, Any] = {
        "title": "Results of a copy test",
        "creators": [{"name": "Doe, Jane"}],
        "description": "A folder copied by ferry.",
        "publication_date": "2024-05-01",
        "upload_type": "dataset",
        "license": "CC0-1.0",
    }
    files = {"a.txt": b"alpha\n", "b.dat": payload(70_000), "metadata.json": json.dumps(meta).encode()}
    for key, data in files.items():
        (folder / key).write_bytes(data)
    config = write_config(tmp_path, repo=repository)
    code = ferry(config, "copy", str(folder), "sandbox", "--dest", str(tmp_path / "data"))
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "record results: ok, 3 file(s) verified on the target" in out.out
    (entity,) = repository.state()["entities"]
    got = entity["draft_files"]
    assert {k: v["size"] for k, v in got.items()} == {k: len(v) for k, v in files.items()}
    assert all(v["status"] == "completed" for v in got.values())
    # The folder's own metadata validated for the repository (the folder reader), and the
    # record is found again by its folder key: a second copy creates nothing.
    assert ferry(config, "copy", str(folder), "sandbox", "--dest", str(tmp_path / "data")) == 0
    assert len(repository.state()["entities"]) == 1


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("copy", "nope:1", "/tmp/x"), "nope:1"),
        (("copy", "zenodo:", "/tmp/x"), "zenodo:"),
        (("copy", "80509", "nowhere"), "nowhere"),
        (("download", "80509", "nope:1"), "nope:1"),
        (("upload", "nope:1", "--target", "x"), "nope:1"),
    ],
)
def test_bad_specs_exit_2_naming_them_before_anything_starts(
    tmp_path: Path, args: tuple[str, ...], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    before = tree(tmp_path)
    assert ferry(config, *args, "--dest", str(tmp_path / "data")) == 2
    err = capsys.readouterr().err
    assert named in err, err
    assert tree(tmp_path) == before


def test_an_id_the_source_cannot_take_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Known only to the source, when it resolves (after the run's ledger is open).
    config = write_config(tmp_path, zenodo="http://127.0.0.1:9")
    assert ferry(config, "copy", "zenodo:abc", str(tmp_path / "m"), "--dest", str(tmp_path / "data")) == 2
    err = capsys.readouterr().err
    assert "zenodo:abc" in err and "not a Zenodo record id" in err, err
    assert not (tmp_path / "m").exists()
