"""One self-contained HTML page per run (or merged runs): the summary and every figure.

``write_report(frame, path)`` writes the page: the text summary of ``stats.summary``, each
figure of ``figs.figures.all_figures`` as an embedded PNG with a line saying what it
shows, and the interactive Sankey (plotly, its JavaScript inline: the page opens offline,
from a file, with nothing fetched).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from figs.figures import all_figures, run_label
from figs.sankey import sankey_plotly
from stats.summary import format_summary, summarize

CAPTIONS = {
    "sankey": "Records flowing selected -> downloaded -> zipped or not -> uploaded -> published, and where "
    "each failure, skip, dry run or interruption left the flow.",
    "throughput": "MB/s over time per stage; each finished event's bytes spread over its duration.",
    "durations": "Per-stage distribution of the durations of work done or tried (skips left out), log scale.",
    "concurrency": "Files and bytes in flight over time per stage, from the events' start and end.",
    "errors": "Failures by stage and error type, each counted once where it happened.",
    "download_rates": "Per-file download rate against file size, by transfer type.",
    "upload_rates": "Per-file upload rate against file size, by transfer type.",
}

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 13px; }
figure { margin: 2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; margin-top: .4em; }
nav a { margin-right: 1em; }
"""


def _png(fig: object) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)  # type: ignore[attr-defined]
    return base64.b64encode(buf.getvalue()).decode("ascii")


def report_html(frame: pd.DataFrame, *, top: int = 10) -> str:
    """The page as a string."""
    title = f"dataferry run report: {run_label(frame)}"
    figures = all_figures(frame)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav>" + "".join(f'<a href="#{name}">{name}</a>' for name in ["summary", *figures]) + "</nav>",
        '<h2 id="summary">Summary</h2>',
        f"<pre>{html.escape(format_summary(summarize(frame, top=top)))}</pre>",
    ]
    for name, fig in figures.items():
        caption = CAPTIONS.get(name, "")
        parts.append(
            f'<figure id="{name}"><h2>{name}</h2>'
            f'<img alt="{html.escape(name)}" src="data:image/png;base64,{_png(fig)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    interactive = sankey_plotly(frame, run_label(frame))
    parts.append('<h2 id="sankey-interactive">Sankey, interactive</h2>')
    parts.append(interactive.to_html(full_html=False, include_plotlyjs=True))  # type: ignore[attr-defined]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(frame: pd.DataFrame, path: str | Path, *, top: int = 10) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report_html(frame, top=top), encoding="utf-8")
    return out
