"""One-off flags (issue 15 §4): ``--retries N`` and ``--include/--exclude GLOB``.

Against the Zenodo stand-in (a published record as the source, a deposition as the
target): what reaches the disk or the server is checked, not what ferry says.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest

from ferry.cli import main
from ferry.cli.filters import FileFilter, filter_from
from ferry.core.errors import InputError
from ferry.core.model import FileEntry, Record
from tests.fixtures_zenodo import ZenodoHandle
from tests.test_push import META, items, make_dir
from tests.test_zenodo_source import publish
from tests.test_zenodo_target import writes, zen_config

FILES = {"a.root": b"a" * 3000, "b.root": b"b" * 2000, "notes.txt": b"notes\n"}


def config_for(tmp_path: Path, zen: ZenodoHandle) -> Path:
    path = zen_config(tmp_path, zen)
    path.write_text(path.read_text() + f'\n[source.zenodo]\nurl = "{zen.url}"\n')
    return path


def downloaded(dest: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in dest.rglob("*") if p.is_file() and ".ferry" not in p.parts}


# --- the glob rule --------------------------------------------------------------------------


def test_include_then_exclude_by_name_or_by_path() -> None:
    keep = FileFilter(include=("*.root", "docs/*"), exclude=("b*", "raw/skip.root"))
    assert keep.keys(["a.root", "b.root", "raw/a.root", "raw/skip.root", "docs/x.txt", "x.txt", "docs/b.md"]) == [
        "a.root",
        "raw/a.root",
        "docs/x.txt",
    ]
    assert FileFilter(exclude=("*.log",)).keys(["a.log", "sub/b.log", "c.txt"]) == ["c.txt"]
    assert not FileFilter() and FileFilter(include=("x",))


def test_a_record_left_without_files_is_an_error_naming_it() -> None:
    record = Record("77", {}, files=(FileEntry("a.root", "file:///a", 1), FileEntry("b.txt", "file:///b", 1)))
    assert [f.key for f in FileFilter(include=("*.txt",)).record(record).files] == ["b.txt"]
    with pytest.raises(InputError) as info:
        FileFilter(include=("*.csv",), exclude=("a*",)).record(record)
    assert info.value.recid == "77"
    assert "none of the 2 file(s) of record 77 matches --include *.csv --exclude a*" in str(info.value)
    # A record that lists no files stays as it is (a metadata-only record, not a filter miss).
    assert FileFilter(include=("*.csv",)).record(Record("78", {})).files == ()
    with pytest.raises(InputError, match="empty pattern"):
        filter_from(argparse.Namespace(include=["/"], exclude=[]))


# --- --retries ------------------------------------------------------------------------------


def test_retries_flag_sets_how_often_a_request_is_repeated(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = publish(zenodo, FILES)
    config = config_for(tmp_path, zenodo)
    spec = f"zenodo:{rec['id']}"
    zenodo.configure(force_429=2, retry_after=0)  # the next two requests answer 429
    code = main(["--config", str(config), "download", spec, "--dest", str(tmp_path / "d1"), "--retries", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "429" in err, err  # the first try and one repeat: both refused
    assert downloaded(tmp_path / "d1") == {}

    zenodo.configure(force_429=2, retry_after=0)
    code = main(["--retries", "3", "--config", str(config), "download", spec, "--dest", str(tmp_path / "d2")])
    assert code == 0, capsys.readouterr().err  # two refusals, then the third try
    assert downloaded(tmp_path / "d2") == FILES


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_retries_must_be_a_whole_number_of_at_least_one(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["download", "1", "--retries", bad, "--dry-run"])
    assert info.value.code == 2
    assert "--retries" in capsys.readouterr().err


# --- --include / --exclude ------------------------------------------------------------------


def test_download_and_copy_move_only_the_files_kept(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = publish(zenodo, FILES)
    config = config_for(tmp_path, zenodo)
    spec = f"zenodo:{rec['id']}"
    base = ["--config", str(config)]
    code = main([*base, "download", spec, "--dest", str(tmp_path / "d"), "--include", "*.root", "--exclude", "b*"])
    assert code == 0, capsys.readouterr().err
    assert downloaded(tmp_path / "d") == {"a.root": FILES["a.root"]}

    code = main([*base, "download", spec, "--dest", str(tmp_path / "none"), "--include", "*.csv"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"none of the 3 file(s) of record {rec['id']} matches --include *.csv" in err
    assert downloaded(tmp_path / "none") == {}

    # ferry copy (the ferry upload pipeline) into a folder target.
    out = tmp_path / "mirror"
    code = main([*base, "copy", spec, str(out), "--dest", str(tmp_path / "stage"), "--exclude", "*.root"])
    assert code == 0, capsys.readouterr().err
    assert {k: v for k, v in downloaded(out).items() if not k.endswith(".json")} == {"notes.txt": FILES["notes.txt"]}


def test_push_sends_only_the_files_kept(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    d = make_dir(tmp_path, {"a.pmtiles": b"a" * 100, "b.tmp": b"b" * 10, "c.tsv": b"c\n"})
    config = zen_config(tmp_path, zenodo)
    push = ["--config", str(config), "push", str(d), "--target", "zen", *META]
    assert main([*push, "--include", "*.nothing"]) == 2
    assert "none of the 3 selected file(s) matches --include *.nothing" in capsys.readouterr().err
    assert writes(zenodo) == []  # refused before any request that writes

    assert main([*push, "--exclude", "*.tmp"]) == 0, capsys.readouterr().err
    (item,) = items(zenodo)
    assert item["files"] == {
        k: {"size": len(v), "md5": hashlib.md5(v).hexdigest()}
        for k, v in {"a.pmtiles": b"a" * 100, "c.tsv": b"c\n"}.items()
    }


def test_bulk_refuses_filters_with_a_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recids = tmp_path / "r.txt"
    recids.write_text("1\n")
    cfg = tmp_path / "ferry.toml"
    cfg.write_text('[targets.t]\ntype = "local"\nurl = "file:///tmp"\n')
    args = ["--config", str(cfg), "bulk", "--recids", str(recids), "--target", "t", "--cluster", "local:1"]
    code = main([*args, "--include", "*.root", "--dest", str(tmp_path / "d")])
    assert code == 2
    assert "--include/--exclude are not supported with --cluster" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
