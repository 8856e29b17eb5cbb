"""Time series derived from event intervals: work in flight and throughput over time.

An event's interval is [start, end] of its terminal row; an event that never finished
(an interrupted run) runs until the last timestamp of its run.

Time axis (``elapsed``, seconds): runs that overlap in time, or follow each other within
``MAX_GAP_S``, form a *session* and share a clock; sessions are laid end to end with the
idle time between them removed. One run: seconds since its first event. A crashed run
and its resume the next day: one axis with both, not a day of nothing in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stats.load import data_rows, open_events, terminal

INTERVAL_COLUMNS = ["run_id", "event_id", "stage", "recid", "file", "status", "start", "end", "bytes", "open"]
MAX_GAP_S = 600.0


@dataclass(frozen=True)
class Session:
    """Runs sharing a clock: ``start``/``end`` in UTC, placed at ``offset`` s on the axis."""

    runs: tuple[str, ...]
    start: pd.Timestamp
    end: pd.Timestamp
    offset: float

    @property
    def length(self) -> float:
        return float((self.end - self.start).total_seconds())


def sessions(frame: pd.DataFrame, max_gap_s: float = MAX_GAP_S) -> list[Session]:
    """The frame's runs grouped into sessions, in time order, with their axis offsets."""
    if frame.empty or frame["start"].isna().all():
        return []
    last = frame[["start", "end"]].max(axis=1)
    spans = (
        frame.assign(_last=last)
        .groupby("run_id", observed=True)
        .agg(first=("start", "min"), last=("_last", "max"))
        .sort_values("first")
    )
    groups: list[tuple[list[str], pd.Timestamp, pd.Timestamp]] = []
    for run_id, row in spans.iterrows():
        if groups and (row["first"] - groups[-1][2]).total_seconds() <= max_gap_s:
            runs, start, end = groups[-1]
            groups[-1] = ([*runs, str(run_id)], start, max(end, row["last"]))
        else:
            groups.append(([str(run_id)], row["first"], row["last"]))
    out, offset = [], 0.0
    for runs, start, end in groups:
        session = Session(tuple(runs), start, end, offset)
        out.append(session)
        offset += session.length
    return out


def span_seconds(frame: pd.DataFrame) -> float:
    """Length of the time axis (all sessions end to end)."""
    parts = sessions(frame)
    return parts[-1].offset + parts[-1].length if parts else 0.0


def elapsed(times: pd.Series, run_ids: pd.Series, parts: Sequence[Session]) -> np.ndarray:
    """Axis position (s) of each timestamp, given the run it belongs to."""
    # Naive UTC datetime64 on both sides: exact, vectorised differences.
    start = {r: s.start.tz_convert(None).to_datetime64() for s in parts for r in s.runs}
    offset = {r: s.offset for s in parts for r in s.runs}
    ids = run_ids.astype(str)
    base = np.array([start[r] for r in ids], dtype="datetime64[ns]")
    since = (times.dt.tz_convert(None).to_numpy().astype("datetime64[ns]") - base) / np.timedelta64(1, "s")
    out: np.ndarray = np.asarray(since, dtype=float) + ids.map(offset).to_numpy(dtype=float)
    return out


def _keys(rows: pd.DataFrame) -> pd.Index:
    return pd.Index(rows["run_id"].astype(str) + "/" + rows["event_id"].astype(str))


def intervals(frame: pd.DataFrame, stages: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per event with a duration: finished ones and still-open ones (``open``)."""
    # A record-level row beside the same record's per-file rows (download) is a total of
    # them, not more work in flight: drawing it would count every such record twice.
    ends = data_rows(terminal(frame))
    ends = ends[ends["duration_s"].fillna(0) > 0]
    still = data_rows(open_events(frame))
    if not still.empty:
        last = frame[["start", "end"]].max(axis=1).groupby(frame["run_id"]).max()
        still = still.assign(end=still["run_id"].map(last).astype(frame["end"].dtype))
    # Bytes in flight are the bytes at stake: the size announced on the started line (a
    # failed transfer's terminal line says how much arrived, often 0), or the bytes moved.
    started = frame[frame["status"] == "started"]
    announced = pd.Series(started["bytes"].to_numpy(), index=_keys(started))
    announced = announced[~announced.index.duplicated()]
    if not ends.empty:
        at_start = _keys(ends).map(announced).fillna(0).astype("Int64").to_numpy()
        ends = ends.assign(bytes=np.maximum(ends["bytes"].fillna(0).to_numpy(), at_start))
    parts = [p for p in (ends.assign(open=False), still.assign(open=True)) if not p.empty]
    out = pd.concat(parts) if parts else ends.assign(open=False)
    out = out.reindex(columns=INTERVAL_COLUMNS)
    if stages is not None:
        out = out[out["stage"].isin(stages)]
    out["stage"] = out["stage"].astype(str)
    out["open"] = out["open"].astype(bool)
    return out.sort_values("start", kind="stable").reset_index(drop=True)


def in_flight(frame: pd.DataFrame, stage: str) -> pd.DataFrame:
    """Step function of one stage's concurrency: from each ``elapsed`` second on, how many
    ``files`` (events) and ``bytes`` are in flight."""
    spans = intervals(frame, [stage])
    if spans.empty:
        return pd.DataFrame({"elapsed": pd.Series(dtype=float), "files": pd.Series(dtype=int), "bytes": []})
    parts = sessions(frame)
    starts = elapsed(spans["start"], spans["run_id"], parts)
    ends = elapsed(spans["end"], spans["run_id"], parts)
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
    interval, summed in bins of ``bin_s`` seconds (``attrs["bin_s"]``). Columns:
    ``elapsed`` (bin start on the time axis, s), ``mbps``."""
    ends = data_rows(terminal(frame))
    ok = ends[(ends["stage"] == stage) & (ends["status"] == "ok") & (ends["duration_s"].fillna(0) > 0)]
    ok = ok[ok["bytes"].fillna(0) > 0]
    span = span_seconds(frame)
    width = bin_s or nice_bin(span)
    if ok.empty:
        empty = pd.DataFrame({"elapsed": pd.Series(dtype=float), "mbps": pd.Series(dtype=float)})
        empty.attrs["bin_s"] = width
        return empty
    parts = sessions(frame)
    edges = np.arange(0.0, span + width, width)
    total = np.zeros(len(edges))
    starts = elapsed(ok["start"], ok["run_id"], parts)
    stops = elapsed(ok["end"], ok["run_id"], parts)
    rates = ok["bytes"].astype("float64").to_numpy() / np.maximum(stops - starts, 1e-9)
    for a, b, rate in zip(starts, stops, rates, strict=True):
        # Overlap of [a, b] with each bin, times the event's rate.
        overlap = np.clip(np.minimum(edges + width, b) - np.maximum(edges, a), 0, None)
        total += overlap * rate
    series = pd.DataFrame({"elapsed": edges, "mbps": total / width / 1e6})
    series.attrs["bin_s"] = width
    return series
