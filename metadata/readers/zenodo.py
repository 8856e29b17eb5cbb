"""Zenodo record -> ``Dataset``.

Reads what ``download.sources.zenodo`` keeps as ``Record.metadata``: the records API's
answer (``{"id", "recid", "conceptrecid", "doi", "links", "metadata": {...}, "files"}``),
or the ``metadata`` object alone (a deposition's). With a resolved ``Record`` the file
facts come from its real files. Never raises on junk inside a record (facts are then
absent); only input that is not a JSON object at all is an ``InputError``.

Mapped: title, creators (``"Family, Given"``, ORCID, affiliations ``"A; B"``),
description (sanitised), ``method`` and ``notes`` as sections, ``publication_date``,
license, keywords and subject terms, related identifiers (Zenodo's relation names, kept
verbatim beside the DataCite id), version, DOI, resource type; what no neutral field
holds (concept DOI, access right and conditions, embargo date, communities, dates, other
contributors, references, grants, identifiers of other schemes, subjects' vocabulary ids,
journal / conference / imprint / part-of / thesis details, locations, custom fields) goes
into headed extras. The bibliographic details are read in both shapes Zenodo serves: the
deposit's flat ``journal_title`` and the records API's nested ``journal.title``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ferry.core.errors import InputError
from metadata.dataset import Dataset, FileFacts, Organisation, Person, Relation, Section
from metadata.html import escape, link_html, list_html, sanitize
from metadata.kinds import zenodo_kind
from metadata.readers.common import file_facts, license_from, listed_pairs, person, resolved_pairs
from metadata.readers.relations import ZENODO_NAMES
from metadata.readers.values import dedupe, doi_of, edtf_date, items, mapping, raw_text, recid_of, text, texts

SOURCE = "zenodo"
PUBLISHER = "Zenodo"


def _body(record: Any) -> Mapping[str, Any]:
    """The records API answer from a ``Record`` or a mapping; InputError for anything else."""
    meta = getattr(record, "metadata", None)
    if not isinstance(record, Mapping) and isinstance(meta, Mapping):
        record = meta
    if not isinstance(record, Mapping):
        raise InputError(f"a Zenodo record must be a JSON object, not {type(record).__name__}")
    return record


def _relations(md: Mapping[str, Any]) -> tuple[list[Relation], list[str]]:
    """Related identifiers with a URL or a DOI; the rest (arXiv, ISBN...) as text lines."""
    out, other = [], []
    for entry in items(md.get("related_identifiers")):
        ident, scheme = text(entry.get("identifier")), (text(entry.get("scheme")) or "").lower()
        name = text(entry.get("relation")) or "references"
        if not ident:
            continue
        # Zenodo's names are DataCite's; the lowercase form is InvenioRDM's id for the same one.
        relation = name.lower() if name.lower() in ZENODO_NAMES else "references"
        doi = doi_of(ident) if scheme in ("doi", "") else None
        url = ident if scheme == "url" or (not scheme and ident.startswith(("http://", "https://"))) else None
        if doi is None and url is None:
            other.append(f"{escape(name)}: {escape(ident)} ({escape(scheme or 'no scheme')})")
            continue
        out.append(Relation(relation, name, None, url, doi, title=ident, description=text(entry.get("resource_type"))))
    return out, other


def _sections(md: Mapping[str, Any]) -> tuple[Section | None, list[Section]]:
    description = raw_text(md.get("description"))
    main = Section("abstract", "Description", sanitize(description)) if description else None
    rest = []
    for key, field, heading in (("methodology", "method", "Methodology"), ("note", "notes", "Notes")):
        value = raw_text(md.get(field))
        if value:
            rest.append(Section(key, heading, sanitize(value)))
    return main, rest


def _record_facts(body: Mapping[str, Any], md: Mapping[str, Any]) -> list[str]:
    """Facts about the Zenodo record itself that no neutral field holds."""
    facts = []
    if concept := doi_of(body.get("conceptdoi")) or doi_of(md.get("conceptdoi")):
        facts.append(f"Concept DOI (all versions): {link_html(concept, f'https://doi.org/{concept}')}")
    if access := text(md.get("access_right")):
        facts.append(f"Access right: {escape(access)}")
    communities = [text(c.get("identifier")) or text(c.get("id")) for c in items(md.get("communities"))]
    if names := [c for c in communities if c]:
        facts.append(f"Communities: {escape(', '.join(names))}")
    if language := text(md.get("language")):
        facts.append(f"Language: {escape(language)}")
    if embargo := text(md.get("embargo_date")):
        facts.append(f"Embargo date: {escape(embargo)}")
    if conditions := raw_text(md.get("access_conditions")):
        facts.append(f"Access conditions: {sanitize(conditions)}")
    return facts


# Bibliographic details: (nested object of the records API, flat prefix of the deposit, heading, parts).
_BIBLIO = (
    ("journal", "journal", "Journal", ("title", "volume", "issue", "pages")),
    ("meeting", "conference", "Conference", ("title", "acronym", "dates", "place", "url", "session", "session_part")),
    ("imprint", "imprint", "Imprint", ("publisher", "isbn", "place")),
    ("part_of", "partof", "Part of", ("title", "pages")),
    ("thesis", "thesis", "Thesis", ("university",)),
)


def _publication(md: Mapping[str, Any]) -> list[str]:
    """Journal, conference, imprint, part-of and thesis details, one labelled line per value."""
    lines = []
    for nested, flat, heading, parts in _BIBLIO:
        inner = mapping(md.get(nested))
        for part in parts:
            if value := text(inner.get(part)) or text(md.get(f"{flat}_{part}")):
                lines.append(escape(f"{heading} {part.replace('_', ' ')}: {value}"))
    supervisors = items(mapping(md.get("thesis")).get("supervisors")) or items(md.get("thesis_supervisors"))
    for who in (person(entry) for entry in supervisors):
        if isinstance(who, Organisation):
            lines.append(escape(f"Thesis supervisor: {who.name}"))
        elif who is not None:
            extra = [*who.affiliations, *([f"ORCID {who.orcid}"] if who.orcid else [])]
            lines.append(escape(f"Thesis supervisor: {who.display_name}" + (f" ({'; '.join(extra)})" if extra else "")))
    return lines


def _locations(md: Mapping[str, Any]) -> list[str]:
    lines = []
    for loc in items(md.get("locations")):
        where = ", ".join(f"{k} {v}" for k in ("lat", "lon") if (v := text(loc.get(k))))
        label = " ".join(v for v in (text(loc.get("place")), f"({where})" if where else None) if v)
        note = text(loc.get("description"))
        if label or note:
            lines.append(escape(": ".join(v for v in (label, note) if v)))
    return lines


def _subject_ids(md: Mapping[str, Any]) -> list[str]:
    """The subjects' vocabulary ids (their terms are keywords)."""
    lines = []
    for s in items(md.get("subjects")):
        ident, scheme = text(s.get("identifier")), text(s.get("scheme"))
        if ident:
            url = ident if ident.startswith(("http://", "https://")) else None
            lines.append(
                f"{escape(text(s.get('term')) or 'Subject')}: {link_html(ident, url)}"
                + (f" ({escape(scheme)})" if scheme else "")
            )
    return lines


def _custom(md: Mapping[str, Any]) -> list[str]:
    """Zenodo's community custom fields (``{"code:programmingLanguage": [...]}``), key by key."""
    lines = []
    for key, value in mapping(md.get("custom")).items():
        shown = text(value) or json.dumps(value, ensure_ascii=False, sort_keys=True)
        if value not in (None, "", [], {}):
            lines.append(escape(f"{key}: {shown}"))
    return lines


def _dates(md: Mapping[str, Any]) -> list[str]:
    lines = []
    for d in items(md.get("dates")):
        span = "/".join(v for v in (text(d.get("start")), text(d.get("end"))) if v)
        if span:
            note = text(d.get("description"))
            lines.append(escape(f"{text(d.get('type')) or 'Date'}: {span}" + (f" ({note})" if note else "")))
    return lines


def _contributors(md: Mapping[str, Any]) -> list[str]:
    """Other contributors as "name (role)"; research groups are organisations, not here."""
    return [
        escape(f"{name} ({text(c.get('type')) or 'contributor'})")
        for c in items(md.get("contributors"))
        if text(c.get("type")) != "ResearchGroup" and (name := text(c.get("name")))
    ]


def _grants(md: Mapping[str, Any]) -> list[str]:
    grants = [text(g.get("title")) or text(g.get("id")) or text(g.get("code")) for g in items(md.get("grants"))]
    return [escape(g) for g in grants if g]


def _extras(body: Mapping[str, Any], md: Mapping[str, Any], other_ids: list[str]) -> list[Section]:
    """The headed extras, in this order, each only when it has lines."""
    parts = (
        ("zenodo.record", "Zenodo record", _record_facts(body, md)),
        ("dates", "Dates", _dates(md)),
        ("contributors", "Contributors", _contributors(md)),
        ("references", "References", [escape(r) for r in texts(md.get("references"))]),
        ("grants", "Grants", _grants(md)),
        ("related.other", "Related identifiers (other schemes)", other_ids),
        ("zenodo.publication", "Publication details", _publication(md)),
        ("zenodo.subjects", "Subjects (vocabulary ids)", _subject_ids(md)),
        ("zenodo.locations", "Locations", _locations(md)),
        ("zenodo.custom", "Custom fields", _custom(md)),
    )
    return [Section(key, heading, list_html(lines)) for key, heading, lines in parts if lines]


def _file_facts(record: Any, body: Mapping[str, Any]) -> FileFacts:
    pairs = resolved_pairs(record)
    return file_facts(pairs if pairs is not None else listed_pairs(body.get("files")))


def read(record: Any) -> Dataset:
    """Read a Zenodo record; raises InputError only when it is not a JSON object at all."""
    body = _body(record)
    inner = body.get("metadata")
    md: Mapping[str, Any] = inner if isinstance(inner, Mapping) else body
    rtype = mapping(md.get("resource_type"))
    # legacy shape {"type", "subtype", "title"} or the deposit's upload_type; InvenioRDM's {"id": "publication-article"}
    rid_type, _, rid_sub = (text(rtype.get("id")) or "").lower().partition("-")
    kind_word = (text(rtype.get("type")) or text(md.get("upload_type")) or rid_type).lower()
    subtype = text(rtype.get("subtype")) or text(md.get(f"{kind_word}_type")) or rid_sub or None
    if not kind_word:
        subtype = None
    recid = recid_of(body.get("id")) or recid_of(body.get("recid")) or recid_of(getattr(record, "recid", None))
    links = mapping(body.get("links"))
    doi = doi_of(md.get("doi")) or doi_of(body.get("doi"))
    url = text(links.get("html")) or text(links.get("self_html")) or (f"https://doi.org/{doi}" if doi else None)
    creators = [c for c in (person(e) for e in items(md.get("creators"))) if c]
    groups = [text(c.get("name")) for c in items(md.get("contributors")) if text(c.get("type")) == "ResearchGroup"]
    relations, other_ids = _relations(md)
    description, sections = _sections(md)
    subjects = [text(s.get("term")) for s in items(md.get("subjects"))]
    return Dataset(
        source=SOURCE,
        recid=recid,
        raw_recid=str(recid) if recid else text(body.get("id")),
        url=url,
        doi=doi,
        title=text(md.get("title")) or text(body.get("title")),
        title_additional=None,
        kind=zenodo_kind(kind_word),
        type_primary=text(rtype.get("title")) or (kind_word.capitalize() if kind_word else None),
        type_secondary=(subtype,) if subtype else (),
        dataset_type="other",
        publisher=PUBLISHER,
        date_published=edtf_date(md.get("publication_date")),
        date_created=None,
        date_reprocessed=None,
        creators=tuple(c for c in creators if isinstance(c, Person | Organisation)),
        organisations=tuple(Organisation(g) for g in dedupe([g for g in groups if g])),
        description=description,
        sections=tuple(sections),
        keywords=tuple(dedupe([*texts(md.get("keywords")), *(s for s in subjects if s)])),
        categories=(),
        collections=(),
        license=license_from(md.get("license")),
        relations=tuple(relations),
        experiments=(),
        accelerator=None,
        collision_type=None,
        energy=None,
        energy_text=None,
        number_of_events=None,
        files=_file_facts(record, body),
        extras=tuple(_extras(body, md, other_ids)),
        version=text(md.get("version")),
    )
