"""Profile "nrp-particles": the NRP "particles" model (see docs/repositories-api.md).

Mapping (CERN record -> particles metadata), beyond the seed uploader's table:
- recid: an int; also ``identifiers: cernopendata:<recid>`` and ``related_identifiers``
  with the source DOI and record URL (isidenticalto), so the recid, the DOI or the URL
  find the record on the target; parent/child records as haspart / ispartof.
- publication_date: the portal's date_published as EDTF (a year stays a year).
- description: abstract + methodology + usage (+ note), as HTML, links kept and absolute,
  each link list rendered as ``<a>`` items.
- collision_information: ``{type, energy, energy_min, energy_max, energy_unit}``; numbers
  in GeV parsed from "181-210 GeV" / "7 TeV" / "0.9-13 TeV"; an ``ecms=`` value in the
  abstract wins (then ``energy`` shows that value). Text without a unit ("13") is kept
  in ``energy`` without numbers (no guessing GeV vs TeV); "unknown" is dropped.
- dataset_type: collision / simulated / other (type.secondary, then type.primary).
- file_types: distribution formats + "json", lowercased, once each.
- rights: cc0-1.0 (other SPDX ids lowercased; unknown ones as a free title); none when
  the record states no license.
- creators: the collaboration, organizational ("DELPHI" -> "DELPHI collaboration").

find_query(recid) -> ``metadata.recid:<recid>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metadata import rdm
from metadata.base import SchemaProfile
from metadata.cernopendata import SourceRecord, normalise_recid, read
from metadata.energy import UNIT
from metadata.schema import FieldIssue, array, edtf, integer, join, number, obj, opt, req, string, vocab
from metadata.text import sections_to_html

DATASET_TYPES = ("collision", "simulated", "other")


def collision_information(src: SourceRecord) -> dict[str, Any]:
    info: dict[str, Any] = {}
    rdm.put(info, "type", src.collision_type)
    rdm.put(info, "energy", src.energy_text)
    if src.energy is not None:
        info["energy_min"] = src.energy.minimum
        info["energy_max"] = src.energy.maximum
        info["energy_unit"] = src.energy.unit
    return info


def file_types(src: SourceRecord) -> list[str]:
    return list(dict.fromkeys([*src.formats, "json"]))


def _energy_range(value: Mapping[str, Any], path: str, issues: list[FieldIssue]) -> None:
    lo, hi = value.get("energy_min"), value.get("energy_max")
    if (lo is None) != (hi is None):
        missing = "energy_max" if hi is None else "energy_min"
        issues.append(FieldIssue(join(path, missing), "is required when the other energy bound is given"))
    if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
        issues.append(FieldIssue(join(path, "energy_min"), f"must be <= energy_max ({lo} > {hi})"))
    if lo is not None and value.get("energy_unit") is None:
        issues.append(FieldIssue(join(path, "energy_unit"), "is required with energy_min/energy_max"))


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
                    "resource_type": req(vocab(("dataset",))),
                    "title": req(string(min_len=3)),
                    "publication_date": req(edtf()),
                    "recid": req(integer(minimum=1)),
                    "creators": req(array(rdm.CREATOR, min_items=1)),
                    "publisher": opt(string(min_len=1)),
                    "description": opt(rdm.DESCRIPTION),
                    "rights": opt(rdm.rights_check(None)),
                    "subjects": opt(rdm.SUBJECTS),
                    "dates": opt(rdm.DATES),
                    "identifiers": opt(rdm.IDENTIFIERS),
                    "related_identifiers": opt(rdm.RELATED_IDENTIFIERS),
                    "file_types": opt(array(string(min_len=1, pattern=r"[^A-Z]+"), unique=True)),
                    "experiment": opt(string(min_len=1)),
                    "category": opt(obj({"id": req(string(min_len=1))})),
                    "collision_information": opt(COLLISION_INFORMATION),
                    "dataset_type": req(string(choices=DATASET_TYPES)),
                    "number_of_events": opt(integer(minimum=0)),
                }
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
        src = read(record)
        md: dict[str, Any] = {"resource_type": {"id": "dataset"}}
        rdm.put(md, "title", rdm.title(src))
        rdm.put(md, "publication_date", src.date_published)
        rdm.put(md, "recid", src.recid)
        rdm.put(md, "creators", rdm.creators(src))
        md["publisher"] = src.publisher
        rdm.put(md, "description", sections_to_html(src.sections))
        rdm.put(md, "rights", rdm.rights(src))
        rdm.put(md, "subjects", rdm.subjects(src))
        rdm.put(md, "dates", rdm.dates(src))
        rdm.put(md, "identifiers", rdm.identifiers(src))
        rdm.put(md, "related_identifiers", rdm.related_identifiers(src))
        md["file_types"] = file_types(src)
        rdm.put(md, "experiment", src.experiments[0] if src.experiments else src.collaboration)
        if src.categories:
            md["category"] = {"id": src.categories[0]}
        rdm.put(md, "collision_information", collision_information(src))
        md["dataset_type"] = src.dataset_type
        rdm.put(md, "number_of_events", src.number_of_events)
        return rdm.envelope(md)

    def find_query(self, recid: str) -> str:
        return f"metadata.recid:{normalise_recid(recid)}"


PROFILE = NRPParticlesProfile()
