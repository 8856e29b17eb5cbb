"""`ferry demo`: the README's main job, end to end on the local sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.cli import main
from pipeline.ledger import Ledger
from stats.flow import flow_table, layer_totals
from stats.load import load
from stats.records import final_record_status


def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workdir = tmp_path / "demo"
    assert main(["demo", "--workdir", str(workdir), "--recids", "80509", "81045", "81002"]) == 0
    out = capsys.readouterr().out
    # The single upload puts 80509 there; the bulk adds the others and skips it; the re-run skips all.
    assert "record 80509: ok" in out and "2 ok, 1 skipped" in out and "3 skipped" in out

    # Stats of a real run load; every record ends ok; the Sankey adds up at every layer.
    frame = load(workdir / "stats")
    final = final_record_status(frame)
    assert final["status"].astype(str).to_dict() == {"80509": "ok", "81045": "ok", "81002": "ok"}
    nodes, links = flow_table(frame)
    assert set(layer_totals(nodes, links)["total"]) == {3}

    # Every file the ledger says is verified; the figures are real PNGs.
    ledger_path = next((workdir / "data" / ".ferry").glob("ledger-*.sqlite"))
    with Ledger.open(ledger_path, readonly=True) as ledger:
        rows = [row for recid in ("80509", "81045", "81002") for row in ledger.file_status(recid)]
        assert rows and all(row.status == "verified" for row in rows)
        assert {ledger.get(r).status for r in ("80509", "81045", "81002")} == {"published"}  # type: ignore[union-attr]
    pngs = sorted((workdir / "figs").glob("*.png"))
    assert len(pngs) >= 5
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
