"""Generated bad inputs (hypothesis): records files, recid lists, configs (issue 16, section 5).

Whatever the bytes, a command ends with a status of its own (0, 1 or 2), never a
traceback, and a refused input (2) writes nothing. No server is involved: ``ferry cache
build --records`` reads the file and resolves nothing over the network; the configured
portal and target are the discard port of 127.0.0.1. ``--long`` runs more examples.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.cli import main
from tests.reliability.test_inputs import tree

SHORT, LONG = 25, 400
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
RECORDISH = st.fixed_dictionaries(
    {"recid": st.one_of(st.integers(), st.text(max_size=6), st.none())},
    optional={
        "title": JSON,
        "files": JSON,
        "type": JSON,
        "distribution": JSON,
        "index_files": JSON,
    },
)
CONFIG = '[source.cernopendata]\nportal = "http://127.0.0.1:9"\n'


def examples(request: pytest.FixtureRequest) -> int:
    return LONG if request.config.getoption("--long") else SHORT


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code in (0, 1, 2), (code, err)
    return code, err


def _cache_build(data: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "ferry.toml").write_text(CONFIG)
        records = work / "records.json"
        records.write_bytes(data)
        before = tree(work)
        code, err = run(
            ["--config", str(work / "ferry.toml"), "cache", "build", "--records", str(records), "-o", str(work / "o")],
            capsys,
        )
        if code == 2:
            assert str(records) in err or "records" in err, err
            assert tree(work) == before


def test_generated_records_files(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    @settings(max_examples=examples(request), deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.lists(RECORDISH, max_size=4), JSON, st.dictionaries(st.text(max_size=4), JSON, max_size=3)))
    def check(value: Any) -> None:
        _cache_build(json.dumps(value).encode(), capsys)

    check()


def test_generated_bytes_as_records_files(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    @settings(max_examples=examples(request), deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=64))
    def check(data: bytes) -> None:
        _cache_build(data, capsys)

    check()


def test_generated_recid_lists(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    """A recid list of random lines against an empty records file: every line is either a
    recid (not found: 1) or a bad line named by number; never a traceback."""

    @settings(max_examples=examples(request), deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.text(max_size=12), max_size=6))
    def check(lines: list[str]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "ferry.toml").write_text(CONFIG)
            (work / "records.json").write_text("[]")
            listing = work / "recids.txt"
            listing.write_text("\n".join(lines), errors="surrogateescape")
            argv = ["--config", str(work / "ferry.toml"), "cache", "build", "--records", str(work / "records.json")]
            code, err = run([*argv, "--recids", str(listing), "-o", str(work / "o")], capsys)
            if code == 2:
                assert str(listing) in err, err

    check()


def test_generated_configs(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    """Random tables and values in ferry.toml: read or refused naming the key, exit 2."""
    key = st.sampled_from(["portal", "protocol", "type", "url", "token_file", "retries", "uploads", "zip_threshold"])
    value = st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=6), st.booleans())
    table = st.sampled_from(["source.cernopendata", "limits", "targets.t", "nonsense"])

    @settings(max_examples=examples(request), deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(table, key, value), max_size=4))
    def check(items: list[tuple[str, str, Any]]) -> None:
        tables: dict[str, dict[str, Any]] = {}
        for t, k, v in items:
            tables.setdefault(t, {})[k] = v
        text = (
            "".join(
                f"[{t}]\n"
                + "".join(f"{k} = {json.dumps(v) if not isinstance(v, float) else repr(v)}\n" for k, v in kv.items())
                for t, kv in tables.items()
            )
            .replace("True", "true")
            .replace("False", "false")
        )
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            config = work / "ferry.toml"
            config.write_text(text)
            (work / "records.json").write_text("[]")
            before = tree(work)
            code, _ = run(
                [
                    "--config",
                    str(config),
                    "cache",
                    "build",
                    "--records",
                    str(work / "records.json"),
                    "-o",
                    str(work / "o"),
                ],
                capsys,
            )
            if code == 2:
                assert tree(work) == before

    check()
