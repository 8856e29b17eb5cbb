"""Golden bodies: a record of each experiment through every profile, compared whole.

The records in tests/data/records/<experiment>.json are our own, shaped like the portal's
(same field names and kinds of values); their bodies are in tests/data/records/golden/.
A change in a body is a change in what arrives on the target: review the diff field by
field, then regenerate with ``FERRY_REGEN_GOLDEN=1 pytest tests/test_profiles_golden.py``.
The real DELPHI fixtures are read in place and checked field by field below (no copy).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from metadata.base import get_profile, transform_and_validate

DATA = Path(__file__).parent / "data" / "records"
GOLDEN = DATA / "golden"
PROFILES = ("nrp-particles", "inveniordm", "zenodo")
EXPERIMENTS = ("alice", "atlas", "cms", "lhcb", "opera", "jade", "totem", "phenix")


def records(experiment: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((DATA / f"{experiment}.json").read_text(encoding="utf-8"))
    return data


CASES = [(e, r["recid"], p) for e in EXPERIMENTS for r in records(e) for p in PROFILES]


@pytest.mark.parametrize(("experiment", "recid", "profile"), CASES)
def test_golden_body(experiment: str, recid: str, profile: str) -> None:
    record = next(r for r in records(experiment) if r["recid"] == recid)
    body = transform_and_validate(get_profile(profile), record)
    path = GOLDEN / f"{experiment}-{recid}.{profile}.json"
    if os.environ.get("FERRY_REGEN_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    assert body == json.loads(path.read_text(encoding="utf-8"))


def _md(experiment: str, recid: str, profile: str) -> dict[str, Any]:
    record = next(r for r in records(experiment) if r["recid"] == recid)
    md: dict[str, Any] = transform_and_validate(get_profile(profile), record)["metadata"]
    return md


# --- the reviewed facts, field by field, so a regenerated golden file cannot hide a loss ---


def test_alice_index_expanded_files_and_additional_title() -> None:
    md = _md("alice", "91100", "nrp-particles")
    assert md["file_types"] == ["root"]  # from the two expanded AliESDs.root, not "json" added
    assert md["sizes"] == ["2 files", "3000 bytes", "1200 events"]
    assert md["additional_titles"][0]["title"].startswith("Lead-lead data sample")
    assert md["collision_information"]["energy_min"] == 2760.0
    assert md["creators"] == [{"person_or_org": {"type": "organizational", "name": "ALICE collaboration"}}]
    zen = _md("alice", "91101", "zenodo")
    assert (zen["upload_type"], zen["license"]) == ("software", "gpl-3.0-only")
    assert "github.com/alisw/test-analysis-modules" in zen["notes"]


def test_atlas_collection_child_is_part_of_and_environment_has_its_own_type() -> None:
    md = _md("atlas", "92001", "inveniordm")
    rel = {(r["identifier"], r["relation_type"]["id"]) for r in md["related_identifiers"]}
    assert ("https://opendata.cern.ch/record/92000", "ispartof") in rel  # "for citing all": a member
    assert ("10.7483/OPENDATA.ATLAS.TEST.PARENT", "ispartof") in rel  # and its DOI
    assert _md("atlas", "92002", "inveniordm")["resource_type"] == {"id": "other"}
    assert _md("atlas", "92002", "zenodo")["upload_type"] == "other"


def test_cms_authors_relations_and_metadata_only_records() -> None:
    md = _md("cms", "93200", "inveniordm")
    assert [c["person_or_org"].get("family_name", c["person_or_org"].get("name")) for c in md["creators"]] == [
        "Example",
        "Sample",
        "CMS Open data group",
    ]
    assert md["creators"][0]["person_or_org"]["identifiers"] == [
        {"scheme": "orcid", "identifier": "0000-0002-1825-0097"}
    ]
    assert md["contributors"][0]["person_or_org"]["name"] == "CMS collaboration"
    rel = {r["identifier"].rsplit("/", 1)[-1]: r["relation_type"]["id"] for r in md["related_identifiers"]}
    assert rel["93201"] == "isderivedfrom"  # derived, not "part of"
    assert rel["93202"] == "isvariantformof"
    assert rel["93204"] == "iscompiledby"
    assert rel["93210"] == rel["93205"] == "references"  # links that gave only a recid
    zen = _md("cms", "93200", "zenodo")
    zrel = {r["identifier"].rsplit("/", 1)[-1]: r["relation"] for r in zen["related_identifiers"]}
    assert zrel["93201"] == "isDerivedFrom" and zrel["93202"] == "isVariantFormOf"
    for profile in ("inveniordm", "nrp-particles"):
        body = transform_and_validate(get_profile(profile), records("cms")[1])
        assert body["files"] == {"enabled": False}
        assert [c["person_or_org"]["family_name"] for c in body["metadata"]["creators"]] == ["Alpha", "Beta"]
        assert "INSPIRE-00000001" in json.dumps(body)
    trigger = _md("cms", "93400", "inveniordm")
    assert trigger["resource_type"] == {"id": "publication-technicalnote"}  # Supplementaries
    assert trigger["creators"][0]["person_or_org"]["name"] == "CMS collaboration"  # from the experiment


def test_lhcb_parent_has_parts_and_stripping_kept() -> None:
    md = _md("lhcb", "94000", "nrp-particles")
    parts = {r["identifier"] for r in md["related_identifiers"] if r["relation_type"]["id"] == "haspart"}
    assert parts == {"https://opendata.cern.ch/record/94001", "https://opendata.cern.ch/record/94002"}
    text = json.dumps(md)
    assert "stripping28r2" in text and "MagDown" in text
    assert md["file_types"] == ["py", "yaml"]


def test_opera_jade_totem_phenix() -> None:
    assert "evID" in json.dumps(_md("opera", "95000", "zenodo"))  # dataset semantics
    jade = _md("jade", "96000", "inveniordm")
    assert "<script" not in jade["description"] and "alert(1)" not in jade["description"]
    assert "<img" not in jade["description"]
    assert jade["description"].endswith("</b></p></div>")  # unclosed tags closed in order
    assert "javascript" not in json.dumps(jade)
    assert "doi" not in {r["scheme"] for r in jade["related_identifiers"]}  # "" is no DOI
    assert jade["dates"][1] == {"date": "1986", "type": {"id": "other"}, "description": "reprocessed"}
    totem = _md("totem", "97000", "zenodo")
    assert "TOTEM" in totem["keywords"] and "7TeV" in totem["keywords"]
    phenix = _md("phenix", "98000", "zenodo")
    assert [c["orcid"] for c in phenix["creators"]] == ["0000-0003-4958-1347", "0000-0003-1811-7971"]
    assert _md("phenix", "98000", "nrp-particles")["file_types"] == ["root", "pdf", "c"]


def test_delphi_fixtures_field_by_field(delphi_records: list[dict[str, Any]]) -> None:
    by = {r["recid"]: r for r in delphi_records}
    zen = transform_and_validate(get_profile("zenodo"), by["81009"])["metadata"]
    assert zen["upload_type"] == "dataset"
    assert zen["creators"] == [{"name": "DELPHI collaboration"}]
    assert (
        zen["publication_date"] == "2024-01-01"
        and "Published on the source by CERN Open Data Portal: 2024" in zen["notes"]
    )
    assert zen["license"] == "cc0-1.0" and zen["access_right"] == "open"
    assert {"DELPHI", "Dataset/Collision", "89-94 GeV", "cernopendata:recid:81009"} <= set(zen["keywords"])
    assert {"identifier": "10.7483/OPENDATA.DELPHI.9G77.0AU9", "relation": "isIdenticalTo", "scheme": "doi"} in zen[
        "related_identifiers"
    ]
    assert zen["method"].startswith("<div>")
    parent = transform_and_validate(get_profile("zenodo"), by["81507"])["metadata"]
    assert sum(r["relation"] == "hasPart" for r in parent["related_identifiers"]) == 5
    assert "The source record lists no data files." in parent["notes"]
