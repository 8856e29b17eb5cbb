"""Bad inputs, every command: a clear error naming the file/key/flag, exit 2, no traceback,
nothing written (issue 16, sections 3 and 5).

None of these needs a server: the input is refused before anything is contacted (the
configured target and portal are 127.0.0.1:9, the discard port, so a request that slipped
through would fail loudly as a connection error, exit 1, not 2).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.cli import main

CONFIG = (
    '[source.cernopendata]\nportal = "http://127.0.0.1:9"\n\n'
    '[targets.t]\ntype = "invenio"\nurl = "http://127.0.0.1:9"\ntoken_file = "{token}"\n'
)
NOT_A_CACHE = {
    "object-of-int": '{"a": 1}',
    "hits-shape": '{"hits": {"hits": "x"}}',
    "record-not-object": '{"1": {"record": [1, 2]}}',
}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``main(argv)`` -> (exit status, stderr); argparse's own exit counts as a status."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def tree(path: Path) -> list[str]:
    """Every path under ``path`` (what a refused run must not have written)."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def work(tmp_path: Path) -> Path:
    token = tmp_path / "token"
    token.write_text("sentinel-token")
    token.chmod(0o600)
    (tmp_path / "ferry.toml").write_text(CONFIG.format(token=token))
    (tmp_path / "recids.txt").write_text("1\n")
    return tmp_path


def commands(work: Path, records: Path) -> dict[str, list[str]]:
    """Every command that reads a records file, pointed at ``records``."""
    cfg = ["--config", str(work / "ferry.toml")]
    return {
        "download": [*cfg, "download", "1", "--records", str(records), "--dest", str(work / "d")],
        "download-all": [*cfg, "download", "--records", str(records), "--dest", str(work / "d")],
        "upload": [*cfg, "upload", "1", "--records", str(records), "--target", "t", "--dest", str(work / "d")],
        "bulk": [
            *cfg,
            "bulk",
            "--recids",
            str(work / "recids.txt"),
            "--records",
            str(records),
            "--target",
            "t",
            "--dest",
            str(work / "d"),
        ],
        "cache-build": [*cfg, "cache", "build", "--records", str(records), "-o", str(work / "out.json")],
    }


@pytest.mark.parametrize("shape", sorted(NOT_A_CACHE))
@pytest.mark.parametrize("command", ["download", "download-all", "upload", "bulk", "cache-build"])
def test_a_json_object_that_is_not_a_master_cache(
    work: Path, capsys: pytest.CaptureFixture[str], shape: str, command: str
) -> None:
    records = work / "records.json"
    records.write_text(NOT_A_CACHE[shape])
    before = tree(work)
    code, err = run_cli(commands(work, records)[command], capsys)
    assert code == 2, err
    assert str(records) in err and ("master-cache entry" in err or "must be an object" in err)
    assert tree(work) == before  # no cache, no dest, no ledger


@pytest.mark.parametrize("command", ["download", "upload", "bulk"])
def test_portal_with_records_is_refused(work: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    records = work / "records.json"
    records.write_text("[]")
    argv = commands(work, records)[command] + ["--portal", "http://127.0.0.1:9"]
    code, err = run_cli(argv, capsys)
    assert code == 2 and "--portal and --records exclude each other" in err


def _unwritable(work: Path) -> Path:
    """A path that cannot be created even by root: its parent is a regular file."""
    blocker = work / "a-file"
    blocker.write_text("x")
    return blocker / "sub"


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("download", "--dest"),
        ("download", "--stats-dir"),
        ("upload", "--dest"),
        ("upload", "--stats-dir"),
        ("upload", "--ledger"),
        ("bulk", "--dest"),
        ("bulk", "--stats-dir"),
        ("bulk", "--ledger"),
        ("bulk", "--cache"),
        ("zip", "--dest"),
        ("zip", "--stats-dir"),
    ],
)
def test_an_unwritable_path_is_named_before_anything_starts(
    work: Path, capsys: pytest.CaptureFixture[str], command: str, flag: str
) -> None:
    records = work / "records.json"
    records.write_text("[]")
    cfg = ["--config", str(work / "ferry.toml")]
    argv = {**commands(work, records), "zip": [*cfg, "zip", "1", "--dest", str(work / "d")]}[command]
    bad = _unwritable(work)
    code, err = run_cli([*argv, flag, str(bad)], capsys)
    assert code == 2, err
    assert flag in err and str(bad) in err and "is not a directory" in err


def test_a_directory_given_as_the_ledger(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = work / "records.json"
    records.write_text("[]")
    code, err = run_cli([*commands(work, records)["upload"], "--ledger", str(work)], capsys)
    assert code == 2 and "--ledger" in err and "is a directory" in err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["download", "1", "--jobs", "0"], "--jobs"),
        (["download", "1", "--jobs", "nan"], "--jobs"),
        (["upload", "1", "--target", "t", "--uploads", str(2**64)], "--uploads"),
        (["upload", "1", "--target", "t", "--jobs", "-3"], "--jobs"),
        (["bulk", "--all", "--target", "t", "--uploads", "inf"], "--uploads"),
        (["zip", "1", "--threshold", "0"], "--threshold"),
        (["zip", "1", "--threshold", "1e3"], "--threshold"),
        (["zip", "1", "--max-bundle-size", "0"], "--max-bundle-size"),
        (["zip", "1", "--max-bundle-size", "99999999999TiB"], "--max-bundle-size"),
    ],
)
def test_numeric_flags_are_checked_everywhere(
    work: Path, capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    code, err = run_cli(["--config", str(work / "ferry.toml"), *argv], capsys)
    assert code == 2 and flag in err, err


def test_dry_run_help_says_what_it_writes(capsys: pytest.CaptureFixture[str]) -> None:
    """Every command with --dry-run says the same thing: only the stats you asked for."""
    for argv in (["download"], ["upload"], ["bulk"], ["zip"], ["push"], ["archive", "upload"]):
        code, _ = (0, "")
        try:
            main([*argv, "--help"])
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = " ".join(capsys.readouterr().out.split())
        assert code == 0
        assert "stats events when --stats-dir is given" in out or "stats events only when --stats-dir" in out, argv


@pytest.mark.parametrize("profile", ["nrp-particles", "inveniordm", "zenodo"])
@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f"])
def test_control_characters_in_metadata_name_the_field(profile: str, char: str) -> None:
    from ferry.core.errors import ValidationError
    from metadata.base import get_profile, transform_and_validate
    from tests.bulk_support import make_record

    record = make_record("5", [{"uri": "root://h//eos/a/x.root", "size": 1, "checksum": "adler32:00000001"}], None)
    record["title"] = f"bad{char}title"
    with pytest.raises(ValidationError) as info:
        transform_and_validate(get_profile(profile), record)
    assert info.value.errors == {"metadata.title": [f"contains the control character U+{ord(char):04X} at offset 3"]}
    record["title"] = "tab\tnewline\nreturn\r fine"
    transform_and_validate(get_profile(profile), record)  # text whitespace is not refused
