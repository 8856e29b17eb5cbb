"""A split record on Zenodo whose part 3 fails: the others are published, the re-run finishes
part 3 alone and duplicates nothing (issue 14 section 4).

tests/test_oversize_split.py shows this against the sandbox repository (its own fault
knobs); the Zenodo stand-in has none, so a fault proxy in front of it answers 500 to every
upload of one file of part 3 (m020.dat) until it is told to stop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ferry.cli import main
from tests.bulk_support import SyntheticSource
from tests.fixtures_zenodo import ZenodoHandle
from tests.oversize_support import (
    PARTS,
    RECID,
    SOURCE_URL,
    dat_names,
    many_files,
    part_index,
    relation,
    upload_args,
    writes,
    zen,
    zen_config,
    zen_get,
)
from tests.reliability.fault_proxy import FaultProxy, json_error

__all__ = ["many_files", "zen"]  # fixtures: the module-scoped synthetic source, the Zenodo stand-in

PART_3 = set(dat_names()[18:27])  # the plan: 9, 9, 9, 3 files


def _m020(method: str, path: str) -> bool:
    return method == "PUT" and path.split("?")[0].endswith("/m020.dat")


def _depositions(zen: ZenodoHandle) -> dict[int, dict[str, Any]]:
    """Each deposition by its part number, as the stand-in holds it (one per part, or the test fails)."""
    out: dict[int, dict[str, Any]] = {}
    for dep in zen_get(zen, "/deposit/depositions?size=100"):
        index = part_index(dep["title"] if "title" in dep else dep["metadata"]["title"])
        assert index not in out, f"part {index} twice"
        out[index] = dep
    return out


def test_zenodo_part_that_fails_leaves_the_others_and_the_rerun_finishes_it(
    tmp_path: Path, many_files: SyntheticSource, zen: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = FaultProxy(zen.url, seed=3, error_body=json_error)
    try:
        proxy.configure(faulty=_m020, error_rate=1.0)
        config = zen_config(tmp_path, many_files, zen)
        text = config.read_text().replace(f'url = "{zen.url}"', f'url = "{proxy.url}"')
        config.write_text(text)
        stats = str(tmp_path / "stats")
        args = upload_args(config, RECID, "zen", tmp_path / "data", "--stats-dir", stats, "--publish")

        assert main(args) == 1
        err = capsys.readouterr().err
        assert f"record {RECID}" in err and "part 3 of 4" in err, err
        assert proxy.faults("error"), "the fault never hit the run"
        first = _depositions(zen)
        assert sorted(first) == list(range(1, PARTS + 1))  # part 3's deposition exists, nothing twice
        assert [i for i, d in sorted(first.items()) if d["submitted"]] == [1, 2, 4]  # the others finished
        assert not first[3]["submitted"]
        others = {first[i]["id"] for i in (1, 2, 4)}

        proxy.configure(error_rate=0.0)
        before = len(proxy.log)
        assert main(args) == 0, capsys.readouterr().err
        sent = writes(proxy.log[before:])
        assert sent, "the re-run wrote nothing"
        assert not [r for r in sent if any(f"/{i}" in r["path"] for i in others)], sent  # parts 1, 2, 4 untouched
        uploaded = {r["path"].split("?")[0].rsplit("/", 1)[1] for r in sent if r["method"] == "PUT"}
        assert uploaded & set(dat_names()) <= PART_3  # only part 3's files went again
        assert "m020.dat" in uploaded
    finally:
        proxy.close()

    final = _depositions(zen)
    assert {i: d["id"] for i, d in final.items()} == {i: d["id"] for i, d in first.items()}  # the same four
    assert all(d["submitted"] for d in final.values())
    keys: list[str] = []
    for i, dep in sorted(final.items()):
        record = zen_get(zen, f"/records/{dep['id']}")
        keys += [f["key"] for f in record["files"] if f["key"].endswith(".dat")]
        related = {(r["identifier"], r["relation"]) for r in record["metadata"]["related_identifiers"]}
        assert (SOURCE_URL, "isPartOf") in related
        # the parts' pages as written through the proxy (its host): compared by path
        linked = {(urlsplit(ident).path, rel) for ident, rel in related if ident != SOURCE_URL}
        pages = {j: f"/records/{d['id']}" for j, d in final.items() if j != i}
        assert linked == {(p, relation(i, j)) for j, p in pages.items()}, i  # part 3, finished last, too
    assert sorted(keys) == dat_names()  # every file once
