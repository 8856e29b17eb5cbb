"""Master cache: fixtures, incremental updates, the seed's shape, portal search past the
10,000-hit cap, priority ordering, recid lists, and the `ferry cache` command."""

from __future__ import annotations

import copy
import json
import re
import socket
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from download.sources.cache import (
    CacheBuilder,
    MasterCache,
    PackedEntries,
    PortalSearch,
    category_of,
    field_values,
    order_recids,
    recid_key,
    record_from_json,
)
from ferry.cli import main
from ferry.core.errors import InputError, RecordNotFound
from ferry.core.model import Record
from pipeline.recids import parse_recids, read_recids
from tests.conftest import fixture_records_dir

FIXTURE_FILES = sorted(fixture_records_dir().glob("*.json"))


def _by_recid(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["recid"]: r for r in records}


# --- from fixtures ------------------------------------------------------------------------


def test_cache_from_all_delphi_fixtures(tmp_path: Path, delphi_records: list[dict[str, Any]]) -> None:
    cache = MasterCache(path=tmp_path / "cache.json")
    builder = CacheBuilder(cache)
    for path in FIXTURE_FILES:
        builder.add_records_file(path)
    assert builder.report.errors == {}
    assert len(builder.report.added) == len(delphi_records) == 767
    s = cache.stats()
    assert s.records == 767
    assert s.files == sum(len(r.get("files", [])) for r in delphi_records)
    assert s.bytes == sum(f["size"] for r in delphi_records for f in r.get("files", []))
    assert s.categories == {"collision": 53, "simulated": 694, "unclassified": 20, "no-metadata": 0}
    assert s.without_files == 4  # parent/doc records listing no files: the bulk runner fails them
    cache.save()
    # Written entry by entry (bounded memory), yet the very document one dumps would give.
    whole = dict(sorted(cache.entries.items(), key=lambda kv: recid_key(kv[0])))
    assert (tmp_path / "cache.json").read_bytes() == orjson.dumps(whole, option=orjson.OPT_INDENT_2)

    loaded = MasterCache.load(tmp_path / "cache.json")
    raw = json.loads((tmp_path / "cache.json").read_text())
    entry = raw["81194"]
    assert set(entry) >= {"record", "files", "done", "checked", "category", "resolved_at", "fingerprint"}
    first = entry["files"][0]
    assert first == {
        "remote": "root://eospublic.cern.ch//eos/opendata/delphi/simulated-data/cern/hzha03pythia6156/v94c/91.2/"
        "hzha03pythia6156_tttt_91.2_60_9_41820.sdst",
        "path": "hzha03pythia6156_tttt_91.2_60_9_41820.sdst",
        "size": 4823040,
        "checksum": "adler32:db44cfb8",
        "downloaded": False,
    }
    record = loaded.record("81194")
    assert record.metadata == _by_recid(delphi_records)["81194"]
    assert record.files[0].checksums[0].value == "db44cfb8"
    assert loaded.record("81194") == record_from_json(_by_recid(delphi_records)["81194"])
    with pytest.raises(InputError, match="not in the master cache"):
        loaded.record("1")


def test_incremental_update_keeps_flags_and_refreshes_changes(
    tmp_path: Path, delphi_records: list[dict[str, Any]]
) -> None:
    path = tmp_path / "cache.json"
    subset = [r for r in delphi_records if len(r.get("files", [])) >= 2][:20]
    rest = [r for r in delphi_records if r not in subset][:10]
    (tmp_path / "a.json").write_text(json.dumps(subset))
    builder = CacheBuilder(MasterCache.load(path))
    builder.add_records_file(tmp_path / "a.json")
    builder.save()

    # A run marks things done/downloaded (as the seed's tools do).
    cache = MasterCache.load(path)
    changed_recid, same_recid = subset[0]["recid"], subset[1]["recid"]
    for recid in (changed_recid, same_recid):
        cache.entries[recid]["done"] = True
        for f in cache.entries[recid]["files"]:
            f["downloaded"] = True
    cache.save()

    # The source changes one record: new title, one file replaced.
    changed = copy.deepcopy(subset[0])
    changed["title"] += " (v2)"
    changed["files"][-1] = dict(changed["files"][-1], size=123, checksum="adler32:00000001")
    updated = [changed, *subset[1:], *rest]
    (tmp_path / "b.json").write_text(json.dumps(updated))
    builder = CacheBuilder(MasterCache.load(path))
    builder.add_records_file(tmp_path / "b.json")
    builder.save()
    r = builder.report
    assert (len(r.added), len(r.refreshed), len(r.unchanged)) == (10, 1, 19)
    assert r.refreshed == [changed_recid]

    cache = MasterCache.load(path)
    assert len(cache) == 30
    entry = cache.entries[changed_recid]
    assert entry["record"]["title"].endswith("(v2)")
    assert entry["done"] is False  # content changed: must be checked again
    assert [f["downloaded"] for f in entry["files"]] == [True] * (len(entry["files"]) - 1) + [False]
    assert cache.entries[same_recid]["done"] is True
    assert all(f["downloaded"] for f in cache.entries[same_recid]["files"])


def test_seed_shaped_cache_is_read(tmp_path: Path) -> None:
    seed = {
        "80001": {
            "record": {"recid": "80001", "title": "t", "type": {"primary": "Dataset", "secondary": ["Collision"]}},
            "files": [
                {
                    "remote": "root://h//eos/a/x.root",
                    "path": "x.root",
                    "size": 10,
                    "checksum": "adler32:1a2b3c",
                    "downloaded": True,
                },
                {"remote": "root://h//eos/a/y.root", "path": "y.root", "size": 5, "downloaded": False},
            ],
            "done": False,
            "checked": True,
        },
        "80002": {
            "record": {
                "recid": "80002",
                "type": {"secondary": ["Simulated"]},
                "files": [{"uri": "root://h//eos/b/z.root", "size": 7, "checksum": "adler32:ff"}],
            },
            "done": True,
            "checked": True,
        },  # no "files": derived from the record
        "80003": {"files": [], "done": False, "checked": False},  # no record: no metadata
    }
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed))
    cache = MasterCache.load(path)
    assert cache.entries["80001"]["category"] == "collision"
    assert cache.entries["80003"]["category"] == "no-metadata"
    rec = cache.record("80001")
    assert [f.key for f in rec.files] == ["x.root", "y.root"]
    assert str(rec.files[0].checksums[0]) == "adler32:001a2b3c"  # zero-padded
    assert rec.files[1].checksums == ()
    assert [f.key for f in cache.record("80002").files] == ["z.root"]
    with pytest.raises(InputError, match="no record metadata"):
        cache.record("80003")
    # What a bulk run keeps: the chosen entries, packed, giving the same records and errors.
    packed = PackedEntries(cache, ["80001", "80002", "80003", "80009"])
    assert len(packed) == 3
    assert packed.record("80001") == cache.record("80001") and packed.record("80002") == cache.record("80002")
    with pytest.raises(InputError, match="no record metadata"):
        packed.record("80003")
    with pytest.raises(InputError, match="not in the master cache"):
        packed.record("80009")
    s = cache.stats()
    assert (s.records, s.files, s.bytes, s.downloaded_files, s.done) == (3, 2, 15, 1, 1)

    # A seed cache is also valid input for a build (records flow into a new cache).
    builder = CacheBuilder(MasterCache(path=tmp_path / "ours.json"))
    builder.add_records_file(path)
    assert sorted(builder.report.added) == ["80001", "80002"]
    assert list(builder.report.errors) == ["80003"]


def test_bad_records_are_errors_not_fatal(tmp_path: Path, delphi_records: list[dict[str, Any]]) -> None:
    good = delphi_records[0]
    bad_sum = dict(copy.deepcopy(delphi_records[1]))
    bad_sum["files"][0]["checksum"] = "crc99:zz"
    escape = dict(copy.deepcopy(delphi_records[2]))
    escape["files"][0]["uri"] = "root://h//eos/../../etc/passwd"
    index = {"recid": "5", "files": [{"uri": "root://h//eos/i/files.json", "type": "index.json"}]}
    (tmp_path / "r.json").write_text(json.dumps([good, bad_sum, escape, index, "junk"]))
    builder = CacheBuilder(MasterCache())
    builder.add_records_file(tmp_path / "r.json")
    errors = builder.report.errors
    assert builder.report.added == [good["recid"]]
    assert "unsupported checksum algorithm 'crc99'" in errors[bad_sum["recid"]]
    assert "'..'" in errors[escape["recid"]]
    assert "index file(s) not expanded" in errors["5"]
    assert any(k.endswith("[4]") for k in errors)
    assert builder.cache.entries[bad_sum["recid"]]["error"]
    with pytest.raises(InputError, match="not valid JSON"):
        (tmp_path / "x.json").write_text("{")
        builder.add_records_file(tmp_path / "x.json")
    with pytest.raises(InputError, match="JSON object keyed by recid"):
        MasterCache.load(tmp_path / "r.json")


# --- from a resolver ----------------------------------------------------------------------


async def test_recids_through_an_injected_resolver(delphi_records: list[dict[str, Any]]) -> None:
    known = _by_recid(delphi_records)
    calls: list[str] = []

    async def resolve(recid: str) -> Record:
        calls.append(recid)
        if recid not in known:
            raise RecordNotFound("the portal has no such record", recid=recid)
        return record_from_json(known[recid])

    cache = MasterCache()
    builder = CacheBuilder(cache, jobs=4)
    wanted = [r["recid"] for r in delphi_records[:12]] + ["1", "2"]
    await builder.add_recids(wanted, resolve)
    assert sorted(builder.report.added) == sorted(wanted[:12])
    assert set(builder.report.errors) == {"1", "2"}
    assert "no such record" in cache.entries["1"]["error"]
    assert sorted(calls) == sorted(wanted)

    # Second pass: cached ones are skipped, failed ones retried; --refresh re-resolves.
    calls.clear()
    again = CacheBuilder(cache)
    await again.add_recids(wanted, resolve)
    assert sorted(calls) == ["1", "2"] and len(again.report.skipped) == 12
    calls.clear()
    again = CacheBuilder(cache)
    await again.add_recids(wanted[:3], resolve, refresh=True)
    assert len(calls) == 3 and len(again.report.unchanged) == 3


# --- portal search past the cap -----------------------------------------------------------


def _synthetic(n_by_year: Mapping[str, int], undated: int) -> list[dict[str, Any]]:
    out = []
    recid = 100000
    for year, n in n_by_year.items():
        for i in range(n):
            recid += 1
            kind = "Collision" if i % 2 else "Simulated"
            out.append(
                {
                    "recid": str(recid),
                    "date_created": [year],
                    "type": {"secondary": [kind]},
                    "experiment": ["TOY"],
                    "collections": ["TOY"],
                    "files": [{"uri": f"root://h//eos/toy/{recid}.root", "size": 1, "checksum": "adler32:00000001"}],
                }
            )
    for _ in range(undated):
        recid += 1
        out.append(
            {
                "recid": str(recid),
                "experiment": ["TOY"],
                "type": {"secondary": ["Simulated"]},
                "files": [{"uri": f"root://h//eos/toy/{recid}.root", "size": 1, "checksum": "adler32:1"}],
            }
        )
    return out


def _index(records: list[dict[str, Any]]) -> dict[tuple[str, str], set[int]]:
    """(field, value) -> positions of the records having it: the toy portal's search index."""
    index: dict[tuple[str, str], set[int]] = {}
    for i, r in enumerate(records):
        for name in ("experiment", "date_created", "type.secondary", "collections", "recid"):
            for value in field_values(r, name):
                index.setdefault((name, value), set()).add(i)
    return index


def _search(records: list[dict[str, Any]], index: dict[tuple[str, str], set[int]], query: str) -> list[int]:
    """Positions matching ``field:value AND ...`` (values may be double-quoted)."""
    found: set[int] | None = None
    for term in [t for t in query.split(" AND ") if t.strip()]:
        name, _, value = term.strip().partition(":")
        hits = index.get((name, value.strip('"')), set())
        found = hits if found is None else found & hits
    return sorted(range(len(records)) if found is None else found)


@pytest.fixture
async def toy_portal() -> AsyncIterator[tuple[str, list[dict[str, Any]], list[str]]]:
    """A tiny portal search API over synthetic records, with the real 10,000-hit cap."""
    records = _synthetic({"2010": 4000, "2011": 6000, "2012": 12000, "2013": 900}, undated=7)
    log: list[str] = []
    index = _index(records)

    async def search(request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        page, size = int(request.query.get("page", 1)), int(request.query.get("size", 10))
        log.append(q)
        if page * size > 10_000:
            return web.json_response({"message": "Maximum number of results have been reached."}, status=400)
        hits = _search(records, index, q)
        chunk = [records[i] for i in hits[(page - 1) * size : page * size]]
        return web.json_response(
            {
                "hits": {"total": len(hits), "hits": [{"id": r["recid"], "metadata": r} for r in chunk]},
                "links": {},
            }
        )

    app = web.Application()
    app.router.add_get("/api/records", search)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", records, log
    finally:
        await runner.cleanup()


async def test_search_pages_past_the_10000_cap(toy_portal: tuple[str, list[dict[str, Any]], list[str]]) -> None:
    url, records, log = toy_portal
    cache = MasterCache()
    builder = CacheBuilder(cache)
    async with aiohttp.ClientSession() as session:
        await builder.add_search(session, url, "experiment:TOY", page_size=1000)
    dated = {r["recid"] for r in records if r.get("date_created")}
    assert dated <= set(cache.entries)  # every hit reachable through the splits arrived
    assert len(builder.report.added) == len(cache.entries)  # each recid once
    # The 7 undated records sort last, beyond the cap and outside every year: reported.
    assert len(cache.entries) == len(dated)
    assert builder.report.warnings == [
        "search q='experiment:TOY': 7 of 22907 hits could not be reached under the 10000-hit cap "
        "(splits: date_created, type.secondary, collections)"
    ]
    # 2012 has 12,000 hits: split again by type.secondary.
    assert "experiment:TOY AND date_created:2012 AND type.secondary:Collision" in log
    assert "experiment:TOY AND date_created:2011" in log
    assert not any("date_created:2011 AND type.secondary" in q for q in log)  # under the cap: no split
    assert builder.report.queries == len(log)

    # Under the cap: plain paging, no splits, no warnings.
    small = PortalSearch(session=None, portal=url, page_size=300)  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as session:
        small.session = session
        got = [h async for h in small.hits("date_created:2013")]
    assert len(got) == 900 and small.requests == 3 and small.warnings == []


# --- ordering -----------------------------------------------------------------------------


def test_priority_and_other_orders(delphi_records: list[dict[str, Any]]) -> None:
    cache = MasterCache()
    builder = CacheBuilder(cache)
    pick = {}
    for r in delphi_records:
        cat = category_of(r)
        if len([x for x in pick.values() if category_of(x) == cat]) < 2:
            pick[r["recid"]] = r
    for r in pick.values():
        builder.add_json(r)
    cache.set_error("99", "portal said 404")
    listed = ["99", "12345", *sorted(pick, reverse=True)]  # 12345: not in the cache at all

    decisions = order_recids(listed, cache)
    cats = [d.category for d in decisions]
    assert cats == sorted(cats, key=["collision", "simulated", "unclassified", "no-metadata"].index)
    assert cats[:2] == ["collision", "collision"] and cats[-2:] == ["no-metadata", "no-metadata"]
    assert [d.recid for d in decisions][-2:] == ["99", "12345"]  # ties by recid, numerically
    assert decisions[0].reason.startswith("priority 1/4: collision (type.secondary has Collision)")
    assert "no metadata" in decisions[-1].reason
    assert [d.position for d in decisions] == list(range(len(listed)))

    sizes = [d.size for d in order_recids(listed, cache, "size-asc")]
    known = [s for s in sizes if s is not None]
    assert known == sorted(known) and sizes[-2:] == [None, None]
    desc = order_recids(listed, cache, "size-desc")
    assert [d.size for d in desc][: len(known)] == sorted(known, reverse=True)
    assert "bytes" in desc[0].reason
    assert [d.recid for d in order_recids(listed, cache, "file")] == listed
    assert order_recids(listed, cache, "file")[0].reason == "file order: entry 1 of the list"
    assert [d.recid for d in order_recids(listed, cache, "recid")] == sorted(listed, key=int)
    with pytest.raises(InputError, match="unknown order"):
        order_recids(listed, cache, "random")


# --- recid lists --------------------------------------------------------------------------


def test_recid_list_parsing_reports_bad_lines(tmp_path: Path) -> None:
    text = (
        "# DELPHI collision data\n"
        "81000\n"
        "\n"
        "   80519   # a manual\n"
        "abc\n"
        "81000\n"
        "8100O\n"
        "https://opendata.cern.ch/record/81001\n"
        "0\n"
        "12 13\n"
        "\ufeff\n"
    )
    path = tmp_path / "recids.txt"
    path.write_text(text, encoding="utf-8")
    parsed = read_recids(path)
    assert parsed.recids == ["81000", "80519", "81001"]
    assert parsed.lines == {"81000": 2, "80519": 4, "81001": 8}
    assert [str(e) for e in parsed.errors] == [
        f"{path}, line 5: 'abc' is not a record id (expected digits)",
        f"{path}, line 7: '8100O' is not a record id (expected digits)",
        f"{path}, line 9: '0' is not a record id (expected digits)",
        f"{path}, line 10: '12 13' is not a record id (expected digits)",
    ]
    assert parsed.warnings == [f"{path}, line 6: recid 81000 repeats line 2; ignored"]
    assert not parsed.ok
    assert parse_recids("1\n2\n").ok
    with pytest.raises(InputError, match="does not exist"):
        read_recids(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="not UTF-8"):
        read_recids(tmp_path / "bin.txt")


# --- the command --------------------------------------------------------------------------


def test_ferry_cache_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cache.json"
    assert main(["cache", "build", "--records", *map(str, FIXTURE_FILES[:3]), "-o", str(out)]) == 0
    first = capsys.readouterr().out
    assert re.search(r"wrote .*cache.json: \d+ records, \d+ files", first)
    assert main(["cache", "build", "--records", *map(str, FIXTURE_FILES), "-o", str(out)]) == 0
    assert "updated" in capsys.readouterr().out and len(MasterCache.load(out)) == 767

    recids = tmp_path / "r.txt"
    recids.write_text("81000\nbogus\n80519\n424242\n")
    sub = tmp_path / "sub.json"
    assert main(["cache", "build", "--records", str(out), "--recids", str(recids), "-o", str(sub)]) == 1
    captured = capsys.readouterr()
    assert "line 2: 'bogus' is not a record id" in captured.err
    assert "record 424242: not found in" in captured.err
    assert sorted(MasterCache.load(sub).entries) == ["424242", "80519", "81000"]

    assert main(["cache", "stats", str(sub)]) == 0
    assert "records:          3" in capsys.readouterr().out
    assert main(["cache", "show", str(sub)]) == 0
    listing = capsys.readouterr().out
    assert "81000" in listing and "error: not found" in listing
    assert main(["cache", "show", str(sub), "80519"]) == 0
    assert json.loads(capsys.readouterr().out)["record"]["recid"] == "80519"
    assert main(["cache", "order", str(sub)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["81000", "80519", "424242"]
    # Sizes in ferry.progress.human_bytes' format; an unknown one (not found) shows "?".
    assert re.fullmatch(r"\d+\.\d (kB|MB|GB|TB)", " ".join(lines[0].split()[3:5]))
    assert lines[2].split()[3] == "?"
    assert main(["cache", "show", str(sub), "1"]) == 2
    assert main(["cache", "build", "-o", str(sub)]) == 2
    assert "nothing to build from" in capsys.readouterr().err
    assert main(["cache", "stats", str(tmp_path / "missing.json")]) == 2
