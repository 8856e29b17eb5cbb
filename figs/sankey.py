"""The Sankey of recids through the stages: a matplotlib PNG drawn by hand (readable
without a browser) and an interactive plotly HTML, both from ``stats.flow.flow_table``.

Layout: one column per layer, nodes stacked from the top with gaps, node height =
recids; each link is a band whose width is its recids, leaving its source below the
previous links of that source and arriving at its target below the previous arrivals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch, Rectangle
from matplotlib.path import Path as MplPath

from stats.flow import FAILED, LAYERS, SKIPPED, STOPPED, SUCCESS, flow_table, later_skips, node_text

KIND_COLORS = {SUCCESS: "#3b7dd8", FAILED: "#d62728", SKIPPED: "#8c8c8c", STOPPED: "#f5a623"}
NODE_WIDTH = 0.05  # in layer units (columns are 1 apart)


@dataclass
class Box:
    """A node's place: x of its left edge, y of its top, its height (all data units)."""

    x: float
    top: float
    height: float


def layout(nodes: pd.DataFrame) -> tuple[dict[str, Box], float]:
    """Node boxes and the total height; the gap between nodes fits a label at any N."""
    if nodes.empty:
        return {}, 1.0
    total = float(nodes.loc[nodes["layer"] == 0, "value"].sum()) or 1.0
    gap = 0.12 * total
    heights = nodes.groupby("layer")["value"].sum() + gap * (nodes.groupby("layer").size() - 1)
    top_all = float(heights.max())
    boxes: dict[str, Box] = {}
    cursor: dict[int, float] = {}
    for row in nodes.itertuples():
        layer = int(row.layer)
        top = cursor.get(layer, top_all)
        boxes[str(row.id)] = Box(layer - NODE_WIDTH / 2, top, float(row.value))
        cursor[layer] = top - float(row.value) - gap
    return boxes, top_all


def _band(x0: float, y0_top: float, x1: float, y1_top: float, width: float) -> MplPath:
    """A band of constant vertical ``width`` from (x0, y0_top) to (x1, y1_top), S-shaped."""
    mid = (x0 + x1) / 2
    verts = [
        (x0, y0_top),
        (mid, y0_top),
        (mid, y1_top),
        (x1, y1_top),
        (x1, y1_top - width),
        (mid, y1_top - width),
        (mid, y0_top - width),
        (x0, y0_top - width),
        (x0, y0_top),
    ]
    codes = [MplPath.MOVETO, *[MplPath.CURVE4] * 3, MplPath.LINETO, *[MplPath.CURVE4] * 3, MplPath.CLOSEPOLY]
    return MplPath(verts, codes)


def _skip_note(frame: pd.DataFrame, newline: str = "\n") -> str:
    skips = later_skips(frame)
    if not skips:
        return ""
    return f"{newline}{skips} record(s) skipped by a later run as already done (drawn as the run that did them)"


def sankey_figure(frame: pd.DataFrame, title: str = "") -> Figure:
    """The Sankey as a matplotlib figure (save as PNG; no browser needed)."""
    nodes, links = flow_table(frame)
    fig = Figure(figsize=(13, 7), layout="constrained")
    ax = fig.add_subplot()
    fig.suptitle(
        f"Records through the stages (n = {int(nodes['value'].iloc[0]) if len(nodes) else 0})\n{title}"
        + _skip_note(frame)
    )
    if nodes.empty:
        ax.text(0.5, 0.5, "no records in this run", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    boxes, top = layout(nodes)
    kinds = dict(zip(nodes["id"], nodes["kind"], strict=True))
    out_cursor = {node_id: box.top for node_id, box in boxes.items()}
    in_cursor = dict(out_cursor)
    for link in links.itertuples():
        src, dst, value = boxes[str(link.source)], boxes[str(link.target)], float(link.value)
        path = _band(src.x + NODE_WIDTH, out_cursor[str(link.source)], dst.x, in_cursor[str(link.target)], value)
        out_cursor[str(link.source)] -= value
        in_cursor[str(link.target)] -= value
        ax.add_patch(PathPatch(path, facecolor=KIND_COLORS[kinds[str(link.target)]], alpha=0.35, lw=0))
    for row in nodes.itertuples():
        box = boxes[str(row.id)]
        ax.add_patch(Rectangle((box.x, box.top - box.height), NODE_WIDTH, box.height, color=KIND_COLORS[row.kind]))
        left = row.layer == 0
        ax.text(
            box.x - 0.02 if left else box.x + NODE_WIDTH + 0.02,
            box.top - box.height / 2,
            node_text(str(row.label), int(row.value), int(row.split), int(row.parts)),
            ha="right" if left else "left",
            va="center",
            fontsize=9,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.75, "linewidth": 0},
        )
    for layer, name in enumerate(LAYERS):
        ax.text(layer, top * 1.04, name, ha="center", va="bottom", fontsize=10, fontweight="bold")
    ax.set_xlim(-0.75, len(LAYERS) - 1 + 1.0)
    ax.set_ylim(-0.02 * top, top * 1.1)
    ax.set_axis_off()
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in KIND_COLORS.values()]
    fig.legend(
        handles,
        ["carried on", "failed", "skipped (already done)", "stopped (interrupted, dry run, draft)"],
        loc="outside lower center",
        ncols=4,
        fontsize=9,
        frameon=False,
    )
    return fig


def sankey_plotly(frame: pd.DataFrame, title: str = "") -> object:
    """The Sankey as an interactive plotly figure (same nodes, links and layout)."""
    import plotly.graph_objects as go

    nodes, links = flow_table(frame)
    boxes, top = layout(nodes)
    index = {node_id: i for i, node_id in enumerate(nodes["id"])}
    span = max(len(LAYERS) - 1, 1)
    fig = go.Figure(
        go.Sankey(
            arrangement="snap",
            node={
                "label": [
                    node_text(str(r.label), int(r.value), int(r.split), int(r.parts)) for r in nodes.itertuples()
                ],
                "color": [KIND_COLORS[k] for k in nodes["kind"]],
                # plotly wants centres in [0, 1], y from the top; avoid the exact edges.
                "x": [0.001 + 0.998 * layer / span for layer in nodes["layer"]],
                "y": [0.001 + 0.998 * (top - (boxes[i].top - boxes[i].height / 2)) / top for i in nodes["id"]],
                "pad": 12,
            },
            link={
                "source": [index[s] for s in links["source"]],
                "target": [index[t] for t in links["target"]],
                "value": links["value"].tolist(),
            },
        )
    )
    note = _skip_note(frame, "<br>")
    fig.update_layout(title_text=f"Records through the stages<br><sub>{title}{note}</sub>", font_size=12)
    return fig


def write_sankey_html(frame: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Self-contained HTML (plotly.js embedded: opens offline)."""
    out = Path(path)
    fig = sankey_plotly(frame, title)
    fig.write_html(out, include_plotlyjs=True, full_html=True)  # type: ignore[attr-defined]
    return out
