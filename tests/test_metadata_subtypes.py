"""Subtypes: a preprint, a thesis, a plot... each gets InvenioRDM's own stock id (issue 14).

The expected ids are written out here (InvenioRDM's resource_types fixture,
invenio-rdm-records at 0e5f947), not read back from metadata/kinds.py or
metadata/vocabularies.json: a change of mapping or vocabulary has to change this file too.
Each body goes through the profile's own validation and the sandbox repository's
validate_draft (InvenioRDM / NRP) or the Zenodo stand-in's field_errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from metadata.base import get_profile, transform_and_validate
from metadata.readers.values import vocabulary
from sandbox import repository_validate
from tests.fixtures_repository import RepositoryHandle
from tests.fixtures_xrootd import SandboxSource
from tests.test_metadata_kinds import PROFILES, cern_record, rtype_of, sandbox_errors, zenodo_record
from tests.test_metadata_only import published_body
from tests.test_pipeline import run_ferry, write_config

# InvenioRDM's stock resource types, in the fixture's order.
STOCK = (
    "publication",
    "publication-annotationcollection",
    "publication-book",
    "publication-section",
    "publication-conferencepaper",
    "publication-conferenceproceeding",
    "publication-datamanagementplan",
    "publication-journal",
    "publication-article",
    "publication-patent",
    "publication-peerreview",
    "publication-preprint",
    "publication-deliverable",
    "publication-milestone",
    "publication-proposal",
    "publication-report",
    "publication-softwaredocumentation",
    "publication-taxonomictreatment",
    "publication-technicalnote",
    "publication-workingpaper",
    "publication-datapaper",
    "publication-dissertation",
    "publication-standard",
    "publication-other",
    "poster",
    "presentation",
    "event",
    "dataset",
    "image",
    "image-figure",
    "image-plot",
    "image-drawing",
    "image-diagram",
    "image-photo",
    "image-other",
    "model",
    "video",
    "audio",
    "software",
    "lesson",
    "software-computationalnotebook",
    "other",
    "physicalobject",
    "workflow",
)

# Zenodo's publication_type -> (InvenioRDM / NRP id, Zenodo publication_type)
PUBLICATIONS: list[tuple[str, str, str]] = [
    ("annotationcollection", "publication-annotationcollection", "annotationcollection"),
    ("book", "publication-book", "book"),
    ("section", "publication-section", "section"),
    ("conferencepaper", "publication-conferencepaper", "conferencepaper"),
    ("datamanagementplan", "publication-datamanagementplan", "datamanagementplan"),
    ("article", "publication-article", "article"),
    ("patent", "publication-patent", "patent"),
    ("preprint", "publication-preprint", "preprint"),
    ("deliverable", "publication-deliverable", "deliverable"),
    ("milestone", "publication-milestone", "milestone"),
    ("proposal", "publication-proposal", "proposal"),
    ("report", "publication-report", "report"),
    ("softwaredocumentation", "publication-softwaredocumentation", "softwaredocumentation"),
    ("taxonomictreatment", "publication-taxonomictreatment", "taxonomictreatment"),
    ("technicalnote", "publication-technicalnote", "technicalnote"),
    ("thesis", "publication-dissertation", "thesis"),
    ("workingpaper", "publication-workingpaper", "workingpaper"),
    ("other", "publication-other", "other"),
]

# Zenodo's image_type -> InvenioRDM / NRP id (Zenodo keeps the image_type)
IMAGES: list[tuple[str, str]] = [
    ("figure", "image-figure"),
    ("plot", "image-plot"),
    ("drawing", "image-drawing"),
    ("diagram", "image-diagram"),
    ("photo", "image-photo"),
    ("other", "image-other"),
]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("subtype", "rdm", "zenodo"), PUBLICATIONS)
def test_each_zenodo_publication_type_gets_its_own_id(profile: str, subtype: str, rdm: str, zenodo: str) -> None:
    record = zenodo_record({"type": "publication", "subtype": subtype, "title": subtype.capitalize()})
    body = transform_and_validate(get_profile(profile), record)
    assert rtype_of(profile, body) == (("publication", zenodo) if profile == "zenodo" else rdm)
    assert sandbox_errors(profile, body) == []


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("subtype", "rdm"), IMAGES)
def test_each_zenodo_image_type_gets_its_own_id(profile: str, subtype: str, rdm: str) -> None:
    record = zenodo_record({"type": "image", "subtype": subtype, "title": subtype.capitalize()})
    body = transform_and_validate(get_profile(profile), record)
    md = body["metadata"]
    if profile == "zenodo":
        assert (md["upload_type"], md["image_type"]) == ("image", subtype)
    else:
        assert md["resource_type"]["id"] == rdm
        assert f"{subtype.capitalize()}/{subtype}" in [s["subject"] for s in md["subjects"]]  # the source's words
    assert sandbox_errors(profile, body) == []


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(
    ("rid", "rdm", "zenodo"),
    [
        ("publication-conferenceproceeding", "publication-conferenceproceeding", ("publication", "other")),
        ("publication-datapaper", "publication-datapaper", ("publication", "other")),
        ("publication-dissertation", "publication-dissertation", ("publication", "thesis")),
        (
            "publication-softwaredocumentation",
            "publication-softwaredocumentation",
            ("publication", "softwaredocumentation"),
        ),
        ("image-photo", "image-photo", ("image", None)),
        ("software-computationalnotebook", "software-computationalnotebook", ("software", None)),
        ("audio", "audio", ("video", None)),
    ],
)
def test_an_inveniordm_id_keeps_its_subtype(profile: str, rid: str, rdm: str, zenodo: tuple[str, str | None]) -> None:
    """A record already in InvenioRDM's shape (another InvenioRDM, Zenodo's new API) keeps its id."""
    record = zenodo_record({"title": "Typed"})
    record.metadata["metadata"]["resource_type"] = {"id": rid, "title": {"en": "Typed"}}
    body = transform_and_validate(get_profile(profile), record)
    assert rtype_of(profile, body) == (zenodo if profile == "zenodo" else rdm)
    assert sandbox_errors(profile, body) == []


@pytest.mark.parametrize("profile", ["inveniordm", "nrp-particles"])
@pytest.mark.parametrize(
    ("secondary", "rdm"),
    [
        (["Conference paper"], "publication-conferencepaper"),  # spelt with a space
        (["Software documentation"], "publication-softwaredocumentation"),
        (["Thesis"], "publication-dissertation"),
        (["Guide"], "publication"),  # no stock id of its own: the kind's
    ],
)
def test_a_portal_documentation_subtype_gets_its_own_id(profile: str, secondary: list[str], rdm: str) -> None:
    body = transform_and_validate(get_profile(profile), cern_record("Documentation", secondary))
    assert body["metadata"]["resource_type"]["id"] == rdm
    assert {"subject": f"Documentation/{secondary[0]}"} in body["metadata"]["subjects"]
    assert sandbox_errors(profile, body) == []


def test_the_sandbox_knows_invenio_rdm_stock_resource_types_from_the_one_list() -> None:
    assert set(STOCK) == vocabulary("resource_types")
    assert set(STOCK) == repository_validate.RESOURCE_TYPES


@pytest.mark.parametrize("model", ["rdm", "particles"])
@pytest.mark.parametrize("rid", STOCK)
def test_the_sandbox_accepts_every_stock_resource_type(model: str, rid: str) -> None:
    body: dict[str, Any] = {
        "metadata": {
            "resource_type": {"id": rid},
            "title": "A typed record",
            "publication_date": "2024-01-02",
            "creators": [{"person_or_org": {"type": "personal", "family_name": "Doe"}}],
        }
    }
    clean, errors = repository_validate.validate_draft(body, model)
    assert errors == []
    assert clean["metadata"]["resource_type"] == {"id": rid}


@pytest.mark.parametrize("rid", ["publication-thesis", "thesis", "image-chart", ""])
def test_the_sandbox_refuses_a_resource_type_that_is_not_stock(rid: str) -> None:
    """publication-thesis was the thesis id before InvenioRDM 12; it is not in today's vocabulary."""
    body: dict[str, Any] = {
        "metadata": {
            "resource_type": {"id": rid},
            "title": "A typed record",
            "publication_date": "2024-01-02",
            "creators": [{"person_or_org": {"type": "personal", "family_name": "Doe"}}],
        }
    }
    clean, errors = repository_validate.validate_draft(body, "rdm")
    assert errors == [{"field": "metadata.resource_type", "messages": [f"The resource type '{rid}' does not exist."]}]
    assert "resource_type" not in clean["metadata"]


def test_a_folder_thesis_through_ferry_upload_into_the_sandbox(
    tmp_path: Path, sandbox_source: SandboxSource, repository: RepositoryHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole way: a folder's metadata.json says thesis; the sandbox publishes it as one."""
    root = tmp_path / "thesis-2024"
    root.mkdir()
    (root / "thesis.pdf").write_bytes(b"%PDF-1.4 not really\n")
    doc = {
        "title": "Search for long-lived particles (kinds fixture)",
        "creators": ["Doe, Jane"],
        "upload_type": "publication",
        "publication_type": "thesis",
        "publication_date": "2024-05-01",
    }
    (root / "metadata.json").write_text(json.dumps(doc), encoding="utf-8")
    config = write_config(tmp_path, sandbox_source, repository)
    args = ["upload", f"dir:{root}", "--target", "sandbox", "--dest", str(tmp_path / "data"), "--publish"]
    code = run_ferry(config, *args)
    out = capsys.readouterr()
    assert code == 0, out.err
    [found] = [e for e in repository.state()["entities"] if e.get("published")]
    body = published_body(repository, found["id"])
    assert body["metadata"]["resource_type"]["id"] == "publication-dissertation"
    assert body["metadata"]["title"] == doc["title"]
