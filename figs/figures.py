"""Figure builders: each takes a loaded stats frame (``stats.load.load``) and returns a
matplotlib ``Figure``; ``write_figures`` writes them all as PNG (plus the Sankey as HTML).

Figures are made with ``matplotlib.figure.Figure`` directly, never pyplot: no global
state, no GUI backend (PNG rendering is Agg), and safe in notebooks and threads.
Units: MB = 10^6 bytes; time axes are elapsed time since the first event of the run(s).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from figs.sankey import sankey_figure, write_sankey_html
from stats.load import data_rows, runs, terminal
from stats.summary import error_table
from stats.timeline import elapsed, in_flight, intervals, sessions, span_seconds, throughput_series

# One colour per stage, the same in every figure.
STAGE_COLORS = {
    "resolve": "#7f7f7f",
    "download": "#1f77b4",
    "zip": "#9467bd",
    "transform": "#8c564b",
    "upload": "#ff7f0e",
    "verify": "#2ca02c",
    "publish": "#17becf",
    "record": "#444444",
}
STATUS_COLORS = {"ok": "#2ca02c", "failed": "#d62728", "skipped": "#7f7f7f", "dry-run": "#bcbd22"}
TRANSFER_STAGES = ("download", "zip", "upload")
# Log axes read better as 0.1, 1, 10, 100 than as powers of ten.
DOTS = 300  # events drawn as dots per stage in the durations figure
PLAIN = FuncFormatter(lambda value, _pos: f"{value:g}")


def run_label(frame: pd.DataFrame) -> str:
    """Names the run(s) for titles: ``run <id> (<host>, <date>)`` or ``N runs: a, b, ...``."""
    table = runs(frame)
    if table.empty:
        return "empty run"
    if len(table) == 1:
        row = table.iloc[0]
        return f"run {row['run_id']} ({row['host']}, {row['start']:%Y-%m-%d %H:%M} UTC)"
    names = ", ".join(str(r) for r in table["run_id"][:3])
    more = f" +{len(table) - 3} more" if len(table) > 3 else ""
    return f"{len(table)} runs: {names}{more}"


def time_unit(span_s: float) -> tuple[float, str]:
    """Divisor and unit name for an elapsed-time axis covering ``span_s`` seconds."""
    if span_s <= 180:
        return 1.0, "s"
    if span_s <= 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _span(frame: pd.DataFrame) -> float:
    return span_seconds(frame)


def run_starts(frame: pd.DataFrame) -> list[tuple[float, str, pd.Timestamp]]:
    """Where each run after the first starts on the time axis: (seconds, run id, start),
    for runs in a later session and for runs sharing a session's clock alike."""
    parts = sessions(frame)
    table = runs(frame)
    if len(table) < 2 or not parts:
        return []
    table = table.sort_values("start", kind="stable").iloc[1:]
    at = elapsed(table["start"], table["run_id"], parts)
    return [(float(x), str(r), s) for x, r, s in zip(at, table["run_id"], table["start"], strict=True)]


def _time_axis(ax: Axes, frame: pd.DataFrame, div: float, unit: str, *, label: bool = True) -> None:
    """Label an elapsed-time axis; with several runs, a dashed line where each later one starts."""
    starts = run_starts(frame)
    if label:
        text = f"time since run start ({unit})"
        if len(sessions(frame)) > 1:
            text = f"run time ({unit}; idle time between runs left out, dashed lines: a later run starts)"
        elif starts:
            text = f"time since the first run started ({unit}; dashed lines: a later run starts)"
        ax.set_xlabel(text)
    for x, run_id, start in starts:
        ax.axvline(x / div, color="#555555", linestyle="--", linewidth=1)
        ax.text(
            x / div,
            1.0,
            f" {run_id} ({start:%Y-%m-%d %H:%M})" if label else "",
            transform=ax.get_xaxis_transform(),
            ha="left",
            va="top",
            fontsize=7,
            color="#555555",
            rotation=90 if len(starts) > 1 else 0,
        )


def _empty(ax: Axes, text: str) -> None:
    """A panel with nothing to plot says so instead of showing empty axes."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


def _title(fig: Figure, what: str, frame: pd.DataFrame) -> None:
    fig.suptitle(f"{what}\n{run_label(frame)}", fontsize=12)


def throughput_figure(frame: pd.DataFrame, stages: Sequence[str] = TRANSFER_STAGES) -> Figure:
    """MB/s over time per stage (bytes of each finished event spread over its duration)."""
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.add_subplot()
    div, unit = time_unit(_span(frame))
    drawn = 0
    for stage in stages:
        series = throughput_series(frame, stage)
        if series.empty:
            continue
        edges = np.append(series["elapsed"].to_numpy(), series["elapsed"].iloc[-1] + series.attrs["bin_s"]) / div
        ax.stairs(series["mbps"], edges, label=stage, color=STAGE_COLORS.get(stage), linewidth=1.5)
        drawn += 1
    if drawn:
        _time_axis(ax, frame, div, unit)
        ax.set_ylabel(f"throughput (MB/s, mean over {series.attrs['bin_s']:g} s bins)")
        ax.set_ylim(bottom=0)
        ax.legend(title="stage")
        ax.grid(alpha=0.3)
    else:
        _empty(ax, "no finished transfers with bytes")
    _title(fig, "Throughput over time per stage", frame)
    return fig


def durations_figure(frame: pd.DataFrame) -> Figure:
    """Distribution of event durations per stage (box plots on a log axis, points on top)."""
    # Work that was done (ok) or tried (failed): a skip or a dry run takes no time worth
    # plotting (microseconds of bookkeeping that would stretch the log axis to 1e-5 s), and a
    # record-level total beside its per-file rows is not one more event.
    ends = data_rows(terminal(frame))
    ends = ends[
        (ends["duration_s"].fillna(0) > 0)
        & ends["status"].isin(["ok", "failed"])
        & ~ends["stage"].isin(["run", "summary"])
    ]
    order = [s for s in STAGE_COLORS if (ends["stage"] == s).any()]
    fig = Figure(figsize=(10, 6), layout="constrained")
    ax = fig.add_subplot()
    if not order:
        _empty(ax, "no finished events with a duration")
    else:
        data = [ends.loc[ends["stage"] == s, "duration_s"].to_numpy(dtype=float) for s in order]
        box = ax.boxplot(
            data,
            whis=(5, 95),
            showfliers=False,
            patch_artist=True,
            widths=0.6,
            medianprops={"color": "black", "linewidth": 1.5},
            zorder=3,
        )
        for patch, stage in zip(box["boxes"], order, strict=True):
            patch.set_facecolor(STAGE_COLORS[stage])
            patch.set_alpha(0.45)
        rng = np.random.default_rng(0)  # fixed jitter and sample: the same figure every time
        for i, (values, stage) in enumerate(zip(data, order, strict=True), start=1):
            # A sample of the events as dots: enough to see the shape, not a solid blot.
            shown = values if len(values) <= DOTS else rng.choice(values, DOTS, replace=False)
            jitter = i + rng.uniform(-0.2, 0.2, len(shown))
            ax.scatter(jitter, shown, s=6, color=STAGE_COLORS[stage], alpha=0.35, zorder=2, linewidths=0)
        ax.set_xticks(range(1, len(order) + 1), [f"{s}\n(n={len(d)})" for s, d in zip(order, data, strict=True)])
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(PLAIN)
        ax.set_ylabel("duration per event (s, log scale)")
        ax.set_xlabel(
            f"stage (box: quartiles, black line: median; whiskers: 5th-95th percentile; dots: up to {DOTS} events)"
        )
        ax.grid(axis="y", alpha=0.3, which="both")
    _title(fig, "Stage durations", frame)
    return fig


def concurrency_figure(frame: pd.DataFrame, stages: Sequence[str] = TRANSFER_STAGES) -> Figure:
    """Files and bytes in flight over time per stage (from event start/end intervals)."""
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    ax_files, ax_bytes = fig.subplots(2, 1, sharex=True)
    div, unit = time_unit(_span(frame))
    drawn, peak = 0, 0
    for stage in stages:
        steps = in_flight(frame, stage)
        if steps.empty:
            continue
        peak = max(peak, int(steps["files"].max()))
        color = STAGE_COLORS.get(stage)
        x = np.concatenate([[0.0], steps["elapsed"].to_numpy() / div])
        ax_files.step(x, np.concatenate([[0], steps["files"]]), where="post", label=stage, color=color)
        ax_bytes.step(x, np.concatenate([[0], steps["bytes"] / 1e6]), where="post", label=stage, color=color)
        drawn += 1
    if drawn:
        ax_files.set_ylabel("files in flight")
        ax_files.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax_files.legend(title="stage", loc="upper right")
        ax_bytes.set_ylabel("bytes in flight (MB)")
        _time_axis(ax_bytes, frame, div, unit)
        _time_axis(ax_files, frame, div, unit, label=False)
        for ax in (ax_files, ax_bytes):
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        ax_files.set_ylim(0, peak * 1.3 + 0.5)  # headroom for the legend and the note
        unfinished = intervals(frame, stages)["open"].sum()
        if unfinished:
            ax_files.text(
                0.01,
                0.97,
                f"{unfinished} unfinished events (interrupted run) drawn until the run's last event",
                transform=ax_files.transAxes,
                va="top",
                color="#b35900",
            )
    else:
        _empty(ax_files, "no timed events")
        _empty(ax_bytes, "")
    _title(fig, "Concurrency: work in flight", frame)
    return fig


def errors_figure(frame: pd.DataFrame, top: int = 15) -> Figure:
    """Failures by stage and error type (each failure counted once, where it happened)."""
    table = error_table(frame).head(top)
    fig = Figure(figsize=(10, 1.6 + 0.45 * max(len(table), 3)), layout="constrained")
    ax = fig.add_subplot()
    if table.empty:
        _empty(ax, "no failures in this run")
    else:
        labels = [f"{row.stage}: {row.error_type}" for row in table.itertuples()]
        colors = [STAGE_COLORS.get(str(s), "#444444") for s in table["stage"]]
        bars = ax.barh(range(len(table)), table["count"], color=colors)
        ax.bar_label(
            bars, [f"{c} ({r} rec.)" for c, r in zip(table["count"], table["records"], strict=True)], padding=3
        )
        ax.set_yticks(range(len(table)), labels)
        ax.invert_yaxis()
        ax.set_xlabel("failed events (count; in brackets: distinct records)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0, table["count"].max() * 1.25)
        ax.grid(axis="x", alpha=0.3)
    _title(fig, "Errors by stage and type", frame)
    return fig


def rates_figure(frame: pd.DataFrame, stage: str) -> Figure:
    """Per-file rate against file size for one stage (where small files lose time)."""
    ends = data_rows(terminal(frame))  # per-file rows: a record's total is not a file
    mine = ends[(ends["stage"] == stage) & (ends["duration_s"].fillna(0) > 0) & ends["file"].notna()]
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.add_subplot()
    ok = mine[(mine["status"] == "ok") & (mine["bytes"].fillna(0) > 0)]
    if ok.empty:
        _empty(ax, f"no finished {stage} events with bytes")
    else:
        size_mb = ok["bytes"].astype(float) / 1e6
        rate = size_mb / ok["duration_s"]
        transfers = ok["transfer"].fillna("-").astype(str)
        markers = dict(zip(sorted(transfers.unique()), "os^Dv<>p", strict=False))
        for transfer, marker in markers.items():
            sel = transfers == transfer
            ax.scatter(size_mb[sel], rate[sel], marker=marker, alpha=0.7, label=f"{transfer} (n={int(sel.sum())})")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(PLAIN)
        ax.set_xlabel("file size (MB, log scale)")
        ax.set_ylabel("rate (MB/s)")
        ax.set_ylim(bottom=0)
        ax.legend(title="transfer")
        ax.grid(alpha=0.3, which="both")
        failed = int((mine["status"] == "failed").sum())
        if failed:
            ax.text(0.01, 0.98, f"{failed} failed (not shown)", transform=ax.transAxes, va="top", color="#d62728")
    _title(fig, f"{stage.capitalize()} rate per file vs size", frame)
    return fig


def all_figures(frame: pd.DataFrame) -> dict[str, Figure]:
    """Every figure, by file stem."""
    return {
        "sankey": sankey_figure(frame, title=run_label(frame)),
        "throughput": throughput_figure(frame),
        "durations": durations_figure(frame),
        "concurrency": concurrency_figure(frame),
        "errors": errors_figure(frame),
        "download_rates": rates_figure(frame, "download"),
        "upload_rates": rates_figure(frame, "upload"),
    }


def write_figures(frame: pd.DataFrame, out_dir: str | Path, *, html: bool = True, dpi: int = 120) -> list[Path]:
    """Write every figure as ``<out_dir>/<name>.png`` (and ``sankey.html``); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in all_figures(frame).items():
        path = out / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        written.append(path)
    if html:
        written.append(write_sankey_html(frame, out / "sankey.html", title=run_label(frame)))
    return written
