"""Every field path of every fixture record is in its reader's mapping table (issue 14).

tests/test_profiles_fidelity.py checks a sample of the DELPHI records in depth (each mapped
value found where the table says); this one walks *all* of them, the hand-written records
of eight experiments and the sandbox's records, nested paths included: a path the table
neither maps nor leaves out is a failure naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from metadata.base import get_profile, transform_and_validate
from metadata.mapping import PROFILES, Field, LeftOut, leaf_paths, tables
from tests.test_metadata_only import own_record
from tests.test_profiles_fidelity import unmapped_paths, values_not_landed

CERN = tables()["cernopendata"]
HERE = Path(__file__).parent
OWN = HERE / "data" / "records"
SANDBOX_RECORDS = HERE.parent / "sandbox" / "delphi_sample_records.json"


def all_cern_records(delphi: list[dict[str, Any]]) -> list[dict[str, Any]]:
    records = list(delphi)
    for path in [*sorted(OWN.glob("*.json")), SANDBOX_RECORDS]:
        data = json.loads(path.read_text(encoding="utf-8"))
        records += data if isinstance(data, list) else [data]
    return records


def test_every_path_of_every_fixture_record_is_mapped_or_left_out(delphi_records: list[dict[str, Any]]) -> None:
    records = all_cern_records(delphi_records)
    assert len(records) > 770  # 767 DELPHI records, the eight experiments' and the sandbox's
    assert unmapped_paths(CERN, records) == set()
    seen = {path for record in records for path, _ in leaf_paths(record)}
    nested = {p for p in seen if p.count(".") + p.count("[]") >= 2}
    # nested paths are looked up one by one, not only their top-level field
    assert {"files[].checksum", "authors[].affiliation", "abstract.links[].recid"} <= seen
    assert len(nested) >= 10, sorted(nested)
    # and the most specific entry answers: an author's ORCID is not the author's name
    assert CERN.lookup("authors[].orcid") is not CERN.lookup("authors[].name")


def test_a_path_the_table_does_not_know_is_reported() -> None:
    """The check itself can fail: an invented nested field is named, a known one is not."""
    record = own_record("cms", "93200")
    record["collision_information"] = {**record.get("collision_information", {}), "luminosity": "1 fb-1"}
    record["unheard_of"] = {"deep": [{"value": 1}]}
    # a new sub-field of a mapped object is reported too: only type and energy are read there
    assert unmapped_paths(CERN, [record]) == {"collision_information.luminosity", "unheard_of.deep[].value"}


@pytest.mark.parametrize("profile", PROFILES)
def test_a_claim_the_reader_keeps_whole_lands_in_every_profile(profile: str) -> None:
    """``distribution.number_entries`` (recid 12100, CMS Run 2 data science) was the one path of
    the portal's 8,444 readable records at cbdb4cc2a that the table did not name."""
    record = own_record("cms", "93200")
    record["distribution"] = {**record["distribution"], "number_entries": 22554294}
    entry = CERN.lookup("distribution.number_entries")
    assert isinstance(entry, Field) and not isinstance(entry, LeftOut)
    body = transform_and_validate(get_profile(profile), record)
    assert values_not_landed(CERN, profile, [(record, body, "93200")]) == []
    assert "22554294" in json.dumps(body)
