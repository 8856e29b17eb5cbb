"""What the ``ferry push`` tests into the sandbox InvenioRDM set up and read alike, written once.

A config naming the sandbox repository as target ``t``, a folder of files to push and its
ledger, and the sandbox's own account of what the push did (its creates, a draft's files):
tests/test_push_twin.py and tests/reliability/test_old_ledger_create.py judge by these.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.fixtures_repository import RepositoryHandle

TARGET = "t"
# The sandbox's rate windows wide open: these tests are about creates and search, not rate limits.
OPEN_RATES = {"rate_per_minute": 100_000, "rate_per_hour": 1_000_000}


def push_config(tmp_path: Path, repo: RepositoryHandle) -> Path:
    """push.toml with the sandbox repository as target ``t`` (InvenioRDM profile, rates open)."""
    token = tmp_path / "repo.token"
    token.write_text(repo.token)
    config = tmp_path / "push.toml"
    config.write_text(
        f'[targets.{TARGET}]\ntype = "invenio"\nurl = "{repo.url}"\ntoken_file = "{token}"\n'
        'profile = "inveniordm"\nrequests_per_minute = 100000\nrequests_per_hour = 1000000\n'
    )
    return config


def push_folder(tmp_path: Path, count: int = 3) -> tuple[Path, dict[str, bytes]]:
    """``tmp_path/out`` holding ``count`` random files (f0.bin, f1.bin, ...), and their bytes by name."""
    out = tmp_path / "out"
    out.mkdir()
    want = {f"f{i}.bin": os.urandom(1000 + i) for i in range(count)}
    for name, data in want.items():
        (out / name).write_bytes(data)
    return out, want


def ledger_path(out: Path) -> Path:
    """Where ``ferry push`` keeps the ledger of pushing ``out`` to target ``t``."""
    return out / ".ferry" / f"push-{TARGET}.sqlite"


def creates(repo: RepositoryHandle) -> list[dict[str, Any]]:
    """Every draft create the sandbox received (its request log), in order."""
    return [r for r in repo.requests_log() if r["method"] == "POST" and r["path"] == "/api/records"]


def assert_holds(files: Mapping[str, Mapping[str, Any]], want: Mapping[str, bytes]) -> None:
    """A draft's files (as the sandbox holds them) are exactly ``want``'s names, every one completed."""
    assert sorted(files) == sorted(want)
    assert all(f["status"] == "completed" for f in files.values()), files
