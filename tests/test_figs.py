"""Sankey flow table, time series and figure files (valid, non-empty PNG; Sankey HTML)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from figs.figures import run_label, write_figures
from stats.events import StatsWriter
from stats.flow import flow_table, layer_totals, record_paths
from stats.load import load
from stats.synth import simulate_run, synthetic_records
from stats.timeline import in_flight, throughput_series

DATA = Path(__file__).parent / "data" / "stats"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("synth")
    simulate_run(out, synthetic_records(30))
    return load(out)


def dry_run(tmp_path: Path) -> pd.DataFrame:
    """A --dry-run over three records: plans only, nothing moved."""
    with StatsWriter(tmp_path, run_id="dry") as stats:
        for recid in ("1", "2", "3"):
            stats.record("download", "dry-run", recid, "a.root", bytes=10)
            stats.record("record", "dry-run", recid, reason="would upload 1 file")
    return load(tmp_path)


def assert_flows_add_up(frame: pd.DataFrame) -> pd.DataFrame:
    """At every layer, recids on its nodes + recids that ended earlier = all recids; and
    every node passes on what it receives, except those whose path ends there."""
    nodes, links = flow_table(frame)
    n_recids = frame.loc[frame["recid"].notna() & ~frame["stage"].isin(["run", "summary"]), "recid"].nunique()
    totals = layer_totals(nodes, links)
    assert list(totals["total"]) == [n_recids] * 5, totals
    inflow = links.groupby("target")["value"].sum()
    outflow = links.groupby("source")["value"].sum()
    for node in nodes.itertuples():
        came = n_recids if node.layer == 0 else int(inflow.get(node.id, 0))
        assert came == node.value, node
        assert int(outflow.get(node.id, 0)) + node.ends == node.value, node
    assert int(nodes["ends"].sum()) == n_recids
    return nodes


def test_sankey_flows_add_up_on_the_synthetic_run(synth: pd.DataFrame) -> None:
    nodes = assert_flows_add_up(synth)
    value = dict(zip(nodes["id"], nodes["value"], strict=True))
    assert value["0:selected"] == 30 and value["1:downloaded"] == 24 and value["4:published"] == 20
    assert value["2:zipped"] == 9 and value["2:not zipped"] == 14 and value["1:interrupted"] == 2
    ends = record_paths(synth)["end"].to_dict()
    assert ends["80003"] == "1:download failed"
    assert ends["80010"] == "2:zip failed"
    assert ends["80011"] == "3:upload failed"
    assert ends["80026"] == "3:verify failed"
    assert ends["80015"] == "4:publish failed"
    assert ends["80019"] == "1:failed: NoFilesError"
    assert ends["80022"] == "1:skipped (already done)"
    assert ends["80028"] == "1:interrupted"
    assert ends["80000"] == "4:published"


@pytest.mark.parametrize("case", ["empty", "interrupted", "torn", "no-record-events", "csv-only"])
def test_sankey_flows_add_up_on_edge_cases(case: str) -> None:
    assert_flows_add_up(load(DATA / case))


def test_sankey_flows_of_merged_runs_and_dry_runs(tmp_path: Path) -> None:
    nodes = assert_flows_add_up(load([DATA / "run-a", DATA / "run-b"]))
    # 301 failed its upload in run a and was redone in run b: it flows as it went last.
    # 302 was uploaded in run a and found already done in run b: it flows as run a took it.
    assert dict(zip(nodes["id"], nodes["value"], strict=True))["3:uploaded"] == 2
    nodes = assert_flows_add_up(dry_run(tmp_path))
    assert dict(zip(nodes["id"], nodes["ends"], strict=True)) == {"0:selected": 0, "1:dry run": 3}


def test_sankey_reads_zip_decisions_and_early_transform_failures(tmp_path: Path) -> None:
    """As upload/pipeline.py writes them: the zipper's event is ``ok`` with ``zip_used``
    false when it decides against zipping; the transform may fail before any zip."""
    with StatsWriter(tmp_path, run_id="pipe") as stats:
        for recid, zip_used in (("1", False), ("2", True)):
            rec = stats.open("record", recid)
            stats.open("download", recid, "a.root", bytes=5).close("ok")
            stats.open("transform", recid).close("ok")
            stats.open("zip", recid).close("ok", zip_used=zip_used, reason="policy")
            stats.open("upload", recid, "a.root", bytes=5).close("ok")
            rec.close("ok", zip_used=zip_used)
        rec = stats.open("record", "3")
        stats.open("download", "3", "a.root", bytes=5).close("ok")
        stats.open("transform", "3").close("failed", error="metadata.title missing")
        rec.close("failed", error="metadata.title missing")
    frame = load(tmp_path)
    assert_flows_add_up(frame)
    ends = record_paths(frame)["end"].to_dict()
    assert ends == {"1": "4:not published (draft)", "2": "4:not published (draft)", "3": "2:transform failed"}
    assert record_paths(frame).loc["1", "path"][2] == "2:not zipped"
    assert record_paths(frame).loc["2", "path"][2] == "2:zipped"


def test_in_flight_and_throughput_series() -> None:
    frame = load(DATA / "run-a")
    steps = in_flight(frame, "upload")
    # Uploads: x.root 1-3 s, y.root 1-4 s after the run's first event.
    assert steps.to_dict("list") == {
        "elapsed": [1.0, 3.0, 4.0],
        "files": [2, 1, 0],
        "bytes": [8_000_000, 3_000_000, 0],
    }
    series = throughput_series(frame, "upload", bin_s=1.0)
    # Only the ok upload counts: 3 MB over 3 s = 1 MB/s in bins 1, 2, 3.
    assert np.allclose(series["mbps"].to_numpy()[:5], [0, 1, 1, 1, 0])
    assert series["mbps"].sum() * 1.0 * 1e6 == pytest.approx(3_000_000)


def test_throughput_series_keeps_every_byte(synth: pd.DataFrame) -> None:
    for stage in ("download", "upload"):
        series = throughput_series(synth, stage)
        ok = synth[(synth["stage"] == stage) & (synth["status"] == "ok")]
        assert (series["mbps"].sum() * series.attrs["bin_s"] * 1e6) == pytest.approx(float(ok["bytes"].sum()))


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 10_000, path  # a real figure, not an empty canvas
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 800, (path, image.shape)
    assert float(image[..., :3].std()) > 0.02, path  # not a blank page


def test_every_figure_is_a_valid_png(synth: pd.DataFrame, tmp_path: Path) -> None:
    written = write_figures(synth, tmp_path / "figs")
    names = sorted(p.name for p in written)
    assert names == [
        "concurrency.png",
        "download_rates.png",
        "durations.png",
        "errors.png",
        "sankey.html",
        "sankey.png",
        "throughput.png",
        "upload_rates.png",
    ]
    for path in written:
        if path.suffix == ".png":
            assert_png(path)
    html = (tmp_path / "figs" / "sankey.html").read_text()
    assert "plotly" in html and "downloaded: 24" in html and "sim-run" in html


@pytest.mark.parametrize("case", ["empty", "interrupted", "run-a"])
def test_figures_of_small_and_empty_runs(case: str, tmp_path: Path) -> None:
    frame = load(DATA / case)
    for path in write_figures(frame, tmp_path, html=False):
        assert_png(path)


def test_run_label() -> None:
    assert run_label(load(DATA / "empty")) == "empty run"
    assert run_label(load(DATA / "run-a")) == "run 20250301T110000Z-a00000 (h1, 2025-03-01 11:00 UTC)"
    assert run_label(load([DATA / "run-a", DATA / "run-b"])).startswith("2 runs: 20250301T110000Z-a00000, ")
