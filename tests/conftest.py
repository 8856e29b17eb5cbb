"""Shared test set-up. Server fixtures live in their own modules so each system owns one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# Fixture modules: real servers started on 127.0.0.1 and stopped by the fixtures.
pytest_plugins = [
    "tests.fixtures_xrootd",  # XRootD server + portal stand-in over generated data
    "tests.fixtures_repository",  # sandbox InvenioRDM/NRP repository
    "tests.fixtures_s3",  # moto and SeaweedFS S3 servers
    "tests.fixtures_zenodo",  # Zenodo stand-in (deposit + records API)
    "tests.reliability.options",  # --long: full-size reliability loops
]

# The real DELPHI records (portal fixture format) live in the steering repository's
# shared/ folder, which CI and developers have beside this repository's checkout.
SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "cernopendata" / "records"


def fixture_records_dir() -> Path:
    """The DELPHI record fixtures: $FERRY_FIXTURES, else ../shared/fixtures/cernopendata/records."""
    path = Path(os.environ.get("FERRY_FIXTURES") or SHARED_FIXTURES)
    if not any(path.glob("delphi-*.json")):
        pytest.fail(
            f"the DELPHI record fixtures are not at {path}: check out shared/ beside this repository "
            "or set FERRY_FIXTURES to the folder with the delphi-*.json files",
            pytrace=False,
        )
    return path


def load_fixture_records() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(fixture_records_dir().glob("*.json")):
        out.extend(json.loads(path.read_text()))
    return out


@pytest.fixture(scope="session")
def delphi_records() -> list[dict[str, Any]]:
    return load_fixture_records()
