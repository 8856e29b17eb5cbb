"""Where each record went: its path through the stages, and the Sankey flow table.

Layers (columns of the Sankey): 0 selected -> 1 download -> 2 zip -> 3 upload -> 4 publish.
Every recid starts at ``selected`` and walks right until it ends: on a success node of the
last layer, or on the node of the layer where it left the flow (failed, skipped because it
was already done, dry run, interrupted). So at every layer the recids on its nodes plus
those that ended on an earlier layer add up to the number of recids: ``layer_totals``
computes exactly that from the link table, and the tests check it.

A record's path is read from the events of the run that produced its final status (see
``stats.load.final_record_status``), so a record that failed once and was redone later
flows as it went the last time.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import pandas as pd

from stats.load import INTERRUPTED, final_record_status, open_events, terminal

LAYERS = ("selected", "download", "zip", "upload", "publish")

# Node kinds, for colours: a success carries on; the others end the path.
SUCCESS = "success"
FAILED = "failed"
SKIPPED = "skipped"
STOPPED = "stopped"  # interrupted, or left before the next stage (dry run, not published)


@dataclass(frozen=True)
class Node:
    layer: int
    label: str
    kind: str

    @property
    def id(self) -> str:
        return f"{self.layer}:{self.label}"


def _outcome(events: pd.DataFrame, stage: str, opened: set[str]) -> str | None:
    """``failed`` / ``ok`` / ``dry-run`` / ``skipped`` from the latest terminal event of each
    (stage, file); ``open`` when the stage only has unfinished events; None if untouched."""
    mine = events[events["stage"] == stage]
    latest = mine.groupby("file", dropna=False, sort=False).tail(1)["status"].astype(str)
    if (latest == "failed").any():
        return "failed"
    if stage in opened:
        return "open"  # some of its work never finished
    for status in ("ok", "dry-run", "skipped"):
        if (latest == status).any():
            return status
    return None


def _zip_declined(events: pd.DataFrame) -> bool:
    """True when the latest zip events say the record was not zipped (``zip_used`` false)."""
    zips = events[(events["stage"] == "zip") & (events["status"] == "ok")]
    used = zips.groupby("file", dropna=False, sort=False).tail(1)["zip_used"]
    return bool(len(used)) and bool(used.eq(False).fillna(False).all())


def record_path(status: str, error_type: str | None, events: pd.DataFrame, opened: set[str]) -> list[Node]:
    """The nodes one record passes through, given its final status and its terminal
    work events (of the run that decided its status) and the stages it left open."""
    path = [Node(0, "selected", SUCCESS)]
    if status == "skipped":
        return [*path, Node(1, "skipped (already done)", SKIPPED)]
    if status == "dry-run":
        return [*path, Node(1, "dry run", STOPPED)]

    def end(layer: int) -> list[Node]:
        # Left the flow here without a failed stage event of this layer.
        if status == INTERRUPTED:
            return [*path, Node(layer, "interrupted", STOPPED)]
        return [*path, Node(layer, f"failed: {error_type or 'record'}", FAILED)]

    def out(stage: str) -> str | None:
        return _outcome(events, stage, opened)

    # Layer 1: resolve + download.
    if out("resolve") == "failed":
        return [*path, Node(1, "resolve failed", FAILED)]
    download = out("download")
    if download == "failed":
        return [*path, Node(1, "download failed", FAILED)]
    if download in ("ok", "skipped") or (download is None and status == "ok"):
        path.append(Node(1, "downloaded", SUCCESS))
    else:
        return end(1)

    # Layer 2: zip or not.
    zipped = out("zip")
    if zipped == "ok" and _zip_declined(events):
        zipped = "skipped"  # the zipper ran and decided against zipping (zip_used false)
    later = any(out(s) is not None for s in ("upload", "verify", "publish"))
    if zipped == "failed":
        return [*path, Node(2, "zip failed", FAILED)]
    if zipped is None and out("transform") == "failed":
        return [*path, Node(2, "transform failed", FAILED)]  # the metadata failed before any zip decision
    if zipped == "ok":
        path.append(Node(2, "zipped", SUCCESS))
    elif zipped == "skipped" or later or status == "ok":
        path.append(Node(2, "not zipped", SUCCESS))
    else:
        return end(2)

    # Layer 3: transform + upload + verify.
    for stage in ("transform", "upload", "verify"):
        if out(stage) == "failed":
            return [*path, Node(3, f"{stage} failed", FAILED)]
    upload = out("upload")
    if upload in ("ok", "skipped") or (upload is None and status == "ok"):
        path.append(Node(3, "uploaded", SUCCESS))
    else:
        return end(3)

    # Layer 4: publish (or left as a draft).
    publish = out("publish")
    if publish == "failed":
        return [*path, Node(4, "publish failed", FAILED)]
    if publish == "ok":
        return [*path, Node(4, "published", SUCCESS)]
    if status == "ok":
        return [*path, Node(4, "not published (draft)", STOPPED)]
    return end(4)


def record_paths(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per recid: ``final`` status, ``path`` (node ids), ``end`` node id and
    ``end_layer``."""
    final = final_record_status(frame)
    ends = terminal(frame)
    ends = ends[ends["recid"].notna()]
    still_open = open_events(frame)
    rows = []
    for recid, rec in final.iterrows():
        run_id = rec["run_id"]
        mine = ends[(ends["recid"] == recid) & (ends["run_id"] == run_id)]
        opened_rows = still_open[(still_open["recid"] == recid) & (still_open["run_id"] == run_id)]
        opened = {str(s) for s in opened_rows["stage"]}
        error_type = None if pd.isna(rec["error_type"]) else str(rec["error_type"])
        nodes = record_path(str(rec["status"]), error_type, mine, opened)
        rows.append(
            {
                "recid": recid,
                "final": str(rec["status"]),
                "path": tuple(n.id for n in nodes),
                "end": nodes[-1].id,
                "end_layer": nodes[-1].layer,
                "nodes": nodes,
            }
        )
    return pd.DataFrame(rows, columns=["recid", "final", "path", "end", "end_layer", "nodes"]).set_index("recid")


def flow_table(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Sankey as data: ``(nodes, links)``.

    ``nodes``: id, layer, label, kind, value (recids through the node), ends (recids whose
    path ends there). ``links``: source, target (node ids), value (recids), in layer order.
    """
    paths = record_paths(frame)
    node_info: dict[str, Node] = {}
    through: dict[str, int] = {}
    ending: dict[str, int] = {}
    link_count: dict[tuple[str, str], int] = {}
    for nodes in paths["nodes"]:
        for node in nodes:
            node_info.setdefault(node.id, node)
            through[node.id] = through.get(node.id, 0) + 1
        ending[nodes[-1].id] = ending.get(nodes[-1].id, 0) + 1
        for a, b in pairwise(nodes):
            link_count[(a.id, b.id)] = link_count.get((a.id, b.id), 0) + 1
    kind_order = {SUCCESS: 0, STOPPED: 1, SKIPPED: 2, FAILED: 3}
    node_rows = sorted(
        (
            {
                "id": node.id,
                "layer": node.layer,
                "label": node.label,
                "kind": node.kind,
                "value": through[node.id],
                "ends": ending.get(node.id, 0),
            }
            for node in node_info.values()
        ),
        key=lambda r: (r["layer"], kind_order[str(r["kind"])], str(r["label"])),
    )
    nodes_df = pd.DataFrame(node_rows, columns=["id", "layer", "label", "kind", "value", "ends"])
    order = {row["id"]: i for i, row in enumerate(node_rows)}
    links = sorted(link_count.items(), key=lambda item: (order[item[0][0]], order[item[0][1]]))
    links_df = pd.DataFrame(
        [{"source": s, "target": t, "value": v} for (s, t), v in links], columns=["source", "target", "value"]
    )
    return nodes_df, links_df


def layer_totals(nodes: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    """Per layer, from the link table alone: recids flowing into the layer's nodes
    (``arrived``; layer 0: all recids), recids that ended on an earlier layer, and their
    ``total``, which must equal the number of recids on every layer."""
    inflow = links.groupby("target")["value"].sum() if len(links) else pd.Series(dtype=int)
    outflow = links.groupby("source")["value"].sum() if len(links) else pd.Series(dtype=int)
    layer_of = dict(zip(nodes["id"], nodes["layer"], strict=True))
    selected = int(nodes.loc[nodes["layer"] == 0, "value"].sum())
    rows, ended_before = [], 0
    for layer in range(len(LAYERS)):
        ids = [n for n, lay in layer_of.items() if lay == layer]
        arrived = selected if layer == 0 else int(sum(inflow.get(n, 0) for n in ids))
        rows.append({"layer": layer, "name": LAYERS[layer], "arrived": arrived, "ended_before": ended_before})
        # Recids ending on this layer: what came in and did not go on.
        ended_before += arrived - int(sum(outflow.get(n, 0) for n in ids))
    table = pd.DataFrame(rows)
    table["total"] = table["arrived"] + table["ended_before"]
    return table
