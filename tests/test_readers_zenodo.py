"""The Zenodo reader: a Zenodo record (as download.sources.zenodo keeps it) -> Dataset -> every profile."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.core.errors import InputError
from ferry.core.model import FileEntry, Record
from metadata.base import get_profile, transform_and_validate
from metadata.dataset import Organisation, Person
from metadata.readers import read, record_document, record_key, split_key


def zenodo_body(**md: Any) -> dict[str, Any]:
    metadata = {
        "title": "Calibration tables",
        "creators": [
            {"name": "Doe, Jane", "affiliation": "CERN; MIT", "orcid": "0000-0002-1825-0097"},
            {"name": "ATLAS Collaboration"},
        ],
        "description": "<p>Tables <b>of</b> constants<script>x()</script>",
        "publication_date": "2021-03-04",
        "license": {"id": "cc-by-4.0"},
        "keywords": ["calibration", "Calibration"],
        "version": "v2",
        "resource_type": {"type": "publication", "subtype": "report", "title": "Report"},
        "related_identifiers": [
            {"identifier": "10.1234/abc", "relation": "isSupplementTo", "scheme": "doi"},
            {"identifier": "https://example.org/x", "relation": "isDocumentedBy", "scheme": "url"},
            {"identifier": "arXiv:2101.00001", "relation": "cites", "scheme": "arxiv"},
        ],
        "method": "Measured twice.",
        "notes": "Internal note.",
        "access_right": "open",
        "communities": [{"identifier": "physics"}],
        "doi": "10.5281/zenodo.4242",
    }
    metadata.update(md)
    return {
        "id": 4242,
        "recid": "4242",
        "conceptrecid": "4241",
        "conceptdoi": "10.5281/zenodo.4241",
        "doi": "10.5281/zenodo.4242",
        "links": {"self_html": "https://zenodo.example/records/4242"},
        "metadata": metadata,
        "files": [{"key": "tables.csv", "size": 10, "checksum": "md5:00"}],
    }


def zenodo_record(body: dict[str, Any] | None = None, *, files: int = 2) -> Record:
    entries = tuple(FileEntry(key=f"t{i}.csv.gz", uri=f"https://z/{i}", size=100) for i in range(files))
    return Record(recid="4242", metadata=body or zenodo_body(), files=entries, source="zenodo")


def test_zenodo_record_read_field_by_field() -> None:
    ds = read(zenodo_record())
    assert ds.source == "zenodo" and ds.recid == 4242 and ds.identifier == "zenodo:4242"
    assert ds.title == "Calibration tables" and ds.version == "v2" and ds.doi == "10.5281/zenodo.4242"
    assert ds.url == "https://zenodo.example/records/4242"
    jane, atlas = ds.creators
    assert isinstance(jane, Person) and isinstance(atlas, Organisation)
    assert (jane.family_name, jane.given_name, jane.orcid) == ("Doe", "Jane", "0000-0002-1825-0097")
    assert jane.affiliations == ("CERN", "MIT")
    assert atlas.name == "ATLAS Collaboration"  # a group, not a person called "ATLAS Collaboration"
    assert ds.description is not None and "<script>" not in ds.description.html and "<b>of</b>" in ds.description.html
    assert ds.kind == "documentation" and ds.type_secondary == ("report",)
    assert ds.license is not None and ds.license.spdx == "cc-by-4.0"
    assert ds.keywords == ("calibration",)
    assert {(r.relation, r.source_type) for r in ds.relations} == {
        ("issupplementto", "isSupplementTo"),
        ("isdocumentedby", "isDocumentedBy"),
    }
    extras = {x.key: x.html for x in ds.extras}
    assert "arXiv:2101.00001" in extras["related.other"]  # not dropped: listed
    assert "10.5281/zenodo.4241" in extras["zenodo.record"] and "physics" in extras["zenodo.record"]
    # the real files, not the record's own listing
    assert (ds.files.count, ds.files.size, ds.files.types) == (2, 200, ("csv.gz",))


@pytest.mark.parametrize("profile", ["inveniordm", "nrp-particles", "zenodo"])
def test_zenodo_record_into_every_profile(profile: str) -> None:
    record = zenodo_record()
    body = transform_and_validate(get_profile(profile), record)
    md = body["metadata"]
    assert md["title"] == "Calibration tables" and md["version"] == "v2"
    query = get_profile(profile).find_query(record_key(record.source, record.recid))
    if profile == "zenodo":
        assert "zenodo:recid:4242" in md["keywords"] and query == 'metadata.subjects.subject:"zenodo:recid:4242"'
        assert md["creators"][0] == {"name": "Doe, Jane", "affiliation": "CERN; MIT", "orcid": "0000-0002-1825-0097"}
        assert {"identifier": "10.1234/abc", "relation": "isSupplementTo", "scheme": "doi"} in md["related_identifiers"]
    else:
        assert {"identifier": "zenodo:4242", "scheme": "other"} in md["identifiers"]
        assert query == 'metadata.identifiers.identifier:"zenodo:4242"'
        assert "recid" not in md  # a Zenodo id is no CERN recid
        assert md["creators"][0]["person_or_org"]["identifiers"] == [
            {"scheme": "orcid", "identifier": "0000-0002-1825-0097"}
        ]
        assert body["files"] == {"enabled": True}


def test_zenodo_record_without_files_and_its_document() -> None:
    record = zenodo_record(files=0)
    body = transform_and_validate(get_profile("inveniordm"), record)
    assert body["files"] == {"enabled": False}
    name, data = record_document(record)
    assert name == "zenodo-record-4242.json" and b'"Calibration tables"' in data
    notes = transform_and_validate(get_profile("zenodo"), record)["metadata"]["notes"]
    assert "zenodo-record-4242.json" in notes


def test_keys_and_bad_input() -> None:
    assert record_key("cernopendata", "81009") == "81009"
    assert split_key("zenodo:0123") == ("zenodo", "123")
    assert split_key("dir:run 2024") == ("dir", "run 2024")
    for bad in ("zenodo:abc", 'dir:a"b', "0"):
        with pytest.raises(InputError):
            split_key(bad)
    with pytest.raises(InputError):
        read(Record(recid="1", metadata=[], source="zenodo"))  # type: ignore[arg-type]


def test_an_image_record_keeps_its_type_in_every_profile() -> None:
    body = zenodo_body(resource_type={"type": "image", "subtype": "figure", "title": "Figure"})
    assert read(zenodo_record(body)).kind == "image"
    rdm = transform_and_validate(get_profile("inveniordm"), zenodo_record(body))
    assert rdm["metadata"]["resource_type"] == {"id": "image-figure"}
    zen = transform_and_validate(get_profile("zenodo"), zenodo_record(body))["metadata"]
    assert (zen["upload_type"], zen["image_type"]) == ("image", "figure")
    photo = zenodo_body(resource_type={"type": "image", "subtype": "photo"})
    rdm = transform_and_validate(get_profile("nrp-particles"), zenodo_record(photo))
    assert rdm["metadata"]["resource_type"] == {"id": "image-photo"}  # a stock id (the sandbox knows them all)
    video = transform_and_validate(get_profile("zenodo"), zenodo_record(zenodo_body(resource_type={"type": "video"})))
    assert video["metadata"]["upload_type"] == "video" and "image_type" not in video["metadata"]


def test_bibliographic_details_in_both_shapes_read_alike() -> None:
    flat = zenodo_body(journal_title="J. Phys.", journal_volume="7", conference_acronym="WED22")
    nested = zenodo_body(journal={"title": "J. Phys.", "volume": "7"}, meeting={"acronym": "WED22"})
    extras = [{s.key: s.html for s in read(zenodo_record(b)).extras}["zenodo.publication"] for b in (flat, nested)]
    assert extras[0] == extras[1]
    assert "<li>Journal title: J. Phys.</li><li>Journal volume: 7</li><li>Conference acronym: WED22</li>" in extras[0]
