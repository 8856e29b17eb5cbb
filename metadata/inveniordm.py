"""Profile "inveniordm": stock InvenioRDM 12/13 metadata, nothing a stock instance refuses.

Mapping (CERN record -> InvenioRDM):
- resource_type: ``dataset``; documentation records (type.primary Documentation /
  Supplementaries) become ``publication`` (manuals: ``publication-technicalnote``).
- title, publisher (default "CERN Open Data Portal"), publication_date (EDTF, from
  date_published), dates (created, from date_created; several years -> an interval).
- creators: the collaboration, organizational ("DELPHI" -> "DELPHI collaboration").
- rights: the license's SPDX id when the stock vocabulary has it (cc0-1.0), else a free
  title; none when the record states no license.
- description: the abstract (HTML, links kept); methodology / usage (with its links) /
  note go to additional_descriptions as methods / technical-info / other.
- subjects: categories, collections, keywords as free subjects.
- identifiers: ``cernopendata:<recid>`` (scheme other), what find_query() matches.
- related_identifiers: the source DOI and record URL (isidenticalto), parent/child records
  (haspart / ispartof) by their portal URLs.
- languages: eng; formats: distribution formats; sizes: file count, bytes, events.

find_query(recid) -> ``metadata.identifiers.identifier:"cernopendata:<recid>"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metadata import rdm
from metadata.base import SchemaProfile
from metadata.cernopendata import IDENTIFIER_PREFIX, SourceRecord, normalise_recid, read
from metadata.schema import array, edtf, obj, opt, req, string, vocab
from metadata.text import section_to_html

# Stock resource types we may emit (a subset of the stock vocabulary).
RESOURCE_TYPES = frozenset({"dataset", "publication", "publication-technicalnote"})
_DOC_TYPES = {"manual": "publication-technicalnote", "logbook": "publication", "authors": "publication"}
_SECTION_TYPES = {"Methodology": "methods", "Usage": "technical-info", "Note": "other"}


def resource_type(src: SourceRecord) -> str:
    if (src.type_primary or "").casefold() in {"documentation", "supplementaries"}:
        for word in src.type_secondary:
            if word.casefold() in _DOC_TYPES:
                return _DOC_TYPES[word.casefold()]
        return "publication"
    return "dataset"


def descriptions(src: SourceRecord) -> tuple[str | None, list[dict[str, Any]]]:
    """The main description (abstract, else the first text there is) and the others."""
    filled = [s for s in src.sections if not s.empty]
    if not filled:
        return None, []
    main = section_to_html(filled[0], heading=False)
    extra = [
        {"description": section_to_html(s, heading=False), "type": {"id": _SECTION_TYPES.get(s.title, "other")}}
        for s in filled[1:]
    ]
    return main, extra


def sizes(src: SourceRecord) -> list[str]:
    out = []
    if src.number_of_files is not None:
        out.append(f"{src.number_of_files} files")
    if src.size is not None:
        out.append(f"{src.size} bytes")
    if src.number_of_events is not None:
        out.append(f"{src.number_of_events} events")
    return out


SCHEMA = obj(
    {
        "metadata": req(
            obj(
                {
                    "resource_type": req(vocab(RESOURCE_TYPES)),
                    "title": req(string(min_len=3)),
                    "publication_date": req(edtf()),
                    "creators": req(array(rdm.CREATOR, min_items=1)),
                    "publisher": opt(string(min_len=1)),
                    "description": opt(rdm.DESCRIPTION),
                    "additional_descriptions": opt(rdm.ADDITIONAL_DESCRIPTIONS),
                    "rights": opt(rdm.rights_check(rdm.stock_license_ids())),
                    "subjects": opt(rdm.SUBJECTS),
                    "dates": opt(rdm.DATES),
                    "languages": opt(rdm.LANGUAGES),
                    "identifiers": req(rdm.IDENTIFIERS),
                    "related_identifiers": opt(rdm.RELATED_IDENTIFIERS),
                    "formats": opt(rdm.STRINGS),
                    "sizes": opt(rdm.STRINGS),
                    "version": opt(string(min_len=1)),
                },
                rules=(rdm.has_source_identifier,),
                closed=True,  # a stock instance refuses unknown metadata fields
            )
        ),
        "access": req(rdm.ACCESS),
        "files": req(rdm.FILES),
    }
)


class InvenioRDMProfile(SchemaProfile):
    name = "inveniordm"

    def __init__(self) -> None:
        self.schema = SCHEMA

    def transform(self, record: Mapping[str, Any]) -> dict[str, Any]:
        src = read(record)
        description, additional = descriptions(src)
        md: dict[str, Any] = {"resource_type": {"id": resource_type(src)}}
        rdm.put(md, "title", rdm.title(src))
        rdm.put(md, "publication_date", src.date_published)
        rdm.put(md, "creators", rdm.creators(src))
        md["publisher"] = src.publisher
        rdm.put(md, "description", description)
        rdm.put(md, "additional_descriptions", additional)
        rdm.put(md, "rights", rdm.rights(src))
        rdm.put(md, "subjects", rdm.subjects(src))
        rdm.put(md, "dates", rdm.dates(src))
        md["languages"] = [{"id": "eng"}]
        md["identifiers"] = rdm.identifiers(src)
        rdm.put(md, "related_identifiers", rdm.related_identifiers(src))
        rdm.put(md, "formats", src.formats)
        rdm.put(md, "sizes", sizes(src))
        return rdm.envelope(md)

    def find_query(self, recid: str) -> str:
        return f'metadata.identifiers.identifier:"{IDENTIFIER_PREFIX}{normalise_recid(recid)}"'


PROFILE = InvenioRDMProfile()
