"""Profile "inveniordm": stock InvenioRDM 12/13 metadata, nothing a stock instance refuses.

The field-by-field mapping is in metadata/MAPPING.md. In short: the abstract is the
description; every other text block, every source-only fact and the relations as the
source names them are additional descriptions; creators are the authors (ORCID as a
person identifier, affiliations by name), the collaboration only without authors; a
record without files is metadata-only (``files.enabled = false``).

find_query(recid) -> ``metadata.identifiers.identifier:"cernopendata:<recid>"`` (for records of
other sources, their key ``zenodo:123`` / ``dir:name`` is the identifier).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metadata.base import SchemaProfile
from metadata.dataset import Dataset
from metadata.profiles import rdm
from metadata.readers import read
from metadata.schema import Check, array, edtf, obj, opt, req, string, vocab

# Extras this profile carries in fields of their own (the rest become descriptions).
CONSUMED_EXTRAS = frozenset({"title_additional", "date_reprocessed"})


def metadata_body(ds: Dataset, *, consumed: frozenset[str] = CONSUMED_EXTRAS) -> dict[str, Any]:
    md: dict[str, Any] = {"resource_type": {"id": rdm.resource_type(ds)}}
    rdm.put(md, "title", rdm.title(ds))
    rdm.put(md, "additional_titles", rdm.additional_titles(ds))
    rdm.put(md, "publication_date", ds.date_published)
    rdm.put(md, "creators", rdm.creators(ds))
    rdm.put(md, "contributors", rdm.contributors(ds))
    md["publisher"] = ds.publisher
    rdm.put(md, "description", ds.description.html if ds.description else None)
    extra = [*ds.sections, *(x for x in ds.extras if x.key not in consumed)]
    relations = rdm.relations_section(ds)
    if relations is not None:
        extra.append(relations)
    rdm.put(md, "additional_descriptions", rdm.additional_descriptions(extra))
    rdm.put(md, "rights", rdm.rights(ds))
    rdm.put(md, "subjects", rdm.subjects(ds))
    rdm.put(md, "dates", rdm.dates(ds))
    md["languages"] = [{"id": "eng"}]
    md["identifiers"] = rdm.identifiers(ds)
    rdm.put(md, "related_identifiers", rdm.related_identifiers(ds))
    rdm.put(md, "formats", list(ds.files.types))
    rdm.put(md, "sizes", rdm.sizes(ds))
    rdm.put(md, "version", ds.version)
    return md


def schema(resource_types: frozenset[str]) -> Check:
    return obj(
        {
            "metadata": req(
                obj(
                    {
                        "resource_type": req(vocab(resource_types)),
                        "title": req(string(min_len=3)),
                        "additional_titles": opt(rdm.ADDITIONAL_TITLES),
                        "publication_date": req(edtf()),
                        "creators": req(array(rdm.CREATOR, min_items=1)),
                        "contributors": opt(array(rdm.CREATOR)),
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
        self.schema = schema(rdm.EMITTED_RESOURCE_TYPES)

    def transform(self, record: Mapping[str, Any]) -> dict[str, Any]:
        ds = read(record)
        return rdm.envelope(metadata_body(ds), ds)

    def find_query(self, recid: str) -> str:
        # "81009" (CERN) or "zenodo:123" / "dir:name" (metadata.readers.record_key)
        return rdm.find_by_identifier(recid)


PROFILE = InvenioRDMProfile()
