"""Shared test set-up. Server fixtures live in their own modules so each system owns one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# Fixture modules: real servers started on 127.0.0.1 and stopped by the fixtures.
pytest_plugins = [
    "tests.fixtures_xrootd",  # XRootD server + portal stand-in over generated data
    "tests.fixtures_repository",  # sandbox InvenioRDM/NRP repository
]

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "cernopendata" / "records"
LOCAL_FIXTURES = Path(__file__).resolve().parent / "data" / "records"


def fixture_records_dir() -> Path:
    """The DELPHI record fixtures: ../shared (as in CI), else the copies in tests/data."""
    return FIXTURES if FIXTURES.is_dir() else LOCAL_FIXTURES


def load_fixture_records() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(fixture_records_dir().glob("*.json")):
        out.extend(json.loads(path.read_text()))
    return out


@pytest.fixture(scope="session")
def delphi_records() -> list[dict[str, Any]]:
    return load_fixture_records()
