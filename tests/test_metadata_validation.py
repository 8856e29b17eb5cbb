"""Validation paths, energy and date parsing, degraded and junk records."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from ferry.core.errors import InputError, ValidationError
from metadata.base import get_profile, transform_and_validate
from metadata.energy import ecms_from_text, parse_energy
from metadata.html import sanitize as text_to_html
from metadata.readers.values import edtf_date, license_of
from metadata.schema import edtf_problem

PROFILES = ("nrp-particles", "inveniordm")

MINIMAL: dict[str, Any] = {
    "recid": "12345",
    "title": "Some open data",
    "experiment": ["FOO"],
    "publisher": "CERN Open Data Portal",
    "date_published": "2019",
    "type": {"primary": "Dataset", "secondary": ["Collision"]},
}


def paths(name: str, body: dict[str, Any]) -> set[str]:
    return {i.path for i in get_profile(name).validate(body)}


@pytest.fixture
def good() -> dict[str, dict[str, Any]]:
    record = dict(MINIMAL, collision_information={"type": "pp", "energy": "7 TeV"}, license={"attribution": "CC0-1.0"})
    return {name: get_profile(name).transform(record) for name in PROFILES}


# --- energies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("181-210 GeV", (181.0, 210.0)),
        ("89-94 GeV", (89.0, 94.0)),
        ("181 \u2013 210 GeV", (181.0, 210.0)),
        ("91.2 GeV", (91.2, 91.2)),
        ("7 TeV", (7000.0, 7000.0)),
        ("13TeV", (13000.0, 13000.0)),
        ("0.9-13 TeV", (900.0, 13000.0)),
        ("5.02 TeV", (5020.0, 5020.0)),  # exact, not 5019.999999999999
        ("900 GeV - 13 TeV", (900.0, 13000.0)),
        ("2.76, 7 and 8 TeV", (2760.0, 8000.0)),
        ("sqrt(s) = 13.6 TeV", (13600.0, 13600.0)),
        ("Run 2, 13 TeV, 2016", (13000.0, 13000.0)),  # years and run numbers are not energies
        ("500 MeV", (0.5, 0.5)),
        ("unknown", None),
        ("13", None),  # no unit: not guessed
        ("", None),
        ("1e999 GeV", None),  # not representable as a JSON number
    ],
)
def test_parse_energy(text: str, expected: tuple[float, float] | None) -> None:
    energy = parse_energy(text)
    if expected is None:
        assert energy is None
    else:
        assert energy is not None
        assert (energy.minimum, energy.maximum, energy.unit) == (*expected, "GeV")


@pytest.mark.parametrize("junk", [None, 7, 7.5, True, ["7 TeV"], {"energy": "7 TeV"}])
def test_parse_energy_ignores_non_strings(junk: Any) -> None:
    assert parse_energy(junk) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Short DST simulation 92_e2 liq done at ecms=91.25 , RAL", 91.25),
        ("done at ecm=91.2 GeV , CERN", 91.2),
        ("ECMS = 206.5", 206.5),
        ("ecms=0.2065 TeV", 206.5),
        ("no energy here", None),
    ],
)
def test_ecms_from_text(text: str, expected: float | None) -> None:
    energy = ecms_from_text(text)
    assert (energy.minimum if energy else None) == expected


def test_weird_energies_degrade_to_text_only() -> None:
    profile = get_profile("nrp-particles")
    for text in ("unknown", "7 TeV", "0.9-13 TeV", "", "n/a GeV", "13"):
        record = dict(MINIMAL, collision_information={"type": "pp", "energy": text})
        info = transform_and_validate(profile, record)["metadata"].get("collision_information", {})
        assert info.get("type") == "pp"
        if text == "unknown":
            assert "energy_min" not in info and "energy" not in info
        if text == "13":
            assert info["energy"] == "13" and "energy_min" not in info
        if text == "0.9-13 TeV":
            assert (info["energy_min"], info["energy_max"], info["energy"]) == (900.0, 13000.0, "0.9-13 TeV")


# --- dates -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["2024", "2024-05", "2024-05-01", "1939/1945", "1939-09-01/1945-09", "2024-02-29"])
def test_edtf_accepts(value: str) -> None:
    assert edtf_problem(value) is None


@pytest.mark.parametrize(
    "value", ["", "24", "2024-13", "2023-02-29", "2024-5-1", "1945/1939", "2024/", "a/b/c", "0000"]
)
def test_edtf_refuses(value: str) -> None:
    assert edtf_problem(value) is not None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024", "2024"),
        (2024, "2024"),
        ("2010-2012", "2010/2012"),
        ("2024-05-01T10:20:30Z", "2024-05-01"),
        ("1 May 2024", "2024-05-01"),
        ("May 2024", "2024-05"),
        ("sometime", None),
        (None, None),
        (True, None),
        ("2024-13-01", None),
    ],
)
def test_edtf_date_from_portal_values(raw: Any, expected: str | None) -> None:
    assert edtf_date(raw) == expected


# --- licenses and descriptions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "vocab_id"),
    [
        ({"attribution": "CC0-1.0"}, "cc0-1.0"),
        ({"attribution": "CC-BY-4.0"}, "cc-by-4.0"),
        ("CC0", "cc0-1.0"),
        ({"attribution": "GPL-3.0"}, "gpl-3.0-only"),
        ({"attribution": "Some lab's own terms"}, None),
    ],
)
def test_license_mapping(raw: Any, vocab_id: str | None) -> None:
    lic = license_of({"license": raw})
    assert lic is not None and lic.spdx == vocab_id


def test_unknown_license_becomes_a_free_title() -> None:
    record = dict(MINIMAL, license={"attribution": "Some lab's own terms"})
    for name in PROFILES:
        md = transform_and_validate(get_profile(name), record)["metadata"]
        assert md["rights"] == [{"title": {"en": "Some lab's own terms"}}]


def test_descriptions_escape_text_and_keep_safe_links() -> None:
    assert text_to_html("pp>3 GeV & E<100") == "pp&gt;3 GeV &amp; E&lt;100"
    assert (
        text_to_html("see <a href='/record/1'>this</a>") == 'see <a href="https://opendata.cern.ch/record/1">this</a>'
    )
    record = dict(
        MINIMAL,
        usage={
            "description": "Use it.",
            "links": [{"description": "bad", "url": "javascript:alert(1)"}, {"url": "/x"}],
        },
    )
    md = get_profile("nrp-particles").transform(record)["metadata"]
    assert "javascript" not in md["description"]
    assert "<li>bad</li>" in md["description"]
    assert '<a href="https://opendata.cern.ch/x">/x</a>' in md["description"]


# --- invalid bodies name their fields ----------------------------------------------------


def _edit(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    target: Any = body
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is _DELETE:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return body


_DELETE = object()


@pytest.mark.parametrize("name", PROFILES)
@pytest.mark.parametrize(
    ("path", "value", "error_path"),
    [
        ("metadata.title", _DELETE, "metadata.title"),
        ("metadata.title", "ab", "metadata.title"),
        ("metadata.title", 42, "metadata.title"),
        ("metadata.publication_date", "2024-13", "metadata.publication_date"),
        ("metadata.publication_date", _DELETE, "metadata.publication_date"),
        ("metadata.resource_type", {"id": "spaceship"}, "metadata.resource_type.id"),
        ("metadata.resource_type", {"id": "dataset", "title": {"en": "x"}}, "metadata.resource_type.title"),
        ("metadata.creators", [], "metadata.creators"),
        ("metadata.creators.0.person_or_org", {"type": "personal", "given_name": "J"}, None),
        ("metadata.creators.0.person_or_org", {"type": "organizational", "name": " "}, None),
        ("metadata.creators.0.person_or_org.type", "robot", "metadata.creators.0.person_or_org.type"),
        ("metadata.rights", [{"id": "cc0-1.0", "title": {"en": "CC0"}}], "metadata.rights.0"),
        ("metadata.rights", [{}], "metadata.rights.0"),
        ("metadata.dates", [{"date": "yesterday", "type": {"id": "created"}}], "metadata.dates.0.date"),
        ("metadata.dates", [{"date": "2020", "type": {"id": "birthday"}}], "metadata.dates.0.type.id"),
        ("metadata.subjects", [{"subject": ""}], "metadata.subjects.0"),
        (
            "metadata.related_identifiers",
            [{"identifier": "10.1/x", "scheme": "doi", "relation_type": {"id": "likes"}}],
            "metadata.related_identifiers.0.relation_type.id",
        ),
        (
            "metadata.related_identifiers",
            [{"identifier": "not-a-doi", "scheme": "doi", "relation_type": {"id": "isidenticalto"}}],
            "metadata.related_identifiers.0.identifier",
        ),
        ("metadata.description", "x", "metadata.description"),
        ("access.record", "secret", "access.record"),
        ("files", {"enabled": "yes"}, "files.enabled"),
        ("metadata", [], "metadata"),
    ],
)
def test_invalid_bodies_name_the_field(
    name: str, good: dict[str, dict[str, Any]], path: str, value: Any, error_path: str | None
) -> None:
    body = _edit(good[name], path, value)
    if error_path is None:  # name rules: the missing name part is reported
        error_path = path + (".family_name" if value.get("type") == "personal" else ".name")
    assert error_path in paths(name, body), get_profile(name).validate(body)


def test_valid_baseline(good: dict[str, dict[str, Any]]) -> None:
    for name in PROFILES:
        assert get_profile(name).validate(good[name]) == []


@pytest.mark.parametrize(
    ("path", "value", "error_path"),
    [
        ("metadata.recid", "12345", "metadata.recid"),
        ("metadata.recid", 0, "metadata.recid"),
        ("metadata.recid", True, "metadata.recid"),
        ("metadata.recid", _DELETE, "metadata.recid"),
        ("metadata.collision_information.energy_min", 9000.0, "metadata.collision_information.energy_min"),
        ("metadata.collision_information.energy_min", -1, "metadata.collision_information.energy_min"),
        ("metadata.collision_information.energy_max", _DELETE, "metadata.collision_information.energy_max"),
        ("metadata.collision_information.energy_unit", "TeV", "metadata.collision_information.energy_unit"),
        ("metadata.collision_information.energy_max", float("nan"), "metadata.collision_information.energy_max"),
        ("metadata.collision_information.colour", "red", "metadata.collision_information.colour"),
        ("metadata.dataset_type", "mc", "metadata.dataset_type"),
        ("metadata.number_of_events", -3, "metadata.number_of_events"),
        ("metadata.file_types", ["ROOT"], "metadata.file_types.0"),
    ],
)
def test_invalid_nrp_fields(good: dict[str, dict[str, Any]], path: str, value: Any, error_path: str) -> None:
    body = _edit(good["nrp-particles"], path, value)
    assert error_path in paths("nrp-particles", body)


@pytest.mark.parametrize(
    ("path", "value", "error_path"),
    [
        ("metadata.rights", [{"id": "my-own-license"}], "metadata.rights.0.id"),
        ("metadata.identifiers", [], "metadata.identifiers"),
        ("metadata.identifiers", [{"identifier": "x", "scheme": "nonsense"}], "metadata.identifiers.0.scheme"),
        ("metadata.recid", 12345, "metadata.recid"),  # not a stock field
    ],
)
def test_invalid_inveniordm_fields(good: dict[str, dict[str, Any]], path: str, value: Any, error_path: str) -> None:
    body = _edit(good["inveniordm"], path, value)
    assert error_path in paths("inveniordm", body)


def test_transform_and_validate_raises_with_every_path() -> None:
    record = {"recid": "777", "experiment": ["FOO"], "files": [{"uri": "root://h//a.root", "size": 1}]}  # no date
    with pytest.raises(ValidationError) as info:
        transform_and_validate(get_profile("nrp-particles"), record)
    err = info.value
    assert err.recid == "777"
    assert "metadata.publication_date" in err.errors
    assert "metadata.publication_date" in str(err)


# --- degraded records --------------------------------------------------------------------


def test_unknown_experiment_gets_sane_defaults() -> None:
    for name in PROFILES:
        md = transform_and_validate(get_profile(name), MINIMAL)["metadata"]
        assert md["creators"] == [{"person_or_org": {"type": "organizational", "name": "FOO collaboration"}}]
        assert md["publication_date"] == "2019"
        assert "rights" not in md


def test_missing_title_and_collaboration() -> None:
    record = {k: v for k, v in MINIMAL.items() if k not in ("title", "experiment")}
    record["files"] = [{"uri": "root://h//a.root", "size": 1, "checksum": "adler32:00000001"}]  # a title is made
    record["collaboration"] = {"name": "BAR Team"}
    md = transform_and_validate(get_profile("inveniordm"), record)["metadata"]
    assert md["title"] == "CERN Open Data record 12345"
    assert md["creators"][0]["person_or_org"]["name"] == "BAR Team"
    no_creator = {k: v for k, v in record.items() if k not in ("experiment", "collaboration")}
    with pytest.raises(ValidationError) as info:
        transform_and_validate(get_profile("inveniordm"), no_creator)
    assert set(info.value.errors) == {"metadata.creators"}


def test_authors_are_creators_only_without_a_collaboration() -> None:
    record: dict[str, Any] = {k: v for k, v in MINIMAL.items() if k != "experiment"}
    record["authors"] = [{"name": "Abdallah, J", "affiliation": "LPNHE"}, {"name": "Plato"}, {"name": 5}]
    md = transform_and_validate(get_profile("inveniordm"), record)["metadata"]
    assert md["creators"] == [
        {
            "person_or_org": {"type": "personal", "family_name": "Abdallah", "given_name": "J"},
            "affiliations": [{"name": "LPNHE"}],
        },
        {"person_or_org": {"type": "personal", "family_name": "Plato"}},
    ]


def test_bad_recid_is_reported_not_raised() -> None:
    for recid in ("abc", -4, None, ["1"]):
        record = dict(MINIMAL, recid=recid)
        with pytest.raises(ValidationError) as info:
            transform_and_validate(get_profile("nrp-particles"), record)
        assert "metadata.recid" in info.value.errors
        with pytest.raises(ValidationError) as info:
            transform_and_validate(get_profile("inveniordm"), record)
        assert "metadata.identifiers" in info.value.errors


@pytest.mark.parametrize("junk", [None, [], "record", 42, [MINIMAL]])
def test_not_a_record_is_an_input_error(junk: Any) -> None:
    for name in PROFILES:
        with pytest.raises(InputError):
            transform_and_validate(get_profile(name), junk)


def test_wrong_types_everywhere_never_traceback() -> None:
    record: dict[str, Any] = {
        "recid": 12345,
        "title": ["not", "a", "string"],
        "experiment": "FOO",
        "date_published": 2019,
        "date_created": "1999",
        "type": "Dataset",
        "collision_information": "7 TeV",
        "distribution": {"formats": "ROOT", "number_events": "1,234", "number_files": -1, "size": "big"},
        "license": 7,
        "abstract": "plain string abstract",
        "methodology": ["x"],
        "usage": {"description": 5, "links": {"url": "/x"}},
        "relations": [{"recid": "1", "type": "isChildOf"}, "junk", {"recid": "x", "type": "isParentOf"}],
        "doi": "doi:10.7483/OPENDATA.X",
        "collections": {"a": 1},
        "categories": ["Higgs"],
        "keywords": [1, None, "kw"],
        "files": [{"uri": "root://h//x.root", "size": 3}],  # with files, a missing title is made up
    }
    for name in PROFILES:
        body = transform_and_validate(get_profile(name), record)
        md = body["metadata"]
        assert md["title"] == "CERN Open Data record 12345"
        assert md["publication_date"] == "2019"
        assert md["dates"][0]["date"] == "1999"
    md = get_profile("nrp-particles").transform(record)["metadata"]
    assert md["number_of_events"] == 1234
    assert md["file_types"] == ["root"]  # from the real file, not the claimed "ROOT" plus "json"
    assert md["related_identifiers"][0]["identifier"] == "10.7483/OPENDATA.X"
    assert {
        "identifier": "https://opendata.cern.ch/record/1",
        "scheme": "url",
        "relation_type": {"id": "ispartof"},
    } in md["related_identifiers"]


# --- junk never raises anything but our errors -------------------------------------------
#
# A seeded generator rather than Hypothesis: Hypothesis writes caches into ./.hypothesis
# during collection, and tests must write only under tmp_path. Fixed seeds keep failures
# reproducible; the case index is in the assertion message.

_KEYS = [
    "recid", "title", "experiment", "collaboration", "date_published", "date_created", "type", "license",
    "collision_information", "distribution", "abstract", "methodology", "usage", "note", "doi", "relations",
    "authors", "categories", "collections", "keywords", "publisher", "files", "metadata",
]  # fmt: skip
_STRINGS = [
    "", " ", "2024", "2024-02-30", "1999-2001", "May 2020", "7 TeV", "0.9-13 TeV", "ecms=91.2", "1e999 GeV",
    "unknown", "CC0-1.0", "cc-by-4.0", "javascript:alert(1)", "/record/1", "<a href='/x'>x</a>", "<p>", "\x00",
    "81009", "-3", "10.7483/X", "isParentOf", "Collision", "Simulated", "DELPHI", "\u0669\u0660", "\U0001f600",
]  # fmt: skip


def _junk(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 3 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 81009, 2**70, -(2**63)])
    if kind == 3:
        return rng.choice([0.5, -2.0, float("nan"), float("inf"), 1e308])
    if kind in (4, 5, 6):
        return rng.choice(_STRINGS)
    if kind == 7:
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [*_KEYS, "description", "links", "url", "energy", "name", "attribution", "primary", "secondary"]
    return {rng.choice(keys): _junk(rng, depth + 1) for _ in range(rng.randrange(5))}


def _junk_record(rng: random.Random) -> Any:
    if rng.random() < 0.1:
        return _junk(rng)
    return {key: _junk(rng) for key in rng.sample(_KEYS, rng.randrange(len(_KEYS)))}


def test_junk_records_give_only_validation_or_input_errors() -> None:
    rng = random.Random(20240501)
    for case in range(1500):
        record = _junk_record(rng)
        before = repr(record)
        for name in PROFILES:
            profile = get_profile(name)
            try:
                body = transform_and_validate(profile, record)
            except (ValidationError, InputError):
                continue
            assert profile.validate(body) == [], case
            json.dumps(body, allow_nan=False)
        assert repr(record) == before, f"case {case}: record mutated"


def test_validate_never_raises_on_mutated_bodies(delphi_records: list[dict[str, Any]]) -> None:
    """Any part of a valid body replaced by junk: issues, never an exception."""
    rng = random.Random(7)
    bodies = [(n, get_profile(n).transform(r)) for n in PROFILES for r in delphi_records[::40]]
    for case in range(1500):
        name, body = rng.choice(bodies)
        body = copy.deepcopy(body)
        parent, key = _random_slot(rng, body)
        parent[key] = _junk(rng)
        issues = get_profile(name).validate(body)
        assert isinstance(issues, list), case
    junk_bodies: list[Any] = [None, [], "body", 3, {"metadata": None}]
    for junk in junk_bodies:
        assert get_profile("inveniordm").validate(junk)


def _random_slot(rng: random.Random, doc: Any) -> tuple[Any, Any]:
    """A random (container, key) inside ``doc``, descending a random number of levels."""
    parent, key = doc, rng.choice(list(doc))
    while rng.random() < 0.7:
        child = parent[key]
        if isinstance(child, dict) and child:
            parent, key = child, rng.choice(list(child))
        elif isinstance(child, list) and child:
            parent, key = child, rng.randrange(len(child))
        else:
            break
    return parent, key
