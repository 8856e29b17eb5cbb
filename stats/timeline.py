"""Time series derived from event intervals: work in flight and throughput over time.

An event's interval is [start, end] of its terminal row; an event that never finished
(an interrupted run) runs until the last timestamp of its run. Times are given as seconds
since the first start in the frame (``elapsed``), which is what the figures plot.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from stats.load import open_events, terminal

INTERVAL_COLUMNS = ["run_id", "event_id", "stage", "recid", "file", "status", "start", "end", "bytes", "open"]


def origin(frame: pd.DataFrame) -> pd.Timestamp | None:
    """The first timestamp of the frame: time zero of every time axis."""
    starts = frame["start"].dropna()
    return None if starts.empty else starts.min()


def intervals(frame: pd.DataFrame, stages: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per event with a duration: finished ones and still-open ones (``open``)."""
    ends = terminal(frame)
    ends = ends[ends["duration_s"].fillna(0) > 0]
    still = open_events(frame)
    if not still.empty:
        last = frame[["start", "end"]].max(axis=1).groupby(frame["run_id"]).max()
        still = still.assign(end=still["run_id"].map(last).astype(frame["end"].dtype))
    parts = [ends.assign(open=False), still.assign(open=True)]
    out = pd.concat([p for p in parts if not p.empty]) if any(not p.empty for p in parts) else ends.assign(open=False)
    out = out.reindex(columns=INTERVAL_COLUMNS)
    if stages is not None:
        out = out[out["stage"].isin(stages)]
    out["stage"] = out["stage"].astype(str)
    out["open"] = out["open"].astype(bool)
    return out.sort_values("start", kind="stable").reset_index(drop=True)


def in_flight(frame: pd.DataFrame, stage: str) -> pd.DataFrame:
    """Step function of one stage's concurrency: at each ``elapsed`` second (from the
    frame's origin), how many ``files`` (events) and ``bytes`` are in flight from then on."""
    spans = intervals(frame, [stage])
    t0 = origin(frame)
    if spans.empty or t0 is None:
        return pd.DataFrame({"elapsed": pd.Series(dtype=float), "files": pd.Series(dtype=int), "bytes": []})
    starts = (spans["start"] - t0).dt.total_seconds().to_numpy()
    ends = (spans["end"] - t0).dt.total_seconds().to_numpy()
    size = spans["bytes"].fillna(0).astype("int64").to_numpy()
    times = np.concatenate([starts, ends])
    files = np.concatenate([np.ones(len(starts), dtype=np.int64), -np.ones(len(ends), dtype=np.int64)])
    weights = np.concatenate([size, -size])
    # At equal times, ends before starts: an event ending as the next begins is not overlap.
    order = np.lexsort((files, times))
    steps = pd.DataFrame(
        {"elapsed": times[order], "files": np.cumsum(files[order]), "bytes": np.cumsum(weights[order])}
    )
    # Keep the last value at each instant.
    return steps.groupby("elapsed", sort=True).tail(1).reset_index(drop=True)


def nice_bin(span_s: float, target_bins: int = 80) -> float:
    """A round bin width (1, 2, 5 x 10^k seconds) giving about ``target_bins`` bins."""
    raw = max(span_s / target_bins, 1e-3)
    exp = 10 ** np.floor(np.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * exp:
            return float(mult * exp)
    return float(10 * exp)


def throughput_series(frame: pd.DataFrame, stage: str, bin_s: float | None = None) -> pd.DataFrame:
    """MB/s of one stage over time: each ok event's bytes spread evenly over its
    interval, summed in bins of ``bin_s`` seconds. Columns: ``elapsed`` (bin start, s
    since origin), ``mbps``."""
    t0 = origin(frame)
    ends = terminal(frame)
    ok = ends[(ends["stage"] == stage) & (ends["status"] == "ok") & (ends["duration_s"].fillna(0) > 0)]
    ok = ok[ok["bytes"].fillna(0) > 0]
    if ok.empty or t0 is None:
        empty = pd.DataFrame({"elapsed": pd.Series(dtype=float), "mbps": pd.Series(dtype=float)})
        empty.attrs["bin_s"] = bin_s or 1.0
        return empty
    last = frame[["start", "end"]].max(axis=1).max()
    span = (last - t0).total_seconds()
    width = bin_s or nice_bin(span)
    edges = np.arange(0.0, span + width, width)
    total = np.zeros(len(edges))
    starts = (ok["start"] - t0).dt.total_seconds().to_numpy()
    stops = (ok["end"] - t0).dt.total_seconds().to_numpy()
    rates = ok["bytes"].astype("float64").to_numpy() / np.maximum(stops - starts, 1e-9)
    for a, b, rate in zip(starts, stops, rates, strict=True):
        # Overlap of [a, b] with each bin, times the event's rate.
        overlap = np.clip(np.minimum(edges + width, b) - np.maximum(edges, a), 0, None)
        total += overlap * rate
    series = pd.DataFrame({"elapsed": edges, "mbps": total / width / 1e6})
    series.attrs["bin_s"] = width
    return series
