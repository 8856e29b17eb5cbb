"""The portal's text blocks and source-only facts, rendered as sanitised HTML.

Text blocks (``abstract``, ``methodology``, ``usage``, ...) are ``{description, links}``;
a link gives a URL, or only a recid (then it points at that record's page on the portal,
and also becomes a related identifier, so "can be found in" / "linked below" still lead
somewhere on the target). Facts no target has a field for (``system_details``,
``dataset_semantics``, ``stripping``, ...) become headed blocks ("extras").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from metadata.dataset import Relation, Section
from metadata.html import absolute_url, escape, link_html, list_html, record_url, sanitize
from metadata.readers.values import doi_of, items, mapping, raw_text, recid_of, text

# Text blocks in the order the portal shows them, with their headings.
TEXT_BLOCKS = {
    "abstract": "Abstract",
    "methodology": "Methodology",
    "usage": "Usage",
    "note": "Note",
    "validation": "Validation",
    "use_with": "Use with",
    "pileup": "Pile-up",
}

# Source-only facts rendered as extras, with their headings (MAPPING.md lists them all).
EXTRA_FIELDS = {
    "title_additional": "Additional title",
    "accelerator": "Accelerator",
    "collision_information": "Collision",
    "run_period": "Run period",
    "date_reprocessed": "Date reprocessed",
    "system_details": "System details",
    "dataset_semantics": "Dataset semantics",
    "dataset_semantics_files": "Dataset semantics files",
    "methodology.steps": "Processing steps",
    "stripping": "Stripping",
    "magnet_polarity": "Magnet polarity",
    "cms_confdb_id": "CMS configuration database id",
    "run_numbers": "Run numbers",
    "signature": "Signature",
    "source_code_repository": "Source code repository",
    "links": "Links",
    "prepublication": "Prepublication",
    "cross_section": "Cross section",
    "language": "Language",
    "categories.source": "Category source",
    "collaboration.group": "Collaboration group",
    "distribution": "Distribution (as the source states it)",
}


def _link(entry: Mapping[str, Any], origin: str) -> tuple[str, Relation | None]:
    """One link as an ``<li>`` body, and the relation it implies when it names a record."""
    url_text = text(entry.get("url"))
    recid = recid_of(entry.get("recid"))
    label = text(entry.get("description")) or text(entry.get("title"))
    url = absolute_url(url_text) if url_text else None
    if url is None and recid is not None:
        url = record_url(recid)
    shown = label or url_text or (f"CERN Open Data record {recid}" if recid else None)
    if shown is None:
        return "", None
    relation = None
    if recid is not None:
        relation = Relation(
            relation="references",
            source_type="link",
            recid=recid,
            url=record_url(recid),
            doi=doi_of(entry.get("doi")),
            title=text(entry.get("title")),
            description=label,
            origin=origin,
        )
    return link_html(shown, url), relation


def text_block(record: Mapping[str, Any], key: str) -> tuple[Section | None, list[Relation]]:
    raw = record.get(key)
    value = mapping(raw)
    body = raw_text(raw) if isinstance(raw, str) else raw_text(value.get("description"))
    parts = [f"<div>{sanitize(body)}</div>"] if body else []
    links, relations = [], []
    for entry in items(value.get("links")):
        rendered, relation = _link(entry, key)
        if rendered:
            links.append(rendered)
        if relation is not None:
            relations.append(relation)
    parts.append(list_html(links))
    html = "".join(parts)
    return (Section(key, TEXT_BLOCKS[key], html) if html else None), relations


def render_value(value: Any) -> str:
    """Any JSON value as HTML: objects as labelled lists, lists as lists, text sanitised."""
    if isinstance(value, Mapping):
        rows = [f"<strong>{escape(str(k))}</strong>: {render_value(v)}" for k, v in value.items() if _present(v)]
        return list_html(rows)
    if isinstance(value, list):
        shown = [render_value(v) for v in value if _present(v)]
        if all(not isinstance(v, Mapping | list) for v in value):
            return escape(", ".join(_scalar(v) for v in value if _present(v)))
        return list_html(shown)
    if isinstance(value, str):
        return sanitize(value)
    return escape(_scalar(value))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip() if not isinstance(value, str) else " ".join(value.split())


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _semantics_table(rows: list[Mapping[str, Any]]) -> str:
    cols = [c for c in ("variable", "type", "unit", "description") if any(_present(r.get(c)) for r in rows)]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{render_value(r.get(c)) if _present(r.get(c)) else ''}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _extra_value(record: Mapping[str, Any], key: str) -> Any:
    top, _, sub = key.partition(".")
    value = record.get(top)
    if sub:
        return mapping(value).get(sub)
    if key == "collision_information":
        return {k: v for k, v in mapping(value).items() if k in ("type", "energy")}
    return value


def extras(record: Mapping[str, Any]) -> Iterator[Section]:
    for key, title in EXTRA_FIELDS.items():
        value = _extra_value(record, key)
        if not _present(value):
            continue
        if key == "dataset_semantics" and isinstance(value, list):
            rows = [r for r in value if isinstance(r, Mapping)]
            html = _semantics_table(rows) if rows else render_value(value)
        else:
            html = render_value(value)
        if html:
            yield Section(key, title, html if html.startswith("<") else f"<div>{html}</div>")
