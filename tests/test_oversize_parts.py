"""A split record's part bodies, per profile (metadata/parts.py; issue 14 section 4).

tests/test_oversize_split.py checks the parts as the sandbox serves them after ``ferry
upload`` (synthetic records without a DOI); here a real-shaped record with a DOI and a
record page: the relations each part carries, written out part by part, the source's
DOI and page as "is part of" (never "is identical to"), the identifiers and the type kept.
"""

from __future__ import annotations

from typing import Any

import pytest

from ferry.core.errors import ConfigError
from metadata.base import get_profile, transform_and_validate
from metadata.parts import Part, part_body
from tests.test_metadata_only import own_record

RECID = "93200"  # CMS derived dataset, DOI 10.7483/OPENDATA.CMS.TEST.0003
DOI = "10.7483/OPENDATA.CMS.TEST.0003"
PAGE = f"https://opendata.cern.ch/record/{RECID}"
PAGES = {
    1: "https://repo.example/records/p1",
    2: "https://repo.example/records/p2",
    3: "https://repo.example/records/p3",
}
# part -> (the other parts' pages, relation), in DataCite's lowercase ids
EXPECTED = {
    1: {(PAGES[2], "iscontinuedby"), (PAGES[3], "references")},
    2: {(PAGES[1], "continues"), (PAGES[3], "iscontinuedby")},
    3: {(PAGES[1], "references"), (PAGES[2], "continues")},
}
ZENODO_NAMES = {"iscontinuedby": "isContinuedBy", "continues": "continues", "references": "references"}


def part(index: int, siblings: dict[int, str] = PAGES) -> Part:
    return Part(index, 3, f"cernopendata:{RECID}", f"cernopendata:{RECID}.part-{index}-of-3", PAGE, 1, 2, siblings)


def whole(profile: str) -> dict[str, Any]:
    return transform_and_validate(get_profile(profile), own_record("cms", RECID))


@pytest.mark.parametrize("profile", ["inveniordm", "nrp-particles"])
@pytest.mark.parametrize("index", [1, 2, 3])
def test_rdm_part_is_part_of_the_source_and_continues_its_neighbours(profile: str, index: int) -> None:
    body = whole(profile)
    before = {(r["identifier"], r["relation_type"]["id"]) for r in body["metadata"]["related_identifiers"]}
    assert {(DOI, "isidenticalto"), (PAGE, "isidenticalto")} <= before  # the whole record is identical to it
    md = part_body(profile, body, part(index))["metadata"]
    related = {(r["identifier"], r["relation_type"]["id"]) for r in md["related_identifiers"]}
    assert {(DOI, "ispartof"), (PAGE, "ispartof")} <= related
    assert not any(rel == "isidenticalto" for _, rel in related)
    siblings = {(i, r) for i, r in related if i in PAGES.values()}
    assert siblings == EXPECTED[index]  # not linked to itself, each neighbour in its order
    assert md["title"].endswith(f"(part {index} of 3)")
    ids = [x["identifier"] for x in md["identifiers"]]
    assert f"cernopendata:{RECID}.part-{index}-of-3" in ids and f"cernopendata:{RECID}" not in ids
    assert "recid" not in md
    assert md["resource_type"] == body["metadata"]["resource_type"] == {"id": "dataset"}
    assert body["metadata"]["title"] in md["title"]  # the whole body is not changed in place


@pytest.mark.parametrize("index", [1, 2, 3])
def test_zenodo_part_is_part_of_the_source_and_continues_its_neighbours(index: int) -> None:
    body = whole("zenodo")
    md = part_body("zenodo", body, part(index))["metadata"]
    related = {(r["identifier"], r["relation"]) for r in md["related_identifiers"]}
    assert {(DOI, "isPartOf"), (PAGE, "isPartOf")} <= related
    assert not any(rel == "isIdenticalTo" for _, rel in related)
    siblings = {(i, r) for i, r in related if i in PAGES.values()}
    assert siblings == {(page, ZENODO_NAMES[rel]) for page, rel in EXPECTED[index]}
    assert f"cernopendata:recid:{RECID}.part-{index}-of-3" in md["keywords"]
    assert f"cernopendata:recid:{RECID}" not in md["keywords"]
    assert (md["upload_type"], md.get("publication_type")) == ("dataset", None)


def test_a_part_before_its_siblings_exist_links_only_the_source() -> None:
    """The first pass creates parts one by one: a part whose siblings have no page yet."""
    md = part_body("inveniordm", whole("inveniordm"), part(1, {}))["metadata"]
    related = {(r["identifier"], r["relation_type"]["id"]) for r in md["related_identifiers"]}
    assert {(DOI, "ispartof"), (PAGE, "ispartof")} <= related
    assert not {i for i, _ in related} & set(PAGES.values())
    assert "The other parts" not in md["description"]


def test_a_profile_of_another_shape_cannot_be_split() -> None:
    with pytest.raises(ConfigError, match='oversize = "split"'):
        part_body("datacite-xml", {"metadata": {}}, part(1))
