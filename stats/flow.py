"""Where each record went: its path through the stages, and the Sankey flow table.

Layers (columns of the Sankey): 0 selected -> 1 download -> 2 zip -> 3 upload -> 4 publish.
Every recid starts at ``selected`` and walks right until it ends: on a success node of the
last layer, or on the node of the layer where it left the flow (failed, skipped because it
was already done, dry run, interrupted). So at every layer the recids on its nodes plus
those that ended on an earlier layer add up to the number of recids: ``layer_totals``
computes exactly that from the link table, and the tests check it.

A record's path is read from the events of the run that produced its final status (see
``stats.records.final_record_status``), so a record that failed once and was redone later
flows as it went the last time.

A record split into a series of linked records (``oversize = "split"``) is one recid of
the flow; its parts' events (recids ``<recid>.part-i-of-n``) are its work, so each stage's
outcome is that of its parts together: failed if one part failed there, zipped if one was
zipped, published when they were. ``record_paths`` gives the number of parts, and each
node of ``flow_table`` the split records through it and their parts (``split``, ``parts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

import pandas as pd

from stats.load import open_events, terminal
from stats.records import INTERRUPTED, final_record_status, whole_of

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


StageOutcomes = Mapping[str, str]


def stage_outcomes(frame: pd.DataFrame) -> dict[tuple[str, str], dict[str, str]]:
    """For each (run_id, recid), each stage's outcome in that run, from the latest
    terminal event of each (stage, file): ``failed`` if any failed; else ``open`` if the
    stage has unfinished events; else ``ok``, ``dry-run`` or ``skipped`` (first present).
    A zip stage that is ``ok`` but says ``zip_used`` false everywhere is ``skipped`` (the
    zipper decided against zipping). Vectorised: one pass, whatever the number of records."""
    ends = terminal(frame)
    ends = ends[ends["recid"].notna()]
    keys = ["run_id", "recid", "stage"]
    latest = ends.groupby([*keys, "file"], observed=True, dropna=False, sort=False).tail(1)
    latest = latest.assign(
        stage=latest["stage"].astype(str),
        status=latest["status"].astype(str),
        declined=latest["zip_used"].eq(False).fillna(False).astype(bool),
    )
    counts = latest.groupby([*keys, "status"], sort=False).size().unstack(fill_value=0)
    for status in ("failed", "ok", "dry-run", "skipped"):
        if status not in counts.columns:
            counts[status] = 0
    ok_rows = latest[latest["status"] == "ok"]
    declined = ok_rows.groupby(keys, sort=False)["declined"].all().reindex(counts.index, fill_value=False)
    still = open_events(frame)
    opened = set(zip(still["run_id"].astype(str), still["recid"].astype(str), still["stage"].astype(str), strict=True))
    out: dict[tuple[str, str], dict[str, str]] = {}
    columns = zip(
        counts.index,
        counts["failed"].to_numpy(),
        counts["ok"].to_numpy(),
        counts["dry-run"].to_numpy(),
        declined.to_numpy(),
        strict=True,
    )
    for (run_id, recid, stage), failed, ok, dry, no_zip in columns:
        if failed:
            outcome = "failed"
        elif (run_id, recid, stage) in opened:
            outcome = "open"  # some of its work never finished
        elif ok:
            outcome = "skipped" if stage == "zip" and no_zip else "ok"
        else:
            outcome = "dry-run" if dry else "skipped"
        out.setdefault((str(run_id), str(recid)), {})[str(stage)] = outcome
    for run_id, recid, stage in opened:
        out.setdefault((run_id, recid), {}).setdefault(stage, "open")
    return out


# Which outcome of a stage wins when the parts of a split record disagree.
_RANK = {"failed": 0, "open": 1, "ok": 2, "dry-run": 3, "skipped": 4}
RunRecid = tuple[str, str]


def with_parts(
    outcomes: Mapping[RunRecid, StageOutcomes],
) -> tuple[dict[RunRecid, dict[str, str]], dict[RunRecid, int]]:
    """``stage_outcomes`` with each part's outcomes merged into its whole record's, and the
    number of parts of each split record (per run)."""
    merged = {key: dict(stages) for key, stages in outcomes.items() if whole_of(key[1]) is None}
    parts: dict[RunRecid, int] = {}
    for (run_id, recid), stages in outcomes.items():
        whole = whole_of(recid)
        if whole is None:
            continue
        key = (run_id, whole)
        parts[key] = parts.get(key, 0) + 1
        mine = merged.setdefault(key, {})
        for stage, outcome in stages.items():
            if stage != "record" and _RANK.get(outcome, 5) < _RANK.get(mine.get(stage, ""), 5):
                mine[stage] = outcome
    return merged, parts


# The record's first node, and the end of a record that never entered the stages.
_START = Node(0, "selected", SUCCESS)
_ENDS_BEFORE_STAGES = {
    "skipped": Node(1, "skipped (already done)", SKIPPED),
    "dry-run": Node(1, "dry run", STOPPED),
}


@dataclass(frozen=True)
class _Walk:
    """One record's final status and stage outcomes, asked layer by layer."""

    status: str
    error_type: str | None
    outcomes: StageOutcomes

    def out(self, stage: str) -> str | None:
        return self.outcomes.get(stage)

    def passed(self, outcome: str | None) -> bool:
        # A stage with no event of its own counts as passed when the record ended ok.
        return outcome == "ok" or (outcome is None and self.status == "ok")

    def left(self, layer: int) -> Node:
        # Left the flow here without a failed stage event of this layer.
        if self.status == INTERRUPTED:
            return Node(layer, "interrupted", STOPPED)
        return Node(layer, f"failed: {self.error_type or 'record'}", FAILED)


# A layer step gives the node the record reaches on that layer and whether it carries on.
_Step = tuple[Node, bool]


def _download_layer(walk: _Walk) -> _Step:
    """Layer 1: resolve + download."""
    if walk.out("resolve") == "failed":
        return Node(1, "resolve failed", FAILED), False
    download = walk.out("download")
    if download == "failed":
        return Node(1, "download failed", FAILED), False
    if download == "skipped":  # every file already there and verified: a skip that carries on
        return Node(1, "already downloaded", SKIPPED), True
    if walk.passed(download):
        return Node(1, "downloaded", SUCCESS), True
    return walk.left(1), False


def _zip_layer(walk: _Walk) -> _Step:
    """Layer 2: zip or not."""
    zipped = walk.out("zip")
    if zipped == "failed":
        return Node(2, "zip failed", FAILED), False
    if zipped is None and walk.out("transform") == "failed":
        return Node(2, "transform failed", FAILED), False  # the metadata failed before any zip decision
    if zipped == "ok":
        return Node(2, "zipped", SUCCESS), True
    later = any(walk.out(s) is not None for s in ("upload", "verify", "publish"))
    if zipped == "skipped" or later or walk.status == "ok":
        return Node(2, "not zipped", SUCCESS), True
    return walk.left(2), False


def _upload_layer(walk: _Walk) -> _Step:
    """Layer 3: transform + upload + verify."""
    for stage in ("transform", "upload", "verify"):
        if walk.out(stage) == "failed":
            return Node(3, f"{stage} failed", FAILED), False
    upload = walk.out("upload")
    if upload == "skipped":
        return Node(3, "already on the target", SKIPPED), True
    if walk.passed(upload):
        return Node(3, "uploaded", SUCCESS), True
    return walk.left(3), False


def _publish_layer(walk: _Walk) -> _Step:
    """Layer 4: publish (or left as a draft). The last layer: every path ends here."""
    publish = walk.out("publish")
    if publish == "failed":
        return Node(4, "publish failed", FAILED), False
    if publish == "ok":
        return Node(4, "published", SUCCESS), False
    if walk.status == "ok":
        return Node(4, "not published (draft)", STOPPED), False
    return walk.left(4), False


_LAYER_STEPS = (_download_layer, _zip_layer, _upload_layer, _publish_layer)


def record_path(status: str, error_type: str | None, outcomes: StageOutcomes) -> list[Node]:
    """The nodes one record passes through, given its final status and the outcome of
    each stage in the run that decided it (``stage_outcomes``)."""
    early = _ENDS_BEFORE_STAGES.get(status)
    if early is not None:
        return [_START, early]
    walk = _Walk(status, error_type, outcomes)
    path = [_START]
    for step in _LAYER_STEPS:
        node, carries_on = step(walk)
        path.append(node)
        if not carries_on:
            break
    return path


def record_paths(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per recid: ``final`` status, ``path`` (node ids), ``end`` node id,
    ``end_layer`` and ``parts`` (a split record's parts in that run, else 0)."""
    final = final_record_status(frame)
    outcomes, parts = with_parts(stage_outcomes(frame))
    rows = []
    for recid, rec in final.iterrows():
        error_type = None if pd.isna(rec["error_type"]) else str(rec["error_type"])
        key = (str(rec["run_id"]), str(recid))
        nodes = record_path(str(rec["status"]), error_type, outcomes.get(key, {}))
        rows.append(
            {
                "recid": recid,
                "final": str(rec["status"]),
                "path": tuple(n.id for n in nodes),
                "end": nodes[-1].id,
                "end_layer": nodes[-1].layer,
                "nodes": nodes,
                "parts": parts.get(key, 0),
            }
        )
    columns = ["recid", "final", "path", "end", "end_layer", "nodes", "parts"]
    return pd.DataFrame(rows, columns=columns).set_index("recid")


def flow_table(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Sankey as data: ``(nodes, links)``.

    ``nodes``: id, layer, label, kind, value (recids through the node), ends (recids whose
    path ends there), split (split records through it) and parts (their parts).
    ``links``: source, target (node ids), value (recids), in layer order.
    """
    paths = record_paths(frame)
    node_info: dict[str, Node] = {}
    through: dict[str, int] = {}
    ending: dict[str, int] = {}
    split: dict[str, int] = {}
    part_count: dict[str, int] = {}
    link_count: dict[tuple[str, str], int] = {}
    for nodes, n_parts in zip(paths["nodes"], paths["parts"], strict=True):
        for node in nodes:
            node_info.setdefault(node.id, node)
            through[node.id] = through.get(node.id, 0) + 1
            if n_parts:
                split[node.id] = split.get(node.id, 0) + 1
                part_count[node.id] = part_count.get(node.id, 0) + int(n_parts)
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
                "split": split.get(node.id, 0),
                "parts": part_count.get(node.id, 0),
            }
            for node in node_info.values()
        ),
        key=lambda r: (r["layer"], kind_order[str(r["kind"])], str(r["label"])),
    )
    nodes_df = pd.DataFrame(node_rows, columns=["id", "layer", "label", "kind", "value", "ends", "split", "parts"])
    order = {row["id"]: i for i, row in enumerate(node_rows)}
    links = sorted(link_count.items(), key=lambda item: (order[item[0][0]], order[item[0][1]]))
    links_df = pd.DataFrame(
        [{"source": s, "target": t, "value": v} for (s, t), v in links], columns=["source", "target", "value"]
    )
    return nodes_df, links_df


def node_text(label: str, value: int, split: int, parts: int) -> str:
    """A node's label on the figures: ``uploaded: 12 (1 split into 4 parts)``."""
    return f"{label}: {value}" + (f" ({split} split into {parts} parts)" if split else "")


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


def later_skips(frame: pd.DataFrame) -> int:
    """Records whose flow is drawn from the run that did the work but that a later run
    skipped as already done (their skip is not a node of the flow: see the module doc)."""
    ends = terminal(frame)
    skipped = set(ends.loc[(ends["stage"] == "record") & (ends["status"] == "skipped"), "recid"].dropna())
    final = final_record_status(frame)
    return int(sum(1 for recid in skipped if recid in final.index and final.loc[recid, "status"] != "skipped"))
