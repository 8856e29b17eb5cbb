"""Metadata profiles on the real DELPHI records: every record, and known ones in detail."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from ferry.core.errors import ConfigError, InputError
from metadata.base import Profile, get_profile, profile_names, register_profile, transform_and_validate

PROFILES = ("nrp-particles", "inveniordm", "zenodo")
RDM_PROFILES = ("nrp-particles", "inveniordm")


@pytest.fixture(scope="module")
def by_recid(delphi_records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["recid"]: r for r in delphi_records}


def values_at(doc: Any, path: str) -> list[Any]:
    """Values at a dotted path, descending into every list element (as the search does)."""
    current = [doc]
    for part in path.split("."):
        nxt: list[Any] = []
        for value in current:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict) and part in item:
                    nxt.append(item[part])
        current = nxt
    flat: list[Any] = []
    for value in current:
        flat.extend(value if isinstance(value, list) else [value])
    return flat


def query_matches(body: dict[str, Any], query: str) -> bool:
    """``path:value`` / ``path:"quoted"`` exact match, the contract the sandbox implements."""
    m = re.fullmatch(r'([\w.]+):(?:"(.*)"|(\S+))', query)
    assert m, query
    wanted = m.group(2) if m.group(2) is not None else m.group(3)
    # Zenodo (on InvenioRDM) indexes a deposit's legacy ``keywords`` as free subjects.
    path = (
        {"metadata.subjects.subject": "metadata.keywords"}.get(m.group(1), m.group(1))
        if "upload_type" in body.get("metadata", {})
        else m.group(1)
    )
    return any(str(v) == wanted for v in values_at(body, path))


# --- every fixture record ----------------------------------------------------------------


@pytest.mark.parametrize("name", PROFILES)
def test_every_delphi_record_transforms_and_validates(name: str, delphi_records: list[dict[str, Any]]) -> None:
    assert len(delphi_records) == 767
    profile = get_profile(name)
    failures = {}
    for record in delphi_records:
        before = copy.deepcopy(record)
        body = profile.transform(record)
        assert record == before, f"transform mutated record {record['recid']}"
        issues = profile.validate(body)
        if issues:
            failures[record["recid"]] = [str(i) for i in issues]
        # The body is plain JSON (no NaN, no tuples, no Decimals) ...
        json.dumps(body, allow_nan=False)
        # ... and the search the target will run finds it.
        assert query_matches(body, profile.find_query(record["recid"])), record["recid"]
    assert failures == {}


# --- registry ----------------------------------------------------------------------------


def test_registry_knows_both_profiles_and_caches_them() -> None:
    assert {"nrp-particles", "inveniordm"} <= set(profile_names())
    profile = get_profile("inveniordm")
    assert isinstance(profile, Profile)
    assert profile.name == "inveniordm"
    assert get_profile("inveniordm") is profile


def test_unknown_profile_is_a_config_error_listing_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        get_profile("zenodo-legacy")
    assert "nrp-particles" in str(info.value) and "inveniordm" in str(info.value)


def test_a_new_profile_is_one_registration() -> None:
    class Tiny:
        name = "tiny-test"

        def transform(self, record: Any) -> dict[str, Any]:
            return {"metadata": {"title": record["title"]}}

        def validate(self, body: Any) -> list[Any]:
            return []

        def find_query(self, recid: str) -> str:
            return f"metadata.id:{recid}"

    register_profile("tiny-test", Tiny())
    assert get_profile("tiny-test").transform({"title": "x"}) == {"metadata": {"title": "x"}}
    # by module path, imported only when asked for
    register_profile("nrp-alias-test", "metadata.profiles.nrp_particles")
    assert get_profile("nrp-alias-test") is get_profile("nrp-particles")
    register_profile("broken-test", "metadata.does_not_exist")
    with pytest.raises(ConfigError, match="cannot import"):
        get_profile("broken-test")


def test_find_query_strings() -> None:
    assert get_profile("nrp-particles").find_query("81009") == "metadata.recid:81009"
    assert get_profile("inveniordm").find_query(" 81009 ") == 'metadata.identifiers.identifier:"cernopendata:81009"'
    for bad in ("", "abc", "12 34", "-5", "0", "8100９"):
        with pytest.raises(InputError):
            get_profile("nrp-particles").find_query(bad)


# --- known records -----------------------------------------------------------------------


def test_collision_dataset_1991(by_recid: dict[str, dict[str, Any]]) -> None:
    md = get_profile("nrp-particles").transform(by_recid["81009"])["metadata"]
    assert md["recid"] == 81009
    assert md["title"] == "DELPHI collision data lolept91_f1"
    assert md["publication_date"] == "2024"
    assert md["dates"] == [{"date": "1991", "type": {"id": "created"}}]
    assert md["dataset_type"] == "collision"
    assert md["number_of_events"] == 203117
    assert md["experiment"] == "DELPHI"
    assert md["creators"] == [{"person_or_org": {"type": "organizational", "name": "DELPHI collaboration"}}]
    assert md["rights"] == [{"id": "cc0-1.0"}]
    # the real files' extension (Y10041.1.al), not the DST name the portal claims ("LONG")
    assert md["file_types"] == ["al"]
    assert md["resource_type"] == {"id": "dataset"}
    assert md["collision_information"] == {
        "type": "e+e-",
        "energy": "89-94 GeV",
        "energy_min": 89.0,
        "energy_max": 94.0,
        "energy_unit": "GeV",
    }
    related = {(r["scheme"], r["identifier"], r["relation_type"]["id"]) for r in md["related_identifiers"]}
    assert ("doi", "10.7483/OPENDATA.DELPHI.9G77.0AU9", "isidenticalto") in related
    assert ("url", "https://opendata.cern.ch/record/81009", "isidenticalto") in related
    # abstract, methodology and the usage links, made absolute
    assert md["description"].startswith("<div>Long DSTs of the LEPTONIC events;")
    assert "<h4>Methodology</h4>" in md["description"]
    assert '<a href="https://opendata.cern.ch/docs/delphi-getting-started">Getting started' in md["description"]
    assert '<a href="https://opendata.cern.ch/record/80504">DELPHI "full DST" manuals</a>' in md["description"]


def test_collision_dataset_inveniordm_shape(by_recid: dict[str, dict[str, Any]]) -> None:
    body = transform_and_validate(get_profile("inveniordm"), by_recid["81009"])
    assert body["access"] == {"record": "public", "files": "public"}
    assert body["files"] == {"enabled": True}
    md = body["metadata"]
    assert set(md) >= {"resource_type", "title", "publication_date", "creators", "publisher", "rights"}
    assert "recid" not in md and "collision_information" not in md  # not stock fields
    assert md["identifiers"] == [{"identifier": "cernopendata:81009", "scheme": "other"}]
    assert md["description"].startswith("<div>Long DSTs")
    kinds = [d["type"]["id"] for d in md["additional_descriptions"]]
    # methodology, usage, then the source-only facts (accelerator, collision)
    assert kinds == ["methods", "technical-info", "other", "other", "other"]  # + distribution claims
    assert "https://opendata.cern.ch/record/80502" in md["additional_descriptions"][1]["description"]
    assert md["additional_descriptions"][2]["description"] == "<h4>Accelerator</h4><div>CERN-LEP</div>"
    assert md["languages"] == [{"id": "eng"}]
    assert md["subjects"] == [{"subject": "DELPHI"}, {"subject": "Dataset/Collision"}]
    assert md["sizes"] == ["17 files", "1255372800 bytes", "203117 events"]


def test_simulated_dataset(by_recid: dict[str, dict[str, Any]]) -> None:
    md = get_profile("nrp-particles").transform(by_recid["81010"])["metadata"]
    assert md["dataset_type"] == "simulated"
    assert md["category"] == {"id": "2 Fermion"}
    assert {"subject": "2 Fermion"} in md["subjects"]
    # no energy text in the record and no ecms= in the abstract: type only
    assert md["collision_information"] == {"type": "e+e-"}


def test_ecms_in_abstract_wins(by_recid: dict[str, dict[str, Any]]) -> None:
    record = by_recid["81023"]
    assert "ecms=91.25" in record["abstract"]["description"]
    assert record["collision_information"]["energy"] == "89-94 GeV"
    info = get_profile("nrp-particles").transform(record)["metadata"]["collision_information"]
    assert info["energy_min"] == info["energy_max"] == 91.25
    assert info["energy"] == "91.25 GeV"


def test_conditions_database(by_recid: dict[str, dict[str, Any]]) -> None:
    record = by_recid["80509"]
    md = get_profile("nrp-particles").transform(record)["metadata"]
    assert md["title"] == "DELPHI conditions databases"
    assert md["dataset_type"] == "other"  # Environment / Condition
    assert md["publication_date"] == "2025"
    assert md["dates"][0]["date"] == "2000"
    assert md["file_types"] == ["dat"]
    assert "collision_information" not in md and "number_of_events" not in md
    assert md["creators"][0]["person_or_org"]["name"] == "DELPHI collaboration"
    # the abstract's own HTML links survive
    for url in (
        "https://cds.cern.ch/record/2625473/files/delphi-93-5_ocr.pdf",
        "https://cds.cern.ch/record/2630031/files/96_139_das_180_prog_219.pdf",
        "https://cds.cern.ch/record/2629009/files/delphi-90-37_ocr.pdf",
    ):
        assert f'<a href="{url}">' in md["description"]
    # an Environment record is not a dataset: a type of its own
    assert get_profile("inveniordm").transform(record)["metadata"]["resource_type"] == {"id": "other"}


def test_author_list_without_license(by_recid: dict[str, dict[str, Any]]) -> None:
    record = by_recid["80050"]
    assert "license" not in record
    for name in RDM_PROFILES:
        body = transform_and_validate(get_profile(name), record)
        md = body["metadata"]
        assert "rights" not in md  # no license stated -> none asserted
        assert md["title"] == "DELPHI author list"
        assert md["description"].startswith("<div>This is a list of DELPHI Collaboration authors")
        # the authors themselves, all 1048 in order, not the collaboration
        assert len(md["creators"]) == len(record["authors"]) == 1048
        assert md["creators"][0] == {
            "person_or_org": {"type": "personal", "family_name": "Abdallah", "given_name": "J"},
            "affiliations": [{"name": record["authors"][0]["affiliation"]}],
        }
        assert body["files"] == {"enabled": False}  # the record lists no files: metadata-only
    assert get_profile("inveniordm").transform(record)["metadata"]["resource_type"] == {"id": "publication"}
    zen = transform_and_validate(get_profile("zenodo"), record)["metadata"]
    assert zen["creators"][0] == {"name": "Abdallah, J", "affiliation": record["authors"][0]["affiliation"]}
    assert "license" not in zen and "states no license" in zen["notes"]
    assert get_profile("nrp-particles").transform(record)["metadata"]["dataset_type"] == "other"


def test_manual_is_a_technical_note_in_inveniordm(delphi_records: list[dict[str, Any]]) -> None:
    manual = next(r for r in delphi_records if r["type"]["secondary"] == ["Manual"])
    md = get_profile("inveniordm").transform(manual)["metadata"]
    assert md["resource_type"] == {"id": "publication-technicalnote"}  # Supplementaries
    zen = get_profile("zenodo").transform(manual)["metadata"]
    assert (zen["upload_type"], zen["publication_type"]) == ("publication", "technicalnote")


def test_parent_record_relations(by_recid: dict[str, dict[str, Any]]) -> None:
    record = by_recid["81507"]
    assert not record.get("files")  # a parent: relations only
    for name in RDM_PROFILES:
        md = transform_and_validate(get_profile(name), record)["metadata"]
        children = {r["identifier"] for r in md["related_identifiers"] if r["relation_type"]["id"] == "haspart"}
        assert children == {f"https://opendata.cern.ch/record/{n}" for n in (81133, 81003, 81073, 81000, 81435)}


def test_several_creation_years_become_an_interval(delphi_records: list[dict[str, Any]]) -> None:
    record = next(r for r in delphi_records if r["date_created"] == ["1998", "1999", "2000"])
    md = get_profile("inveniordm").transform(record)["metadata"]
    assert md["dates"] == [{"date": "1998/2000", "type": {"id": "created"}}]


def test_collaboration_spellings_become_one_creator(delphi_records: list[dict[str, Any]]) -> None:
    names = {
        c["person_or_org"]["name"]
        for r in delphi_records
        for c in get_profile("nrp-particles").transform(r)["metadata"]["creators"]
        if c["person_or_org"]["type"] == "organizational"
    }
    assert names == {"DELPHI collaboration"}


def test_api_wrapped_record_is_accepted(by_recid: dict[str, dict[str, Any]]) -> None:
    wrapped = {"id": "81009", "created": "2024-01-01", "metadata": by_recid["81009"]}
    profile = get_profile("nrp-particles")
    assert profile.transform(wrapped) == profile.transform(by_recid["81009"])
    # the pipeline's own model object works too
    from ferry.core.model import FileEntry, Record

    # a resolved Record: its real files give the file facts
    files = tuple(FileEntry(key=f"f{i}.root", uri=f"root://h//f{i}.root", size=10) for i in range(3))
    record = Record(recid="81009", metadata=by_recid["81009"], files=files)
    md = profile.transform(record)["metadata"]  # type: ignore[arg-type]
    assert md["file_types"] == ["root"]
    assert md["title"] == profile.transform(by_recid["81009"])["metadata"]["title"]
    # a Record without files is a metadata-only record
    bare = Record(recid="81009", metadata=by_recid["81009"])
    assert profile.transform(bare)["files"] == {"enabled": False}  # type: ignore[arg-type]
