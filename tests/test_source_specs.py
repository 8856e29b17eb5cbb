"""Sources named on the command line: `ferry download SPEC...` and `ferry upload SPEC` take
zenodo:ID, zenodo:concept:ID, dir:PATH or a path beside CERN recids."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures_zenodo import ZenodoHandle
from tests.test_copy import ferry, write_config
from tests.test_zenodo_source import payload, publish


def test_download_zenodo_records_concepts_and_folders(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    one = publish(zenodo, {"a.bin": payload(120_000)})
    two = publish(zenodo, {"b.txt": b"bee\n"})
    folder = tmp_path / "work" / "results"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "c.txt").write_bytes(b"sea\n")
    config = write_config(tmp_path, zenodo=zenodo.url)
    monkeypatch.chdir(tmp_path / "work")  # ./results: a path relative to where ferry runs
    dest = tmp_path / "data"
    specs = (f"zenodo:{one['id']}", f"zenodo:concept:{two['conceptrecid']}", "./results")
    assert ferry(config, "download", *specs, "--dest", str(dest)) == 0, capsys.readouterr().err
    # Staged per source: DEST/zenodo-<id>, DEST/dir-<name> (never a CERN record's DEST/<recid>).
    assert (dest / f"zenodo-{one['id']}" / "a.bin").read_bytes() == payload(120_000)
    assert (dest / f"zenodo-{two['id']}" / "b.txt").read_bytes() == b"bee\n"
    assert (dest / "dir-results" / "sub" / "c.txt").read_bytes() == b"sea\n"
    assert "downloaded 3 of 3 records" in capsys.readouterr().out


def test_download_names_a_missing_folder_and_goes_on(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = publish(zenodo, {"a.txt": b"a"})
    config = write_config(tmp_path, zenodo=zenodo.url)
    missing = tmp_path / "nope"
    code = ferry(config, "download", f"dir:{missing}", f"zenodo:{rec['id']}", "--dest", str(tmp_path / "d"))
    out = capsys.readouterr()
    assert code == 1
    assert f"no folder {missing}" in out.err
    assert (tmp_path / "d" / f"zenodo-{rec['id']}" / "a.txt").read_bytes() == b"a"  # the other record completes


def test_upload_a_zenodo_record_into_a_configured_local_target(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = publish(zenodo, {"data.bin": payload(50_000), "README": b"read me\n"})
    config = write_config(tmp_path, zenodo=zenodo.url)
    with config.open("a") as fh:
        fh.write(f'[targets.shelf]\ntype = "local"\nurl = "{tmp_path / "shelf"}"\n')
    code = ferry(config, "upload", f"zenodo:{rec['id']}", "--target", "shelf", "--dest", str(tmp_path / "data"))
    assert code == 0, capsys.readouterr().err
    assert f"record {rec['id']}: ok, 2 file(s) verified on the target" in capsys.readouterr().out
    assert (tmp_path / "shelf" / str(rec["id"]) / "data.bin").read_bytes() == payload(50_000)
