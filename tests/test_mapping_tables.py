"""The readers' mapping tables (metadata/mapping): MAPPING.md is generated from them, and
records of the Zenodo stand-in and of a folder are checked against them in every profile
(the CERN records: tests/test_profiles_fidelity.py, with the same helpers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from download.sources.local import LocalSource
from download.sources.zenodo import ZenodoSource
from ferry.core.model import Record
from metadata.base import get_profile, transform_and_validate
from metadata.mapping import PROFILES, Field, LeftOut, leaf_paths, tables
from metadata.mapping.__main__ import main as mapping_main
from metadata.mapping.render import DOCUMENT, render
from sandbox.zenodo_metadata import KNOWN
from tests.fixtures_zenodo import ZenodoHandle
from tests.test_profiles_fidelity import unmapped_paths, values_not_landed
from tests.test_zenodo_source import publish

RICH = {
    "upload_type": "publication",
    "publication_type": "report",
    "title": "Calibration tables (mapping fixture)",
    "creators": [
        {"name": "Doe, Jane", "affiliation": "CERN; MIT", "orcid": "0000-0002-1825-0097"},
        {"name": "Roe, Richard", "affiliation": "DESY"},
        {"name": "ATLAS Collaboration"},
    ],
    "description": "<p>Tables <b>of</b> constants<script>x()</script>",
    "method": "Measured twice, <i>carefully</i>.",
    "notes": "Internal note on the tables.",
    "publication_date": "2021-03-04",
    "license": "cc-by-4.0",
    "keywords": ["calibration", "tables"],
    "subjects": [{"term": "Particle physics", "identifier": "https://example.org/pp", "scheme": "url"}],
    "version": "v2",
    "related_identifiers": [
        {"identifier": "10.1234/abc", "relation": "isSupplementTo", "scheme": "doi", "resource_type": "dataset"},
        {"identifier": "https://example.org/x", "relation": "isDocumentedBy", "scheme": "url"},
        {"identifier": "arXiv:2101.00001", "relation": "cites", "scheme": "arxiv"},
    ],
    "access_right": "open",
    "communities": [{"identifier": "physics"}],
    "language": "eng",
    "dates": [{"type": "Collected", "start": "2019-01-01", "end": "2019-06-30", "description": "beam time"}],
    "contributors": [{"name": "Poe, Edgar", "type": "DataCurator"}, {"name": "CMS", "type": "ResearchGroup"}],
    "references": ["Doe J. et al., Tables, 2020."],
    "grants": [{"id": "10.13039/501100000780::123456"}],
}

# Every other field the deposit API takes (sandbox/zenodo_metadata.py: KNOWN), on one record.
BIBLIOGRAPHIC = {
    "upload_type": "image",
    "image_type": "figure",
    "title": "Event display (mapping fixture)",
    "creators": [{"name": "Doe, Jane"}],
    "description": "<p>One event.</p>",
    "publication_date": "2022-05-06",
    "embargo_date": "2020-01-01",
    "access_conditions": "<p>Ask the <b>data office</b>.</p>",
    "journal_title": "Journal of Displays",
    "journal_volume": "12",
    "journal_issue": "3",
    "journal_pages": "45-67",
    "conference_title": "Workshop on Event Displays",
    "conference_acronym": "WED22",
    "conference_dates": "1-3 June 2022",
    "conference_place": "Geneva, Switzerland",
    "conference_url": "https://wed.example.org",
    "conference_session": "VII",
    "conference_session_part": "1",
    "imprint_publisher": "Display Press",
    "imprint_isbn": "978-3-16-148410-0",
    "imprint_place": "Bern",
    "partof_title": "Proceedings of WED22",
    "partof_pages": "100-120",
    "thesis_university": "University of Lund",
    "thesis_supervisors": [{"name": "Smith, Anna", "affiliation": "Lund", "orcid": "0000-0001-5109-3700"}],
    "locations": [{"lat": 46.2339, "lon": 6.0556, "place": "CERN Meyrin", "description": "Building 40"}],
    "subjects": [{"term": "Detectors", "identifier": "https://example.org/det", "scheme": "url"}],
    "custom": {"code:programmingLanguage": [{"id": "python", "title": {"en": "Python"}}], "ac:method": "Plotted"},
}


def test_mapping_md_is_generated_from_the_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == render(), "run: python -m metadata.mapping"
    assert mapping_main(["--check"]) == 0
    text = DOCUMENT.read_text(encoding="utf-8")
    for table in tables().values():
        assert table.module in text
        for entry in table.entries:  # every entry is in the document, mapped or left out with its reason
            assert f"| `{entry.path}` |" in text
            if isinstance(entry, LeftOut):
                assert entry.why.replace("|", "\\|") in text


def test_lookup_takes_the_most_specific_entry() -> None:
    cern = tables()["cernopendata"]
    assert isinstance(cern.lookup("authors[].orcid"), Field)
    assert cern.lookup("authors[].orcid") is not cern.lookup("authors[].name")
    assert isinstance(cern.lookup("collaboration.recid"), LeftOut)
    assert isinstance(cern.lookup("system_details.container_images[].name"), Field)  # the whole object
    assert cern.lookup("no_such_field") is None and cern.lookup("files[].uri") == cern.lookup("files")


async def _zenodo_records(zen: ZenodoHandle) -> list[Record]:
    published = [
        publish(zen, {"tables.csv": b"a,b\n1,2\n", "README.txt": b"readme\n"}, **RICH),
        publish(zen, {"data.root": b"x" * 100}, description="<p>Raw data of one run.</p>", license="cc0-1.0"),
        publish(zen, {"display.png": b"png" * 10}, **BIBLIOGRAPHIC),
    ]
    source = ZenodoSource(zen.url)
    try:
        return [await source.resolve(str(rec["id"])) for rec in published]
    finally:
        await source.close()


async def test_zenodo_records_of_the_stand_in_against_the_table(zenodo: ZenodoHandle) -> None:
    table = tables()["zenodo"]
    records = await _zenodo_records(zenodo)
    docs = [r.metadata for r in records]
    assert unmapped_paths(table, docs) == set()
    seen = {path.removeprefix("metadata.").split(".")[0].split("[")[0] for doc in docs for path, _ in leaf_paths(doc)}
    # every deposit field is really exercised (the records API serves upload_type as resource_type)
    assert KNOWN - {"prereserve_doi", "doi", "upload_type"} <= seen
    for profile in PROFILES:
        pairs = [(r.metadata, transform_and_validate(get_profile(profile), r), r.recid) for r in records]
        assert values_not_landed(table, profile, pairs) == [], profile


def test_zenodo_records_api_shape_against_the_table() -> None:
    """The records API nests the bibliographic details (``journal.title``, ``meeting.acronym``)."""
    table = tables()["zenodo"]
    md = {
        **{k: v for k, v in BIBLIOGRAPHIC.items() if "_" not in k or k in ("upload_type", "image_type")},
        "publication_date": "2022-05-06",
        "resource_type": {"type": "image", "subtype": "figure", "title": "Figure"},
        "journal": {"title": "Journal of Displays", "volume": "12", "issue": "3", "pages": "45-67"},
        "meeting": {"title": "Workshop on Event Displays", "acronym": "WED22", "session_part": "1"},
        "imprint": {"publisher": "Display Press", "isbn": "978-3-16-148410-0", "place": "Bern"},
        "part_of": {"title": "Proceedings of WED22", "pages": "100-120"},
        "thesis": {"university": "University of Lund", "supervisors": [{"name": "Smith, Anna", "affiliation": "Lund"}]},
    }
    doc = {"id": 77, "recid": "77", "doi": "10.5281/zenodo.77", "metadata": md}
    record = Record(recid="77", metadata=doc, files=(), source="zenodo")
    assert unmapped_paths(table, [doc]) == set()
    for profile in PROFILES:
        pairs = [(doc, transform_and_validate(get_profile(profile), record), "77")]
        assert values_not_landed(table, profile, pairs) == [], profile


async def test_a_folder_with_metadata_json_against_the_table(tmp_path: Path) -> None:
    table = tables()["dir"]
    root = tmp_path / "run-2024"
    root.mkdir()
    (root / "a.root").write_bytes(b"x" * 10)
    doc: dict[str, Any] = {
        k: v for k, v in RICH.items() if k in {e.path.split(".")[0].split("[")[0] for e in table.entries}
    }
    doc["creators"] = [*RICH["creators"], "Bloggs, Joe"]  # a bare "Family, Given" string too
    doc["publisher"] = "The lab's own"
    (root / "metadata.json").write_text(json.dumps(doc), encoding="utf-8")
    record = await LocalSource().resolve(str(root))
    assert unmapped_paths(table, [doc, record.metadata]) == set()
    for profile in PROFILES:
        pairs = [(doc, transform_and_validate(get_profile(profile), record), record.recid)]
        assert values_not_landed(table, profile, pairs) == [], profile
