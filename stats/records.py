"""Each record's final outcome across runs, from a loaded stats frame (``stats.load.load``).

``final_record_status`` is the one answer to "how did each record end" that ``ferry stats
summary``, the flow figure and the notebooks share; a record split into a series of linked
records (``oversize = "split"``) is one record here, its parts apart (``is_part``,
``whole_of``, ``final_record_status(parts=True)``).
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from stats.events import TERMINAL
from stats.load import open_events, terminal

# Derived record status for records with no terminal record event and open events.
INTERRUPTED = "interrupted"

RECORD_COLUMNS = (
    "status",
    "run_id",
    "start",
    "end",
    "duration_s",
    "bytes",
    "file_count",  # the source record's files
    "uploaded_files",  # the files put on the target (zip bundles and manifests, not their members)
    "parts",  # oversize = "split": the linked records it went as (0: one record)
    "zip_used",
    "error_type",
    "error",
    "reason",
    "derived",
)
# Record-event facts kept in ``extra`` (pipeline/context.py RecordResult.event_files).
_EXTRA_COLUMNS = ("uploaded_files", "parts")


# A part of a record split into a series (``oversize = "split"``: ``81009.part-1-of-3``,
# metadata.readers.PART_SUFFIX): its rows are the work of its whole record, which has its
# own ``record`` event; counted as a record too it would make one record four.
_PART_RECID = r"\.part-[1-9][0-9]*-of-[1-9][0-9]*$"


def is_part(recids: pd.Series) -> pd.Series:
    """True where a recid names one part of a split record."""
    return recids.astype("string").str.contains(_PART_RECID, regex=True).fillna(False).astype(bool)


def whole_of(recid: str) -> str | None:
    """The split record a part's recid belongs to (``81009.part-1-of-3`` -> ``81009``), else None."""
    match = re.search(_PART_RECID, recid) if isinstance(recid, str) else None  # a run's events have none
    return recid[: match.start()] if match else None


def final_record_status(frame: pd.DataFrame, *, parts: bool = False) -> pd.DataFrame:
    """One row per recid (the index): its final status and the facts of that outcome.

    Records only; with ``parts=True`` the parts of split records instead (each part's
    rows are its whole record's work: never counted as records beside it).

    The final status is the record's last terminal ``record`` event (across all runs, in
    run order), except that a ``skipped`` (already done) after an earlier ``ok`` keeps the
    ``ok`` and its facts. A recid with no terminal ``record`` event is ``interrupted`` when it has
    open events; otherwise (writers that emit no record events) it is derived from its
    work events: ``failed`` if the last event of any (stage, file) failed, else the last
    terminal status; ``derived`` is True for those.
    """
    statuses = pd.CategoricalDtype([*TERMINAL, INTERRUPTED])
    rows = frame[frame["recid"].notna() & ~frame["stage"].isin(["run", "summary"])]
    rows = rows[is_part(rows["recid"]) == parts]
    ends = terminal(rows)
    record_rows = ends[ends["stage"] == "record"]
    last = record_rows.groupby("recid", sort=False, observed=True).tail(1)
    # "skipped" means "already done": after an earlier ok the record stays ok (a re-run
    # that found everything on the target must not hide the run that put it there).
    last_ok = record_rows[record_rows["status"] == "ok"].groupby("recid", sort=False, observed=True).tail(1)
    ok_by_recid = dict(zip(last_ok["recid"], last_ok.index, strict=True))
    picks = [
        ok_by_recid.get(recid, idx) if status == "skipped" else idx
        for idx, recid, status in zip(last.index, last["recid"], last["status"], strict=True)
    ]
    final = record_rows.loc[picks].set_index("recid")
    out = final.reindex(columns=[c for c in RECORD_COLUMNS if c != "derived"]).copy()
    for name in _EXTRA_COLUMNS:
        out[name] = [e.get(name) if isinstance(e, dict) else None for e in final["extra"]]
    out["status"] = out["status"].astype("string")
    out["derived"] = False
    missing = [r for r in rows["recid"].drop_duplicates() if r not in out.index]
    if missing:
        open_recids = set(open_events(rows)["recid"].dropna())
        groups = rows[rows["recid"].isin(missing)].groupby("recid", sort=False, observed=True)
        derived = [_derived_record(groups.get_group(r), r in open_recids) for r in missing]
        out = pd.concat([out, pd.DataFrame(derived, index=pd.Index(missing, name="recid"))])
    out = out.reindex(columns=list(RECORD_COLUMNS))
    out["status"] = out["status"].astype(statuses)
    for name in ("bytes", "file_count", "uploaded_files"):
        out[name] = pd.to_numeric(out[name], errors="coerce").astype("Int64")
    out["parts"] = pd.to_numeric(out["parts"], errors="coerce").fillna(0).astype("int64")
    out["zip_used"] = out["zip_used"].astype("boolean")
    out["derived"] = out["derived"].astype(bool)
    out["duration_s"] = pd.to_numeric(out["duration_s"], errors="coerce").astype("float64")
    for name in ("start", "end"):
        out[name] = pd.to_datetime(out[name], utc=True)
    for name in ("run_id", "error_type", "error", "reason"):
        out[name] = out[name].astype("string")
    out.index = out.index.astype("string")
    out.index.name = "recid"
    return out


def _derived_record(mine: pd.DataFrame, is_open: bool) -> dict[str, Any]:
    """The outcome of a recid that has no terminal ``record`` event, from its other rows."""
    ends = terminal(mine)
    if is_open or ends.empty:
        status = INTERRUPTED
    else:
        latest = ends.groupby(["stage", "file"], observed=True, dropna=False).tail(1)
        status = "failed" if (latest["status"] == "failed").any() else str(ends["status"].iloc[-1])
    failed = ends[ends["status"] == "failed"]
    last = failed.iloc[-1] if len(failed) else (ends.iloc[-1] if len(ends) else mine.iloc[-1])
    zips = ends[ends["stage"] == "zip"]
    counts = mine["file_count"].dropna()
    return {
        "status": status,
        "run_id": mine["run_id"].iloc[-1],
        "start": mine["start"].min(),
        "end": mine["end"].max(),
        "duration_s": float("nan"),
        "bytes": int(ends.loc[(ends["status"] == "ok") & (ends["stage"] == "upload"), "bytes"].fillna(0).sum()),
        "file_count": counts.iloc[-1] if len(counts) else pd.NA,
        "zip_used": bool((zips["status"] == "ok").any()) if len(zips) else pd.NA,
        "error_type": last["error_type"] if len(failed) else pd.NA,
        "error": last["error"] if len(failed) else pd.NA,
        "reason": last["reason"],
        "derived": status != INTERRUPTED,
    }
