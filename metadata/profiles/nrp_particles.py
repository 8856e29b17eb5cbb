"""Profile "nrp-particles": the NRP "particles" model (see docs/repositories-api.md).

The stock InvenioRDM fields as in the ``inveniordm`` profile, except that the
description holds the abstract, methodology, usage and note under headings (as the
seed uploader wrote it), plus the model's physics fields: ``recid`` (int),
``experiment``, ``category``, ``collision_information`` (``{type, energy, energy_min,
energy_max, energy_unit}``, GeV; an ``ecms=`` in the abstract wins), ``dataset_type``
(collision / simulated / other), ``number_of_events`` and ``file_types`` (the real
files' extensions). Field-by-field table: metadata/MAPPING.md.

find_query(recid) -> ``metadata.recid:<recid>``; a record of another source (key
``zenodo:123``, ``dir:name``) carries no ``recid`` and is found by its identifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metadata.base import SchemaProfile
from metadata.dataset import Dataset
from metadata.energy import UNIT
from metadata.html import escape
from metadata.profiles import rdm
from metadata.profiles.inveniordm import metadata_body
from metadata.readers import IDENTIFIER, part_of, read, split_key
from metadata.schema import FieldIssue, array, edtf, integer, join, number, obj, opt, req, string, vocab

DATASET_TYPES = ("collision", "simulated", "other")
_IN_DESCRIPTION = ("methodology", "usage", "note")  # headed sections of the one description
CONSUMED_EXTRAS = frozenset({"title_additional", "date_reprocessed", "collision_information"})


def collision_information(ds: Dataset) -> dict[str, Any]:
    info: dict[str, Any] = {}
    rdm.put(info, "type", ds.collision_type)
    rdm.put(info, "energy", ds.energy_text)
    if ds.energy is not None:
        info["energy_min"] = ds.energy.minimum
        info["energy_max"] = ds.energy.maximum
        info["energy_unit"] = ds.energy.unit
    return info


def _description(ds: Dataset) -> str | None:
    parts = [ds.description.html] if ds.description else []
    parts += [rdm.headed(s) for s in ds.sections if s.key in _IN_DESCRIPTION]
    return "".join(parts) or None


def _energy_range(value: Mapping[str, Any], path: str, issues: list[FieldIssue]) -> None:
    lo, hi = value.get("energy_min"), value.get("energy_max")
    if (lo is None) != (hi is None):
        missing = "energy_max" if hi is None else "energy_min"
        issues.append(FieldIssue(join(path, missing), "is required when the other energy bound is given"))
    if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
        issues.append(FieldIssue(join(path, "energy_min"), f"must be <= energy_max ({lo} > {hi})"))
    if lo is not None and value.get("energy_unit") is None:
        issues.append(FieldIssue(join(path, "energy_unit"), "is required with energy_min/energy_max"))


def _recid_or_identifier(value: Mapping[str, Any], path: str, issues: list[FieldIssue]) -> None:
    """A CERN record needs ``recid`` (find_query searches it); a record of another source
    (``zenodo:<id>``, ``dir:<name>``) its identifier instead."""
    if value.get("recid") is not None:
        return
    idents = value.get("identifiers")
    found = [
        e["identifier"]
        for e in (idents if isinstance(idents, list) else [])
        if isinstance(e, Mapping) and isinstance(e.get("identifier"), str) and IDENTIFIER.fullmatch(e["identifier"])
    ]
    # a part of a split CERN record (cernopendata:81009.part-1-of-3) is found by its identifier
    if not found or any(i.startswith(rdm.IDENTIFIER_PREFIX) and part_of(i) is None for i in found):
        issues.append(FieldIssue(join(path, "recid"), "is required (a record of another source: its identifier)"))


COLLISION_INFORMATION = obj(
    {
        "type": opt(string(min_len=1)),
        "energy": opt(string(min_len=1)),
        "energy_min": opt(number(minimum=0)),
        "energy_max": opt(number(minimum=0)),
        "energy_unit": opt(string(choices=(UNIT,))),
    },
    rules=(_energy_range,),
    closed=True,
)


SCHEMA = obj(
    {
        "metadata": req(
            obj(
                {
                    "resource_type": req(vocab(rdm.EMITTED_RESOURCE_TYPES)),
                    "title": req(string(min_len=3)),
                    "additional_titles": opt(rdm.ADDITIONAL_TITLES),
                    "publication_date": req(edtf()),
                    "recid": opt(integer(minimum=1)),  # CERN records only: others have other ids
                    "creators": req(array(rdm.CREATOR, min_items=1)),
                    "contributors": opt(array(rdm.CREATOR)),
                    "publisher": opt(string(min_len=1)),
                    "description": opt(rdm.DESCRIPTION),
                    "additional_descriptions": opt(rdm.ADDITIONAL_DESCRIPTIONS),
                    "rights": opt(rdm.rights_check(None)),
                    "subjects": opt(rdm.SUBJECTS),
                    "dates": opt(rdm.DATES),
                    "languages": opt(rdm.LANGUAGES),
                    "identifiers": opt(rdm.IDENTIFIERS),
                    "related_identifiers": opt(rdm.RELATED_IDENTIFIERS),
                    "sizes": opt(rdm.STRINGS),
                    "file_types": opt(array(string(min_len=1, pattern=r"[^A-Z]+"), unique=True)),
                    "experiment": opt(string(min_len=1)),
                    "category": opt(obj({"id": req(string(min_len=1))})),
                    "collision_information": opt(COLLISION_INFORMATION),
                    "dataset_type": req(string(choices=DATASET_TYPES)),
                    "number_of_events": opt(integer(minimum=0)),
                    "version": opt(string(min_len=1)),
                },
                rules=(_recid_or_identifier,),
            )
        ),
        "access": req(rdm.ACCESS),
        "files": req(rdm.FILES),
    }
)


class NRPParticlesProfile(SchemaProfile):
    name = "nrp-particles"

    def __init__(self) -> None:
        self.schema = SCHEMA

    def transform(self, record: Mapping[str, Any]) -> dict[str, Any]:
        ds = read(record)
        # Start from the stock body, then reshape what the particles model holds differently.
        consumed = CONSUMED_EXTRAS
        source_collision = next((x for x in ds.extras if x.key == "collision_information"), None)
        if source_collision and ds.energy_text and escape(ds.energy_text) not in source_collision.html:
            # an ecms= value replaced the portal's energy text: keep the portal's as written too
            consumed = consumed - {"collision_information"}
        md = metadata_body(ds, consumed=consumed)
        rest = [s for s in ds.sections if s.key not in _IN_DESCRIPTION]
        rest += [x for x in ds.extras if x.key not in consumed]
        relations = rdm.relations_section(ds)
        if relations is not None:
            rest.append(relations)
        md.pop("description", None)
        md.pop("additional_descriptions", None)
        md.pop("formats", None)
        rdm.put(md, "description", _description(ds))
        rdm.put(md, "additional_descriptions", rdm.additional_descriptions(rest))
        # Only a CERN recid: a Zenodo record 123 is not CERN record 123 (its identifier says which).
        rdm.put(md, "recid", ds.recid if ds.source == "cernopendata" else None)
        rdm.put(md, "file_types", list(ds.files.types))
        orgs = [o.name for o in ds.organisations]
        rdm.put(md, "experiment", ds.experiments[0] if ds.experiments else (orgs[0] if orgs else None))
        if ds.categories:
            md["category"] = {"id": ds.categories[0]}
        rdm.put(md, "collision_information", collision_information(ds))
        md["dataset_type"] = ds.dataset_type
        rdm.put(md, "number_of_events", ds.number_of_events)
        return rdm.envelope(md, ds)

    def find_query(self, recid: str) -> str:
        scheme, ident = split_key(recid)
        if scheme == "cernopendata" and ident.isdigit():  # a part (81009.part-1-of-3): its identifier
            return f"metadata.recid:{ident}"
        return rdm.find_by_identifier(recid)


PROFILE = NRPParticlesProfile()
