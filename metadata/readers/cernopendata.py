"""CERN Open Data Portal record -> ``Dataset``.

Accepts the portal's record JSON (``data/records/*.json`` entries), the record API's
answer (``{"id", "metadata": {...}}``, with ``_file_indices`` expanded) or a resolved
``ferry.core.model.Record``: with the latter the file facts come from its real file list.
Never raises on junk inside a record (facts are then absent); only input that is not a
JSON object at all is an ``InputError``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from metadata.dataset import Dataset, FileFacts, Organisation, Person, Relation, Section
from metadata.energy import Energy, ecms_from_text, parse_energy
from metadata.html import escape, list_html, record_url
from metadata.kinds import cern_kind
from metadata.readers import portal_text
from metadata.readers.relations import datacite_relation
from metadata.readers.values import (
    count,
    dedupe,
    doi_of,
    edtf_date,
    items,
    license_of,
    mapping,
    recid_of,
    span,
    text,
    texts,
    unwrap,
)

SOURCE = "cernopendata"
PUBLISHER = "CERN Open Data Portal"
_INDEX_TYPES = {"index.json", "index.txt"}
_ORG_WORDS = re.compile(r"\b(collaboration|group|team|consortium|experiment|project)\b", re.IGNORECASE)
_COMPRESSED = {"gz", "bz2", "xz", "zst"}


def _dataset_type(secondary: list[str], primary: str | None) -> str:
    words = " ".join([*secondary, primary or ""]).casefold()
    if "collision" in words:
        return "collision"
    if "simulat" in words or "monte carlo" in words:
        return "simulated"
    return "other"


def _person(entry: Mapping[str, Any]) -> Person | Organisation | None:
    raw = entry.get("name")
    name = text(raw) if isinstance(raw, str) else None
    if not name:
        return None
    if "," not in name and _ORG_WORDS.search(name):
        return Organisation(name)  # "CMS Open data group" is not a person
    family, _, given = name.partition(",")
    affiliations = tuple(texts(entry.get("affiliation")))
    return Person(
        family_name=family.strip() or name,
        given_name=given.strip() or None,
        affiliations=affiliations,
        orcid=_orcid(entry.get("orcid")),
        inspire_id=text(entry.get("inspireid")),
        ror_ids=tuple(texts(entry.get("rorid"))),
    )


def _orcid(value: Any) -> str | None:
    raw = text(value)
    if raw is None:
        return None
    m = re.search(r"(\d{4}-\d{4}-\d{4}-\d{3}[\dX])", raw)
    return m.group(1) if m else None


def _organisations(r: Mapping[str, Any], experiments: list[str]) -> list[Organisation]:
    """The collaboration, named once: "DELPHI" / "CMS Collaboration" -> "<EXP> collaboration"."""
    names = [text(mapping(r.get("collaboration")).get("name")) or text(r.get("collaboration"))]
    found = [n for n in names if n]
    if not found and experiments:
        found = [experiments[0]]
    out = []
    by_exp = {e.casefold(): e for e in experiments}
    for name in found:
        key = name.casefold().removesuffix(" collaboration").strip()
        if key in by_exp:
            name = f"{by_exp[key]} collaboration"
        elif name.casefold().endswith(" collaboration"):
            name = f"{name[: -len(' collaboration')]} collaboration"
        out.append(Organisation(name))
    unique = dedupe([o.name for o in out])
    return [Organisation(n) for n in unique]


def _relations(r: Mapping[str, Any], derived: bool) -> list[Relation]:
    out = []
    for entry in items(r.get("relations")):
        source_type = text(entry.get("type"))
        recid = recid_of(entry.get("recid"))
        doi = doi_of(entry.get("doi"))
        if not source_type or (recid is None and doi is None):
            continue  # a relation naming no record (only a title) cannot be linked
        description = text(entry.get("description"))
        out.append(
            Relation(
                relation=datacite_relation(source_type, description=description, record_is_derived=derived),
                source_type=source_type,
                recid=recid,
                url=record_url(recid) if recid else None,
                doi=doi,
                title=text(entry.get("title")),
                description=description,
            )
        )
    return out


def file_type(key: str) -> str | None:
    """``Y10041.1.al`` -> ``al``; ``x.tar.gz`` -> ``tar.gz``; no extension -> None."""
    parts = posixpath.basename(key).lower().split(".")
    if len(parts) < 2 or not parts[-1]:
        return None
    if parts[-1] in _COMPRESSED and len(parts) > 2:
        return f"{parts[-2]}.{parts[-1]}"
    return parts[-1]


def _file_facts(record: Any, r: Mapping[str, Any], distribution: Mapping[str, Any]) -> FileFacts:
    claimed_count = count(distribution.get("number_files"))
    claimed_size = count(distribution.get("size"))
    claimed_formats = tuple(dedupe([f.lower() for f in texts(distribution.get("formats"))]))
    resolved_files = getattr(record, "files", None)
    if not isinstance(record, Mapping) and isinstance(resolved_files, tuple):
        pairs = [(str(getattr(f, "key", "")), getattr(f, "size", None)) for f in resolved_files]
        unresolved = False
    else:
        direct = [f for f in items(r.get("files")) if text(f.get("type")) not in _INDEX_TYPES]
        indexed = [f for idx in items(r.get("_file_indices")) for f in items(idx.get("files"))]
        has_index = any(text(f.get("type")) in _INDEX_TYPES for f in items(r.get("files")))
        pairs = [(text(f.get("key")) or text(f.get("uri")) or "", count(f.get("size"))) for f in direct + indexed]
        # An index not expanded here: the real files are unknown, only the claims are.
        unresolved = has_index and not indexed
    if unresolved:
        n = claimed_count or len(pairs) or 1
        return FileFacts(n, claimed_size, claimed_formats, False, claimed_count, claimed_size, claimed_formats)
    sizes = [s for _, s in pairs]
    total = sum(s for s in sizes if s is not None) if pairs and None not in sizes else None
    types = tuple(dict.fromkeys(t for t in (file_type(k) for k, _ in pairs) if t))
    return FileFacts(len(pairs), total, types, True, claimed_count, claimed_size, claimed_formats)


def _energy_text(source: str | None, energy: Energy | None) -> str | None:
    """The portal's text when it was used; unparsed text only when it has a number in it."""
    if source is None:
        return energy.text if energy else None
    if energy is not None or re.search(r"\d", source):
        return source
    return None


def _author_ids(people: list[Person]) -> Section | None:
    """INSPIRE and ROR ids: no target's creator fields carry them, so they are listed."""
    rows = []
    for p in people:
        ids = ([f"INSPIRE {p.inspire_id}"] if p.inspire_id else []) + [f"ROR {r}" for r in p.ror_ids]
        if ids:
            rows.append(escape(f"{p.display_name}: {', '.join(ids)}"))
    return Section("authors.identifiers", "Author identifiers", list_html(rows)) if rows else None


def read(record: Any) -> Dataset:
    """Read a portal record; raises InputError only when it is not a JSON object at all."""
    r = unwrap(record)
    ctype = mapping(r.get("type"))
    collision = mapping(r.get("collision_information"))
    distribution = mapping(r.get("distribution"))
    categories = mapping(r.get("categories"))
    primary = text(ctype.get("primary"))
    secondary = texts(ctype.get("secondary"))
    derived = any(s.casefold() == "derived" for s in secondary)

    blocks, relations = [], _relations(r, derived)
    for key in portal_text.TEXT_BLOCKS:
        section, links = portal_text.text_block(r, key)
        relations.extend(links)
        if section is not None:
            blocks.append(section)
    description = next((s for s in blocks if s.key == "abstract"), blocks[0] if blocks else None)
    sections = tuple(s for s in blocks if s is not description)

    source_energy = text(collision.get("energy"))
    energy = parse_energy(source_energy)
    # The abstract's "ecms=" is the energy the sample was made at: it wins over the
    # portal's broad run range ("89-94 GeV").
    ecms = ecms_from_text(text(mapping(r.get("abstract")).get("description")) or text(r.get("abstract")))
    if ecms is not None:
        energy, source_energy = ecms, None

    creators: list[Person | Organisation] = [c for c in (_person(a) for a in items(r.get("authors"))) if c]
    people = [c for c in creators if isinstance(c, Person)]
    experiments = dedupe(texts(r.get("experiment")))
    extras = list(portal_text.extras(r))
    ids = _author_ids(people)
    if ids is not None:
        extras.append(ids)

    return Dataset(
        source=SOURCE,
        recid=recid_of(r.get("recid")),
        raw_recid=text(r.get("recid")),
        url=record_url(n) if (n := recid_of(r.get("recid"))) else None,
        doi=doi_of(r.get("doi")),
        title=text(r.get("title")),
        title_additional=text(r.get("title_additional")),
        kind=cern_kind(primary, secondary),
        type_primary=primary,
        type_secondary=tuple(secondary),
        dataset_type=_dataset_type(secondary, primary),
        publisher=text(r.get("publisher")) or PUBLISHER,
        date_published=edtf_date(r.get("date_published")),
        date_reprocessed=edtf_date(r.get("date_reprocessed")),
        date_created=span([d for d in (edtf_date(v) for v in texts(r.get("date_created"))) if d]),
        creators=tuple(creators),
        organisations=tuple(_organisations(r, experiments)),
        description=description,
        sections=sections,
        keywords=tuple(dedupe(texts(r.get("keywords")))),
        categories=tuple(dedupe(texts(categories.get("primary")) + texts(categories.get("secondary")))),
        collections=tuple(dedupe(texts(r.get("collections")))),
        license=license_of(r),
        relations=tuple(relations),
        experiments=tuple(experiments),
        accelerator=text(r.get("accelerator")),
        collision_type=text(collision.get("type")),
        energy=energy,
        energy_text=_energy_text(source_energy, energy),
        number_of_events=count(distribution.get("number_events")),
        files=_file_facts(record, r, distribution),
        extras=tuple(extras),
    )
