"""What a run (or several) did, as numbers: ``summarize`` for machines, ``format_summary``
for a terminal. MB = 10^6 bytes, GB = 10^9 bytes, rates in MB/s."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ferry.progress import human_bytes
from stats.load import WORK_STAGES, open_events, runs, stage_throughput, terminal, union_seconds
from stats.records import final_record_status, is_part
from stats.timeline import span_seconds

RECORD_STATUSES = ("ok", "failed", "skipped", "dry-run", "interrupted")


def _clean(value: Any) -> Any:
    """JSON-friendly scalars: NA/NaN -> None, numpy numbers -> int/float, times -> ISO."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat().replace("+00:00", "Z")
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _is(values: pd.Series, flag: bool) -> pd.Series:
    """Nullable boolean column equal to ``flag`` (NA counts as neither)."""
    return values.eq(flag).fillna(False).astype(bool)


def error_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Each failure counted once, where it happened: failed work events, plus failed
    ``record`` events of records with no failed work event (e.g. a record with no files).
    Columns: stage, error_type, count, records (distinct recids), example (a message)."""
    ends = terminal(frame)
    failed = ends[ends["status"] == "failed"]
    work = failed[failed["stage"].isin(WORK_STAGES)]
    records = failed[(failed["stage"] == "record") & ~failed["recid"].isin(set(work["recid"].dropna()))]
    rows = pd.concat([work, records])
    if rows.empty:
        return pd.DataFrame(columns=["stage", "error_type", "count", "records", "example"])
    rows = rows.assign(stage=rows["stage"].astype(str), error_type=rows["error_type"].fillna("unknown").astype(str))
    table = (
        rows.groupby(["stage", "error_type"], sort=False)
        .agg(count=("status", "size"), records=("recid", "nunique"), example=("error", "last"))
        .reset_index()
        .sort_values(["count", "stage"], ascending=[False, True], kind="stable")
        .reset_index(drop=True)
    )
    return table


def records_per_run(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per run: its records by the outcome it gave them (each record's last terminal
    ``record`` event in that run). A re-run that found everything done shows its skips
    here, while the merged final status keeps the run that did the work."""
    ends = terminal(frame)
    rows = ends[(ends["stage"] == "record") & ends["recid"].notna()]
    rows = rows[~is_part(rows["recid"])]  # a split record's parts are not records of their own
    last = rows.groupby(["run_id", "recid"], sort=False, observed=True).tail(1)
    out: dict[str, dict[str, int]] = {}
    for (run_id, status), count in last.groupby(["run_id", "status"], observed=True).size().items():
        if count:
            out.setdefault(str(run_id), {})[str(status)] = int(count)
    return out


def per_worker(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Records, files and bytes each worker moved, and its upload throughput (bytes over the
    union of its upload intervals): the view of a ``--cluster`` run. Empty for a run in one
    process (its rows carry no ``worker``)."""
    if "worker" not in frame.columns:
        return []
    ends = terminal(frame)
    ends = ends[ends["worker"].notna()]
    out = []
    for worker, mine in ends.groupby("worker", observed=True):
        records = mine[(mine["stage"] == "record") & mine["recid"].notna()]
        records = records[~is_part(records["recid"])]
        ups = mine[(mine["stage"] == "upload") & (mine["status"] == "ok") & mine["file"].notna()]
        downs = mine[(mine["stage"] == "download") & (mine["status"] == "ok") & mine["file"].notna()]
        busy = union_seconds(ups["start"], ups["end"]) if len(ups) else 0.0
        nbytes = int(ups["bytes"].fillna(0).sum())
        out.append(
            {
                "worker": str(worker),
                "records_ok": int((records["status"] == "ok").sum()),
                "records_failed": int((records["status"] == "failed").sum()),
                "records_skipped": int((records["status"] == "skipped").sum()),
                "files_downloaded": len(downs),
                "files_uploaded": len(ups),
                "bytes_uploaded": nbytes,
                "upload_mbps": _clean(nbytes / busy / 1e6) if busy > 0 else None,
            }
        )
    return out


def summarize(frame: pd.DataFrame, *, top: int = 10) -> dict[str, Any]:
    """The numbers of a run (or of merged runs) as a JSON-ready dict."""
    final = final_record_status(frame)
    ok_records = final[final["status"] == "ok"]
    counts = final["status"].astype(str).value_counts()
    parts = final_record_status(frame, parts=True)["status"].astype(str).value_counts()
    per_run = records_per_run(frame)
    skip_events = sum(r.get("skipped", 0) for r in per_run.values())
    through = stage_throughput(frame)
    run_table = runs(frame)
    # Time any run was running: runs overlapping in time (several machines) count once.
    wall = span_seconds(frame)

    def stage_value(stage: str, column: str) -> int:
        return int(through.loc[stage, column]) if stage in through.index else 0

    moved = {
        "bytes_downloaded": stage_value("download", "bytes"),
        "files_downloaded": stage_value("download", "files"),
        "bytes_uploaded": stage_value("upload", "bytes"),
        "files_uploaded": stage_value("upload", "files"),
    }
    delivered = moved["bytes_uploaded"] or moved["bytes_downloaded"]
    done = final[final["status"].isin(["ok", "failed"])]
    zip_ends = terminal(frame)
    zip_ends = zip_ends[zip_ends["stage"] == "zip"]
    ok_zip = (zip_ends["status"] == "ok").to_numpy()
    declined = _is(zip_ends["zip_used"], False).to_numpy()
    slow = final[final["duration_s"].notna()].sort_values("duration_s", ascending=False).head(top)
    return {
        "runs": [
            {**{k: _clean(v) for k, v in row.items()}, "records": per_run.get(str(row["run_id"]), {})}
            for row in run_table.to_dict("records")
        ],
        "records": {
            "total": len(final),
            **{s: int(counts.get(s, 0)) for s in RECORD_STATUSES},
            # Skips of every run (a record done in one run and skipped by the next counts
            # once in ``ok`` above, once here).
            "skipped_in_runs": skip_events,
            # Parts of split records (oversize = "split"), by final status: parts of the
            # records above, never records beside them (the key only when there are some).
            **({"parts": {s: int(n) for s, n in parts.items() if n}} if parts.sum() else {}),
            # The files of the ok records: the source's, and what holds them on the target
            # (zip bundles and their manifests are fewer files than their members); None
            # when no record event says (runs written before the events carried it).
            "files": {
                "source": int(ok_records["file_count"].fillna(0).sum()),
                "on_target": int(ok_records["uploaded_files"].sum())
                if ok_records["uploaded_files"].notna().any()
                else None,
            },
        },
        "moved": moved,
        "throughput": {
            "wall_s": wall,
            "overall_mbps": _clean(delivered / wall / 1e6) if wall > 0 else None,
            "stages": {
                stage: {k: _clean(v) for k, v in row.items()} for stage, row in through.to_dict("index").items()
            },
        },
        "zip": {
            "records_zipped": int(_is(done["zip_used"], True).sum()),
            "records_not_zipped": int(_is(done["zip_used"], False).sum()),
            "zip_ok": int((ok_zip & ~declined).sum()),
            "zip_failed": int((zip_ends["status"] == "failed").sum()),
            # A zip event ``ok`` with ``zip_used`` false is a decision against zipping.
            "zip_skipped": int(((zip_ends["status"] == "skipped") | (ok_zip & declined)).sum()),
        },
        "workers": per_worker(frame),
        "errors": [{k: _clean(v) for k, v in row.items()} for row in error_table(frame).head(top).to_dict("records")],
        "open_events": len(open_events(frame)),
        "slowest_records": [
            {
                "recid": str(recid),
                **{
                    k: _clean(row[k])
                    for k in ("status", "duration_s", "bytes", "file_count", "uploaded_files", "parts", "zip_used")
                },
                "run_id": _clean(row["run_id"]),
            }
            for recid, row in slow.iterrows()
        ],
    }


# --- terminal rendering -------------------------------------------------------------------


def human_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} MB/s"


def _table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """Aligned columns; ``align`` has one ``l`` or ``r`` per column."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    right = [a == "r" for a in align]

    def line(cells: list[str]) -> str:
        return "  ".join(
            (str(c).rjust(w) if r else str(c).ljust(w)) for c, w, r in zip(cells, widths, right, strict=False)
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _shorten(text: str | None, width: int = 70) -> str:
    if not text:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


# Stages whose bytes are data moved or written (a resolve's or verify's bytes are the
# record's size, which they did not move).
BYTES_STAGES = ("download", "zip", "upload")
STAGE_NOTES = (
    "  counted: what ok/failed/skipped count in that row, files or records (never both: a record-level",
    "    row beside the same record's per-file rows is a total and is left out); skipped: not needed",
    "    (already downloaded, already on the target, zip decided against); bytes: moved (download,",
    "    upload) or written (zip) by the ok ones;",
    "  wall time: time with at least one event of the stage running (parallel events count once);",
    "  throughput: bytes / wall time, only for stages that move bytes over the network (download,",
    "    upload); median per file: the median of each file's own bytes / duration. MB = 10^6 bytes.",
)


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text report of ``summarize``'s dict (fits in 120 columns)."""
    out: list[str] = []
    run_list = summary["runs"]

    def outcomes(r: dict[str, Any]) -> str:
        done = r.get("records") or {}
        order = [s for s in RECORD_STATUSES if s in done] + sorted(set(done) - set(RECORD_STATUSES))
        text = ", ".join(f"{done[s]} {s}" for s in order)
        return f": records {text}" if text else ""

    if len(run_list) == 1:
        r = run_list[0]
        out.append(f"run {r['run_id']} on {r['host']}: {r['start']} .. {r['end']} ({human_seconds(r['wall_s'])})")
    else:
        out.append(f"{len(run_list)} runs merged:")
        out.extend(
            f"  {r['run_id']} on {r['host']}: {r['start']} ({human_seconds(r['wall_s'])}){outcomes(r)}"
            for r in run_list
        )
    if summary["open_events"]:
        out.append(f"interrupted: {summary['open_events']} events started and never finished")
    rec = summary["records"]
    out.append("")
    again = rec.get("skipped_in_runs", 0) - rec["skipped"]
    out.append(
        f"records: {rec['total']} total, {rec['ok']} ok, {rec['failed']} failed, {rec['skipped']} skipped"
        + (f", {rec['dry-run']} dry-run" if rec["dry-run"] else "")
        + (f", {rec['interrupted']} interrupted" if rec["interrupted"] else "")
        + (f" (final status; {again} skip(s) by later runs of records already done)" if again > 0 else "")
    )
    if parts := rec.get("parts"):
        shown = ", ".join(f"{n} {status}" for status, n in parts.items())
        out.append(f"         of which split into {sum(parts.values())} parts: {shown}")
    if (files := rec.get("files")) and files["on_target"] is not None:
        held = " (zip bundles and their manifests hold the rest)" if files["on_target"] < files["source"] else ""
        out.append(
            f"files:   {files['source']} source files of the ok records, {files['on_target']} on the target{held}"
        )
    moved = summary["moved"]
    out.append(
        f"moved:   {human_bytes(moved['bytes_downloaded'], digits=2)} in {moved['files_downloaded']} files downloaded, "
        f"{human_bytes(moved['bytes_uploaded'], digits=2)} in {moved['files_uploaded']} files uploaded"
    )
    tp = summary["throughput"]
    out.append(f"overall: {_rate(tp['overall_mbps'])} delivered over {human_seconds(tp['wall_s'])} of run time")
    z = summary["zip"]
    out.append(
        f"zip:     {z['records_zipped']} records zipped, {z['records_not_zipped']} not "
        f"(zip events: {z['zip_ok']} ok, {z['zip_failed']} failed, {z['zip_skipped']} decided against)"
    )
    if tp["stages"]:
        out.append("")
        rows = [
            [
                stage,
                str(s.get("unit") or "events"),
                str(s["ok"]),
                str(s["failed"]),
                str(s["skipped"]),
                human_bytes(s["bytes"], digits=2) if s["bytes"] and stage in BYTES_STAGES else "-",
                human_seconds(s["active_s"]),
                _rate(s["mbps"]),
                _rate(s["median_mbps"]),
            ]
            for stage, s in tp["stages"].items()
        ]
        header = ["stage", "counted", "ok", "failed", "skipped", "bytes", "wall time", "throughput", "median per file"]
        out.extend(_table(header, rows, "llrrrrrrr"))
        out.extend(STAGE_NOTES)
    if summary.get("workers"):
        out.append("")
        out.append("per worker (--cluster):")
        rows = [
            [
                w["worker"],
                str(w["records_ok"]),
                str(w["records_failed"]),
                str(w["records_skipped"]),
                str(w["files_uploaded"]),
                human_bytes(w["bytes_uploaded"], digits=2),
                _rate(w["upload_mbps"]),
            ]
            for w in summary["workers"]
        ]
        header = ["worker", "records ok", "failed", "skipped", "files up", "bytes up", "upload throughput"]
        out.extend("  " + line for line in _table(header, rows, "lrrrrrr"))
    out.append("")
    if summary["errors"]:
        out.append("top errors:")
        rows = [
            [e["stage"], e["error_type"], str(e["count"]), str(e["records"]), _shorten(e["example"])]
            for e in summary["errors"]
        ]
        out.extend("  " + line for line in _table(["stage", "error", "count", "records", "example"], rows, "llrrl"))
    else:
        out.append("no errors")
    if summary["slowest_records"]:
        out.append("")
        out.append("slowest records:")
        rows = [
            [
                s["recid"],
                str(s["status"]),
                human_seconds(s["duration_s"]),
                human_bytes(s["bytes"], digits=2),
                "-" if s["file_count"] is None else str(s["file_count"]),
                "-" if s.get("uploaded_files") is None else str(s["uploaded_files"]),
                str(s.get("parts") or "-"),
                {True: "yes", False: "no", None: "-"}[s["zip_used"]],
            ]
            for s in summary["slowest_records"]
        ]
        header = ["recid", "status", "duration", "bytes", "files", "on target", "parts", "zip"]
        out.extend("  " + line for line in _table(header, rows, "llrrrrrl"))
    return "\n".join(out)
