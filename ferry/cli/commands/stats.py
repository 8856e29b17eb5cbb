"""`ferry stats summary|figures|csv STATS_DIR...`: post-run analysis of stats JSONL/CSV.

The analysis needs pandas and matplotlib (requirements.txt), which the pipeline does not;
they are imported only when a stats command runs, and their absence is a clear error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import ModuleType

from ferry.core.config import Config
from ferry.core.errors import InputError
from stats.events import export_csv


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "stats",
        parents=[common],
        help="summaries and figures of finished (or interrupted) runs",
        description="Analyse stats written by download/upload/bulk runs (--stats-dir).",
        epilog="examples:\n  ferry stats summary stats/\n  ferry stats figures stats/ -o figs/\n"
        "  ferry stats report stats/ other-run/ -o report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="stats_command", metavar="ACTION", required=True)
    summary = actions.add_parser(
        "summary",
        parents=[common],
        help="records ok/failed/skipped, bytes, throughput, zip usage, top errors, slowest records",
    )
    summary.add_argument("paths", nargs="+", metavar="STATS_DIR", help="stats directory or .jsonl/.csv file")
    summary.add_argument("--json", action="store_true", help="print the summary as JSON")
    summary.add_argument("--top", type=int, default=10, metavar="N", help="errors and slowest records shown")
    summary.set_defaults(func=run)
    figures = actions.add_parser("figures", parents=[common], help="write PNG figures (and the Sankey as HTML)")
    figures.add_argument("paths", nargs="+", metavar="STATS_DIR", help="stats directory or .jsonl/.csv file")
    figures.add_argument("-o", "--out", required=True, metavar="OUT_DIR", help="directory for the figures")
    figures.add_argument("--no-html", action="store_true", help="PNG only, no interactive Sankey HTML")
    figures.set_defaults(func=run)
    report = actions.add_parser(
        "report",
        parents=[common],
        help="one self-contained HTML page: the summary and every figure",
        epilog="example:\n  ferry stats report stats/ -o report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("paths", nargs="+", metavar="STATS_DIR", help="stats directory or .jsonl/.csv file")
    report.add_argument("-o", "--out", required=True, metavar="FILE.html", help="the page to write")
    report.add_argument("--top", type=int, default=10, metavar="N", help="errors and slowest records shown")
    report.set_defaults(func=run)
    export = actions.add_parser(
        "csv",
        parents=[common],
        help="write (or refresh) the CSV of each JSONL run, e.g. of a run killed before it could",
    )
    export.add_argument("paths", nargs="+", metavar="STATS_DIR", help="stats directory or .jsonl file")
    export.set_defaults(func=run_csv)
    parser.set_defaults(func=run)


def run_csv(args: argparse.Namespace, config: Config) -> int:
    """CSV export needs no analysis packages: the same rows as the JSONL, one file per run."""
    runs: list[Path] = []
    for raw in args.paths:
        path = Path(raw)
        if path.is_dir():
            runs += sorted(path.glob("*.jsonl"))
        elif path.suffix == ".jsonl" and path.is_file():
            runs.append(path)
        else:
            raise InputError(f"{path}: not a stats directory or .jsonl file")
    if not runs:
        raise InputError(f"no .jsonl stats in {', '.join(args.paths)}")
    for jsonl in runs:
        print(export_csv(jsonl, jsonl.with_suffix(".csv")))
    return 0


def _analysis(name: str) -> ModuleType:
    """Import an analysis module, or say how to install what it needs."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise InputError(
            f"ferry stats needs the analysis dependencies ({exc.name} is missing): pip install -r requirements.txt"
        ) from exc


def run(args: argparse.Namespace, config: Config) -> int:
    load = _analysis("stats.load")
    frame = load.load(args.paths)
    if args.stats_command == "summary":
        summary = _analysis("stats.summary")
        numbers = summary.summarize(frame, top=args.top)
        text = json.dumps(numbers, indent=2) if args.json else summary.format_summary(numbers)
        try:
            print(text)
        except BrokenPipeError:  # `ferry stats summary ... | head`: the reader has had enough
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return 0
    if args.stats_command == "report":
        page = _analysis("figs.report").write_report(frame, args.out, top=args.top)
        print(page)
        return 0
    figures = _analysis("figs.figures")
    for path in figures.write_figures(frame, args.out, html=not args.no_html):
        print(path)
    if frame.empty:
        print("ferry stats: the run has no events; the figures say so", file=sys.stderr)
    return 0
