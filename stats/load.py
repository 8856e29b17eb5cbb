"""Load stats runs into pandas with proper dtypes, and the basic questions asked of them.

``load(paths)`` takes stats directories and/or files (``.jsonl``, or the ``.csv`` export
when a run's JSONL is gone) and returns one frame: one row per line, columns in the order
of ``stats.events.FIELDS``, rows in run order (runs by their first timestamp, lines by
``seq``). Needs pandas (an analysis dependency); the pipeline never imports this module.

Dtypes: ``start``/``end`` datetime64 UTC; ``stage``/``status`` categorical; ``bytes``,
``seq``, ``file_count``, ``attempts``, ``schema_version`` Int64; ``zip_used`` boolean;
text columns ``string``; ``extra`` stays a dict (or None) per row.

Each record's final outcome (``final_record_status``, the parts of split records) is
stats/records.py; this module is the frame, its events and the stages' throughput.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from ferry.core.errors import InputError
from stats.events import FIELDS, SCHEMA_VERSION, STAGES, STATUSES, TERMINAL, read_jsonl

INT_COLUMNS = ("schema_version", "seq", "bytes", "file_count", "attempts")
FLOAT_COLUMNS = ("duration_s", "throughput_mbps")
TIME_COLUMNS = ("start", "end")
TEXT_COLUMNS = ("run_id", "host", "worker", "event_id", "recid", "file", "transfer", "error_type", "error", "reason")
# Stages that do work on data (everything but run bookkeeping and record outcomes).
WORK_STAGES = ("resolve", "download", "zip", "transform", "upload", "verify", "publish")

PathLike = str | os.PathLike[str]


def stats_files(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """The stats files behind ``paths``: a directory's ``*.jsonl`` (plus ``*.csv`` exports
    whose JSONL is missing), or files named directly. Unknown or empty inputs are errors."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            jsonl = sorted(path.glob("*.jsonl"))
            stems = {p.stem for p in jsonl}
            csvs = sorted(p for p in path.glob("*.csv") if p.stem not in stems)
            if not jsonl and not csvs:
                raise InputError(f"{path}: no stats files (*.jsonl or *.csv) in this directory")
            found.extend(jsonl + csvs)
        elif path.is_file():
            if path.suffix not in (".jsonl", ".csv"):
                raise InputError(f"{path}: not a stats file (expected .jsonl or .csv)")
            found.append(path)
        else:
            raise InputError(f"{path}: no such stats directory or file")
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path.resolve(), None)
    return list(unique)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of one stats file (torn JSONL lines and non-object lines are skipped)."""
    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        rows = [{k: (v if v != "" else None) for k, v in rec.items()} for rec in frame.to_dict("records")]
        for row in rows:
            text = row.get("extra")
            if text:
                try:
                    row["extra"] = orjson.loads(text)
                except orjson.JSONDecodeError:
                    row["extra"] = {"raw": row["extra"]}
        return rows
    return [row for row in read_jsonl(path) if isinstance(row, dict)]


def _check_version(rows: Sequence[dict[str, Any]], path: Path) -> None:
    for row in rows:
        version = row.get("schema_version")
        try:
            number = int(version) if version is not None else SCHEMA_VERSION
        except (TypeError, ValueError):
            raise InputError(f"{path}: line seq={row.get('seq')}: bad schema_version {version!r}") from None
        if number > SCHEMA_VERSION:
            raise InputError(
                f"{path}: stats schema version {number} is newer than this dataferry reads "
                f"({SCHEMA_VERSION}); upgrade dataferry to analyse it"
            )


def empty_frame() -> pd.DataFrame:
    """A frame with every column and its dtype, and no rows (an empty run)."""
    return typed(pd.DataFrame({name: pd.Series([], dtype=object) for name in FIELDS}))


def load(paths: PathLike | Iterable[PathLike]) -> pd.DataFrame:
    """Every row of every run behind ``paths`` in one typed frame (see the module doc).

    The same run given twice (its directory and its file, or its JSONL and CSV) is kept
    once. ``frame.attrs["files"]`` lists what was read.
    """
    files = stats_files(paths)
    rows: list[dict[str, Any]] = []
    for path in files:
        part = read_rows(path)
        _check_version(part, path)
        rows.extend(part)
    rows = [row for row in rows if row.get("stage") and row.get("status")]
    if not rows:
        frame = empty_frame()
    else:
        frame = typed(pd.DataFrame.from_records(rows, columns=list(FIELDS)))
        frame = frame.drop_duplicates(subset=["run_id", "seq", "event_id", "status"], ignore_index=True)
        frame = order_runs(frame)
    frame.attrs["files"] = [str(p) for p in files]
    return frame


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Cast the schema's columns to their dtypes (missing columns appear as all-NA)."""
    out = pd.DataFrame(index=frame.index)
    for name in FIELDS:
        col = frame[name] if name in frame.columns else pd.Series([None] * len(frame), index=frame.index, dtype=object)
        if name in INT_COLUMNS:
            out[name] = pd.to_numeric(col, errors="coerce").round().astype("Int64")
        elif name in FLOAT_COLUMNS:
            out[name] = pd.to_numeric(col, errors="coerce").astype("float64")
        elif name in TIME_COLUMNS:
            out[name] = pd.to_datetime(col, utc=True, format="ISO8601", errors="coerce")
        elif name == "zip_used":
            out[name] = col.map(_as_bool, na_action="ignore").astype("boolean")
        elif name == "stage":
            out[name] = _category(col, STAGES)
        elif name == "status":
            out[name] = _category(col, STATUSES)
        elif name == "extra":
            out[name] = col.astype(object).where(col.notna(), None)
        else:
            out[name] = col.astype("string")
    return out


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in ("true", "1", "yes") else False if text in ("false", "0", "no") else None


def _category(col: pd.Series, known: Sequence[str]) -> pd.Series:
    """Categorical with the schema's values first; values from newer writers are kept."""
    text = col.astype("string")
    extra = sorted(set(text.dropna().unique()) - set(known))
    return text.astype(pd.CategoricalDtype([*known, *extra]))


def order_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of each run in ``seq`` order, runs in the order they started."""
    first = frame.groupby("run_id", observed=True)["start"].transform("min")
    ordered = frame.assign(_first=first).sort_values(["_first", "run_id", "seq"], kind="stable", na_position="last")
    return ordered.drop(columns="_first").reset_index(drop=True)


# --- the questions asked of every run ------------------------------------------------------


def terminal(frame: pd.DataFrame) -> pd.DataFrame:
    """Terminal rows (ok, failed, skipped, dry-run): one per finished event."""
    return frame[frame["status"].isin(TERMINAL)]


def _event_keys(frame: pd.DataFrame) -> pd.Series:
    return frame["run_id"].astype(str) + "/" + frame["event_id"].astype(str)


def open_events(frame: pd.DataFrame) -> pd.DataFrame:
    """``started`` rows with no terminal row: work cut off by a crash or a kill."""
    started = frame[frame["status"] == "started"]
    done = set(_event_keys(terminal(frame)))
    return started[~_event_keys(started).isin(done)]


def runs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: host, first and last timestamp, wall time, events, open events."""
    if frame.empty:
        return pd.DataFrame(columns=["run_id", "host", "start", "end", "wall_s", "events", "open_events"])
    last = frame[["start", "end"]].max(axis=1)
    opened = open_events(frame).groupby("run_id", observed=True).size()
    out = (
        frame.assign(_last=last)
        .groupby("run_id", sort=False, observed=True)
        .agg(host=("host", "first"), start=("start", "min"), end=("_last", "max"), rows=("seq", "size"))
    )
    out["wall_s"] = (out["end"] - out["start"]).dt.total_seconds()
    out["events"] = terminal(frame).groupby("run_id", observed=True).size().reindex(out.index, fill_value=0)
    out["open_events"] = opened.reindex(out.index, fill_value=0).astype(int)
    return out.drop(columns="rows").reset_index()


def union_seconds(starts: pd.Series, ends: pd.Series) -> float:
    """Length of the union of [start, end] intervals, in seconds (time a stage was busy)."""
    pairs = sorted(zip(starts, ends, strict=True))
    total, cur_start, cur_end = 0.0, None, None
    for start, end in pairs:
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += (cur_end - cur_start).total_seconds()
            cur_start, cur_end = start, end
        elif end > cur_end:
            cur_end = end
    if cur_end is not None:
        total += (cur_end - cur_start).total_seconds()
    return total


THROUGHPUT_COLUMNS = (
    "unit",
    "events",
    "ok",
    "failed",
    "skipped",
    "files",
    "bytes",
    "busy_s",
    "active_s",
    "mbps",
    "median_mbps",
)
# Stages whose bytes cross the network: only they get a rate (a resolve or verify event
# "moves" a record's size in milliseconds, which is no rate at all).
NETWORK_STAGES = ("download", "upload")
# Stages that account per file (their record-level rows, if any, are aggregates).
FILE_STAGES = ("download", "upload")


def data_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows whose bytes are data moved: per-file events, and record-level events only for
    (run, stage, recid) groups without per-file events. A stage that reports each file
    and also the record as a whole (download) would otherwise count its bytes twice."""
    if rows.empty:
        return rows
    keys = ["run_id", "stage", "recid"]
    has_files = rows["file"].notna().groupby([rows[k].astype("string") for k in keys]).transform("any")
    return rows[rows["file"].notna() | ~has_files.astype(bool)]


def stage_throughput(frame: pd.DataFrame, stages: Sequence[str] = WORK_STAGES) -> pd.DataFrame:
    """Per stage: what was counted (``unit``: files or records, never both in one count:
    a record-level row beside the same record's per-file rows is an aggregate and is left
    out), terminal events by status, ok files and bytes, summed event time (``busy_s``),
    wall-clock time with at least one event running (``active_s``), and, for stages that
    move bytes over the network only, the wall-clock throughput ``mbps`` = ok bytes /
    active time (MB = 10^6 bytes) and the median per-file rate ``median_mbps``. Stages
    with no events are left out."""
    ends = terminal(frame)
    out = []
    for stage in stages:
        mine = ends[ends["stage"] == stage]
        if mine.empty:
            continue
        counted = data_rows(mine)
        per_file = stage in FILE_STAGES or bool(counted["file"].notna().all())
        if stage == "zip":
            per_file = False  # one decision per record; the archive name is not a file moved
        ok = counted[counted["status"] == "ok"]
        timed = mine[mine["duration_s"].fillna(0) > 0]
        active = union_seconds(timed["start"], timed["end"]) if len(timed) else 0.0
        ok_bytes = int(ok["bytes"].fillna(0).sum())
        network = stage in NETWORK_STAGES
        moved = ok[ok["throughput_mbps"].notna() & ok["file"].notna()] if network else ok.iloc[0:0]
        out.append(
            {
                "stage": stage,
                "unit": "files" if per_file else "records",
                "events": len(counted),
                "ok": len(ok),
                "failed": int((counted["status"] == "failed").sum()),
                "skipped": int((counted["status"] == "skipped").sum()),
                "files": int(ok["file"].notna().sum()) if per_file else 0,
                "bytes": ok_bytes,
                "busy_s": float(counted["duration_s"].fillna(0).sum()),
                "active_s": active,
                "mbps": ok_bytes / active / 1e6 if network and active > 0 and ok_bytes else float("nan"),
                "median_mbps": float(moved["throughput_mbps"].median()) if len(moved) else None,
            }
        )
    table = pd.DataFrame(out, columns=["stage", *THROUGHPUT_COLUMNS]).set_index("stage")
    table["median_mbps"] = table["median_mbps"].astype("float64")
    return table
