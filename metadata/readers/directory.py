"""Local folder record (``download.sources.local``: source ``dir``/``local``) -> ``Dataset``.

A folder says little about itself, so this reads what its owner wrote, if anything, and
invents nothing:

- ``DIR/metadata.json``: Zenodo's deposit metadata shape (what ``ferry push --metadata``
  takes): ``title``, ``creators`` (``[{"name": "Family, Given", "affiliation", "orcid"}]``
  or ``["Family, Given"]``), ``description``, ``publication_date``, ``keywords``,
  ``license``, ``version``, ``related_identifiers``, ``upload_type``, ``method``, ``notes``;
- else ``DIR/catalog.yaml`` (a cartloader catalog): the same keys where its top level has
  them (``authors`` is read as ``creators``);
- else only facts: the title is the folder's name, the description one sentence giving
  the number and size of its files, the publication date the day of the copy (UTC), the
  kind "dataset". No creators: a profile that needs them says ``metadata.creators`` is
  missing, and the message tells where to write them.

The folder's local path is never put into the metadata (it means nothing on a target and
may say more than its owner wants). A ``metadata.json`` that is not a JSON object, or a
``catalog.yaml`` that is not YAML, is an ``InputError`` naming the file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ferry.core.errors import InputError
from metadata.dataset import Dataset, Organisation, Person, Section
from metadata.html import escape, sanitize
from metadata.kinds import zenodo_kind
from metadata.readers.common import file_facts, license_from, person, resolved_pairs
from metadata.readers.values import dedupe, edtf_date, mapping, raw_text, text, texts
from metadata.readers.zenodo import _relations

SOURCE = "dir"
PUBLISHER = "dataferry (local folder)"
METADATA_FILE = "metadata.json"
CATALOG_FILE = "catalog.yaml"
HINT = f"write the missing fields into DIR/{METADATA_FILE} (Zenodo's deposit metadata shape)"


def _load(root: Path | None) -> tuple[Mapping[str, Any], str | None]:
    """The owner's metadata document and the file it came from (none: ``({}, None)``)."""
    if root is None:
        return {}, None
    doc_path = root / METADATA_FILE
    if doc_path.is_file():
        try:
            doc = json.loads(doc_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{doc_path}: cannot read it as JSON: {exc}", file=str(doc_path)) from exc
        if not isinstance(doc, Mapping):
            raise InputError(f"{doc_path}: must hold a JSON object, not {type(doc).__name__}", file=str(doc_path))
        inner = doc.get("metadata")  # a whole deposition answer is fine too
        return (inner if isinstance(inner, Mapping) and "title" not in doc else doc), METADATA_FILE
    catalog_path = root / CATALOG_FILE
    if catalog_path.is_file():
        import yaml  # only folders with a catalog need it

        try:
            raw = yaml.safe_load(catalog_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise InputError(f"{catalog_path}: cannot read it as YAML: {exc}", file=str(catalog_path)) from exc
        catalog = raw if isinstance(raw, Mapping) else {}
        doc = dict(catalog)
        if "creators" not in doc and "authors" in doc:
            doc["creators"] = doc["authors"]
        return doc, CATALOG_FILE
    return {}, None


def _creators(doc: Mapping[str, Any]) -> list[Person | Organisation]:
    raw = doc.get("creators")
    # in the order written: objects and "Family, Given" strings may be mixed
    entries: list[Any] = raw if isinstance(raw, list) else texts(raw)
    return [c for c in (person(e) for e in entries if isinstance(e, dict | str)) if c]


def _summary(name: str, count: int, size: int | None) -> Section:
    amount = f"{count} file(s)" + (f", {size} bytes" if size is not None else "")
    return Section("abstract", "Description", f"<p>The files of the folder {escape(name)} ({amount}).</p>")


def read(record: Any) -> Dataset:
    """Read a folder record; InputError when its metadata document cannot be read."""
    meta = getattr(record, "metadata", None) if not isinstance(record, Mapping) else record
    given: Mapping[str, Any] = meta if isinstance(meta, Mapping) else {}
    path = text(given.get("path"))
    root = Path(path) if path else None
    doc, origin = _load(root)
    name = text(getattr(record, "recid", None)) or (root.name if root else None) or text(given.get("title"))
    facts = file_facts(resolved_pairs(record) or [])
    description = raw_text(doc.get("description"))
    sections = []
    for key, field, heading in (("methodology", "method", "Methodology"), ("note", "notes", "Notes")):
        if value := raw_text(doc.get(field)):
            sections.append(Section(key, heading, sanitize(value)))
    extras = []
    if origin is not None:
        extras.append(Section("dir.metadata", "Source", f"<p>Described by the folder's {escape(origin)}.</p>"))
    relations, other_ids = _relations(doc)
    if other_ids:
        from metadata.html import list_html

        extras.append(Section("related.other", "Related identifiers (other schemes)", list_html(other_ids)))
    kind_word = (text(doc.get("upload_type")) or text(mapping(doc.get("resource_type")).get("type")) or "").lower()
    subtype = text(doc.get(f"{kind_word}_type")) if kind_word else None
    return Dataset(
        source=SOURCE,
        recid=None,
        raw_recid=name,
        url=None,
        doi=None,
        title=text(doc.get("title")) or text(given.get("title")) or name,
        title_additional=None,
        kind=zenodo_kind(kind_word, default="dataset"),
        type_primary=kind_word.capitalize() if kind_word else None,
        type_secondary=(subtype,) if subtype else (),
        dataset_type="other",
        publisher=text(doc.get("publisher")) or PUBLISHER,
        date_published=edtf_date(doc.get("publication_date")) or dt.datetime.now(dt.UTC).date().isoformat(),
        date_created=None,
        date_reprocessed=None,
        creators=tuple(_creators(doc)),
        organisations=(),
        description=Section("abstract", "Description", sanitize(description))
        if description
        else _summary(name or "?", facts.count, facts.size),
        sections=tuple(sections),
        keywords=tuple(dedupe(texts(doc.get("keywords")))),
        categories=(),
        collections=(),
        license=license_from(doc.get("license")),
        relations=tuple(relations),
        experiments=(),
        accelerator=None,
        collision_type=None,
        energy=None,
        energy_text=None,
        number_of_events=None,
        files=facts,
        extras=tuple(extras),
        version=text(doc.get("version")),
    )
