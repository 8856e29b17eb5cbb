"""The folder reader: a local directory record -> Dataset -> every profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from download.sources.local import LocalSource
from ferry.core.errors import InputError, ValidationError
from ferry.core.model import Record
from metadata.base import get_profile, transform_and_validate
from metadata.readers import read, record_key


async def folder(
    tmp_path: Path, name: str = "run-2024", *, doc: object | None = None, catalog: str | None = None
) -> Record:
    root = tmp_path / name
    (root / "sub").mkdir(parents=True)
    (root / "a.root").write_bytes(b"x" * 10)
    (root / "sub" / "b.csv").write_bytes(b"y" * 5)
    if doc is not None:
        (root / "metadata.json").write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    if catalog is not None:
        (root / "catalog.yaml").write_text(catalog)
    return await LocalSource().resolve(str(root))


async def test_bare_folder_is_minimal_and_honest(tmp_path: Path) -> None:
    record = await folder(tmp_path)
    ds = read(record)
    assert ds.source == "dir" and ds.identifier == "dir:run-2024" and ds.title == "run-2024"
    assert ds.creators == () and ds.url is None  # nothing invented
    assert ds.description is not None and "2 file(s), 15 bytes" in ds.description.html
    assert (ds.files.count, ds.files.types) == (2, ("root", "csv"))
    with pytest.raises(ValidationError) as info:
        transform_and_validate(get_profile("inveniordm"), record)
    assert "metadata.creators" in str(info.value) and "metadata.json" in str(info.value)


@pytest.mark.parametrize("profile", ["inveniordm", "nrp-particles", "zenodo"])
async def test_folder_with_metadata_json_into_every_profile(tmp_path: Path, profile: str) -> None:
    doc = {
        "title": "Beam test 2024",
        "creators": ["Doe, Jane", {"name": "Roe, Richard", "orcid": "0000-0002-1825-0097"}],
        "description": "Raw beam-test data.",
        "publication_date": "2024-05-01",
        "keywords": ["beam"],
        "license": "cc-by-4.0",
        "version": "1.0",
    }
    record = await folder(tmp_path, doc=doc)
    body = transform_and_validate(get_profile(profile), record)
    md = body["metadata"]
    assert md["title"] == "Beam test 2024" and md["publication_date"] == "2024-05-01" and md["version"] == "1.0"
    assert str(tmp_path) not in json.dumps(body)  # the local path never reaches a target
    query = get_profile(profile).find_query(record_key(record.source, record.recid))
    if profile == "zenodo":
        assert [c["name"] for c in md["creators"]] == ["Doe, Jane", "Roe, Richard"]
        assert "dir:recid:run-2024" in md["keywords"] and "dir:recid:run-2024" in query
    else:
        assert [c["person_or_org"]["family_name"] for c in md["creators"]] == ["Doe", "Roe"]
        assert {"identifier": "dir:run-2024", "scheme": "other"} in md["identifiers"]
        assert query == 'metadata.identifiers.identifier:"dir:run-2024"'


async def test_catalog_yaml_and_broken_metadata(tmp_path: Path) -> None:
    record = await folder(tmp_path, catalog="title: Tiles\nauthors: ['Doe, Jane']\nassets: {}\n")
    ds = read(record)
    assert ds.title == "Tiles" and ds.creators[0].family_name == "Doe"  # type: ignore[union-attr]
    broken = await folder(tmp_path, "broken", doc="{not json")
    with pytest.raises(InputError, match=r"metadata\.json"):
        read(broken)
