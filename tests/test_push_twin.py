"""`ferry push` into InvenioRDM: a push that died after its create never leaves a twin draft.

The twin of tests/reliability/test_kill9_matrix.py::test_push_invenio, made certain: the
first push dies right after the server answered its create (the ledger never learns the
draft's id), and the search lags longer than the re-run's look for it. The re-run then
creates a second draft; the oldest-marked-draft rule (``pipeline.push_create``) must find
the first one once the index shows its own, discard the new one and fill the first.
Judged by the sandbox's own state.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from ferry.cli import main
from pipeline import push as push_module
from pipeline import push_create
from pipeline.ledger import Ledger
from pipeline.push_create import MARKER_PREFIX
from tests.fixtures_repository import RepositoryHandle
from tests.push_support import OPEN_RATES, assert_holds, creates, ledger_path, push_config, push_folder

META = ["--title", "Twin", "--creators", "Doe, Jane", "--description", "tiles", "--upload-type", "dataset"]


class Died(BaseException):
    """Stands for kill -9 between the create's answer and the ledger's note of the id."""


@pytest.mark.parametrize("dies_at", ["answer", "ledger"])
def test_a_push_dead_after_its_create_and_a_lagging_search_leave_one_draft(
    dies_at: str,
    tmp_path: Path,
    repository_factory: Callable[..., RepositoryHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = repository_factory(**OPEN_RATES, index_delay_ms=2500)
    config = push_config(tmp_path, repo)
    out, want = push_folder(tmp_path)
    args = ["--config", str(config), "push", str(out), "--target", "t", *META]

    async def die(*args: object, **kwargs: object) -> None:
        raise Died

    def die_now(*args: object, **kwargs: object) -> None:
        raise Died

    with monkeypatch.context() as m:
        if dies_at == "answer":  # the first step after the create's answer
            m.setattr(push_module, "keep_oldest", die)
        else:  # the ledger's note of the id (after the search showed the draft)
            m.setattr(Ledger, "set_remote", die_now)
        with pytest.raises(Died):
            main(args)
    assert len(repo.state()["entities"]) == 1  # the dead run's draft, its id known to nobody

    # The re-run looks once, at once: the index (2.5 s behind) does not show that draft yet.
    monkeypatch.setattr(push_create, "SEARCH_DELAYS", ())
    assert main(args) == 0
    entities = repo.state()["entities"]
    assert len(entities) == 1, entities  # one draft, never a twin
    assert_holds(entities[0]["draft_files"], want)
    made = creates(repo)
    deletes = [r["path"] for r in repo.requests_log() if r["method"] == "DELETE"]
    if dies_at == "answer":
        # The look missed the draft: the re-run created a second one, then deleted it itself
        # once the index showed both, before any file was sent into it.
        assert len(made) == 2, made
        assert len(deletes) == 1 and deletes[0].endswith("/draft") and entities[0]["id"] not in deletes[0]
    else:  # the dead run had waited until the index showed its draft: the re-run found it
        assert len(made) == 1 and deletes == [], (made, deletes)
    # The kept draft carries the push's marker, the one the ledger holds.
    with Ledger.open(ledger_path(out), readonly=True) as ledger:
        row = ledger.get("dir")
    assert row is not None and row.create_token and row.remote_id == entities[0]["id"]
    assert not row.create_pending
    req = urllib.request.Request(f"{repo.url}/api/records/{row.remote_id}/draft")
    req.add_header("Authorization", f"Bearer {repo.token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        idents = json.loads(resp.read())["metadata"]["identifiers"]
    assert {"identifier": MARKER_PREFIX + row.create_token, "scheme": "other"} in idents
