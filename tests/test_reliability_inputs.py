"""Every bad input a clear error, exit 2, never a traceback (issue 16, section 3).

Each case runs the real CLI entry point and checks the exit code, that the message names
the file/key/flag, and that no traceback reached stderr. None of these needs a server:
the input is refused before anything is contacted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.cli import main

TARGET = '[targets.t]\ntype = "invenio"\nurl = "http://127.0.0.1:9"\n'


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _config(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "ferry.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _bulk(config: Path, tmp_path: Path, *more: str) -> list[str]:
    recids = tmp_path / "recids.txt"
    recids.write_text("81009\n")
    return [
        "--config",
        str(config),
        "bulk",
        "--recids",
        str(recids),
        "--target",
        "t",
        "--dest",
        str(tmp_path / "d"),
        *more,
    ]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (b'[source.cernopendata]\nportal = "caf\xe9"\n', "not UTF-8"),
        ("[source.cernopendata]\nportal = 5\n", "source.cernopendata.portal must be a string, not 5"),
        (TARGET + "token_file = 42\n", "targets.t.token_file must be a string, not 42"),
        (TARGET + 'token_file = "/x"\ntoken_env = "X"\n', "token_file and token_env are both set"),
        ("[limits]\nstaging_bytes = 99999999999999999999\n", "limits.staging_bytes is too large"),
        ("[limits]\nstaging_bytes = 9223372036854775807\nbackoff_base = nan\n", "limits.backoff_base must be a finite"),
        ("[limits]\nbackoff_base = inf\n", "limits.backoff_base must be a finite"),
        ("[limits]\nretries = 2.5\n", "limits.retries must be a whole number"),
    ],
)
def test_bad_config_values_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes, named: str
) -> None:
    code, err = _run(_bulk(_config(tmp_path, text), tmp_path, "--dry-run"), capsys)
    assert code == 2, err
    assert named in err


def test_a_config_that_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(_bulk(tmp_path, tmp_path, "--dry-run"), capsys)
    assert code == 2 and "is a directory" in err


@pytest.mark.parametrize("flag", ["--staging-gb", "--deadline"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_non_finite_numeric_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(_bulk(_config(tmp_path, TARGET), tmp_path, flag, value))
    err = capsys.readouterr().err
    assert info.value.code == 2 and flag in err and "finite number > 0" in err


def test_a_records_in_flight_beyond_64_bits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(_bulk(_config(tmp_path, TARGET), tmp_path, "--records-in-flight", str(2**64)))
    assert info.value.code == 2 and "--records-in-flight" in capsys.readouterr().err


def test_an_unwritable_log_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = tmp_path / "no-such-dir" / "ferry.log"
    code, err = _run(["--log-file", str(where), *_bulk(_config(tmp_path, TARGET), tmp_path, "--dry-run")], capsys)
    assert code == 2 and str(where) in err


def test_a_world_readable_token_file_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from ferry.core.config import config_from_mapping

    token = tmp_path / "tok"
    token.write_text("abc")
    token.chmod(0o644)
    cfg = config_from_mapping({"targets": {"t": {"type": "invenio", "url": "http://x", "token_file": str(token)}}})
    with caplog.at_level("WARNING"):
        assert cfg.target("t").token() is not None
    assert "readable by other users" in caplog.text and "chmod 600" in caplog.text
    caplog.clear()
    token.chmod(0o600)
    with caplog.at_level("WARNING"):
        cfg.target("t").token()
    assert "readable by other users" not in caplog.text
