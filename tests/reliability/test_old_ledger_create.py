"""A create left pending in a ledger an older dataferry wrote: the re-run finds its record.

``ferry push`` into InvenioRDM finds an interrupted create by the marker identifier its
creates carry (``ferry-push:<token>``, pipeline/push_create.py). A push ledger written before
the marker existed (ledger schema 1 and 2) holds a pending create whose token was never
written into the draft it made: a look for that marker can never find the draft, so the
re-run created a second draft next to it (the twin this file proves gone). Each case here
builds the ledger file as that older code wrote it (its DDL, its rows, by hand with sqlite3),
puts on the sandbox the draft that older code had created, runs the push again with the
current code, and reads the sandbox's own state: one draft, holding every file.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ferry.cli import main
from pipeline.ledger import Ledger
from pipeline.ledger_schema import LedgerError
from pipeline.push_create import marked
from pipeline.push_metadata import check_new_metadata, dialect
from tests.fixtures_repository import RepositoryHandle
from tests.push_support import OPEN_RATES, assert_holds, creates, ledger_path, push_config, push_folder

TITLE = 'The "old" ledger'  # quotes: the title query must escape them
META = ["--title", TITLE, "--creators", "Doe, Jane", "--description", "tiles", "--upload-type", "dataset"]
FIELDS = {"title": TITLE, "creators": [{"name": "Doe, Jane"}], "description": "tiles", "upload_type": "dataset"}

# The records table of ledger schemas 1 and 2, as dataferry wrote it before schema 3; the
# files table differs: schema 1 kept bare md5 hex in ``md5``, schema 2 "alg:hex" in ``checksum``.
OLD_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, ended_at TEXT, host TEXT NOT NULL,
    pid INTEGER NOT NULL, command TEXT, target TEXT, status TEXT NOT NULL DEFAULT 'running', summary TEXT
);
CREATE TABLE records (
    recid TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'downloading', 'downloaded',
        'zipped', 'uploading', 'uploaded', 'published', 'failed', 'skipped')),
    remote_id TEXT, remote_state TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    updated_at TEXT NOT NULL, file_count INTEGER, bytes INTEGER, has_metadata INTEGER NOT NULL DEFAULT 1,
    create_token TEXT, create_started_at TEXT, create_pending INTEGER NOT NULL DEFAULT 0, run_id TEXT
);
CREATE INDEX records_status ON records (status);
CREATE TABLE files (
    recid TEXT NOT NULL REFERENCES records (recid) ON DELETE CASCADE,
    key TEXT NOT NULL, size INTEGER, {column} TEXT,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'downloaded', 'uploaded', 'verified', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, updated_at TEXT NOT NULL,
    PRIMARY KEY (recid, key)
) WITHOUT ROWID;
CREATE INDEX files_status ON files (status);
"""


def _old_ledger(path: Path, version: int, token: str) -> None:
    """The push ledger of a push killed after its create was sent, as schema ``version`` wrote
    it: ``Ledger.begin_create`` had committed the intent (a fresh uuid4 token), nothing after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(OLD_DDL.format(column="md5" if version == 1 else "checksum"))
    now = "2026-11-30T10:00:00.000Z"
    with conn:
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
        conn.execute("INSERT INTO meta VALUES ('target', 't')")
        conn.execute(
            "INSERT INTO records (recid, updated_at, create_token, create_started_at, create_pending, run_id) "
            "VALUES ('dir', ?, ?, ?, 1, 'old-run')",
            (now, token, now),
        )
    conn.close()


def _old_draft(repo: RepositoryHandle, body: dict[str, Any]) -> str:
    """The draft the interrupted push had created (its answer never reached the ledger)."""
    req = urllib.request.Request(f"{repo.url}/api/records", data=json.dumps(body).encode(), method="POST")
    req.add_header("Authorization", f"Bearer {repo.token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["id"])


@pytest.mark.parametrize(
    ("version", "carries_marker"),
    [(1, False), (2, False), (2, True)],
    ids=["schema1-unmarked", "schema2-unmarked", "schema2-marked"],
)
def test_a_pending_create_in_an_old_ledger_finds_its_draft(
    version: int,
    carries_marker: bool,
    tmp_path: Path,
    repository_factory: Callable[..., RepositoryHandle],
) -> None:
    repo = repository_factory(**OPEN_RATES)
    config = push_config(tmp_path, repo)
    out, want = push_folder(tmp_path)
    token = uuid.uuid4().hex
    _old_ledger(ledger_path(out), version, token)
    # Before the marker (schema 1, and schema 2 until 2026-12-04) the draft carried none;
    # a schema-2 ledger written since carries its token as the marker.
    body = dialect("inveniordm")(check_new_metadata(FIELDS))
    # Older still, another directory's push with the same title (marked): never taken for ours.
    other = _old_draft(repo, marked(body, uuid.uuid4().hex))
    old = _old_draft(repo, marked(body, token) if carries_marker else body)

    assert main(["--config", str(config), "push", str(out), "--target", "t", *META]) == 0

    entities = {e["id"]: e for e in repo.state()["entities"]}
    assert sorted(entities) == sorted([other, old]), entities  # the old draft filled, never a twin
    assert_holds(entities[old]["draft_files"], want)
    assert not entities[other]["draft_files"]  # the other push's draft untouched
    made = creates(repo)
    assert len(made) == 2, made  # the two made above, none by the re-run
    with Ledger.open(ledger_path(out), readonly=True) as ledger:
        row = ledger.get("dir")
    assert row is not None and row.remote_id == old and not row.create_pending


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_ledger_is_migrated_and_its_pending_creates_marked_legacy(tmp_path: Path, version: int) -> None:
    path = tmp_path / "push-t.sqlite"
    _old_ledger(path, version, "abc")
    conn = sqlite3.connect(path)
    with conn:  # a finished record beside the pending create, with a verified file
        conn.execute(
            "INSERT INTO records (recid, updated_at, remote_id, status) VALUES ('done', 'x', 'r1', 'published')"
        )
        value = "0" * 32 if version == 1 else "md5:" + "0" * 32
        column = "md5" if version == 1 else "checksum"
        conn.execute(
            f"INSERT INTO files (recid, key, size, {column}, status, updated_at) "
            "VALUES ('done', 'a', 1, ?, 'verified', 'x')",
            (value,),
        )
    conn.close()
    with pytest.raises(LedgerError, match=f"schema version {version}: open it once for writing"):
        Ledger.open(path, readonly=True)
    with Ledger.open(path, target="t") as ledger:
        pending, done = ledger.get("dir"), ledger.get("done")
        assert pending is not None and pending.create_pending and pending.create_legacy
        assert pending.create_token == "abc"  # kept: a schema-2 draft may carry it as its marker
        assert done is not None and not done.create_legacy
        assert [str(f.checksum) for f in ledger.file_status("done")] == ["md5:" + "0" * 32]
        ledger.begin_create("dir", token="abc")  # a create this version begins: marked, not legacy
        again = ledger.get("dir")
        assert again is not None and again.create_pending and not again.create_legacy
    with Ledger.open(path, readonly=True) as ledger:  # migrated: views work
        assert ledger.get("dir") is not None
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    conn.close()
