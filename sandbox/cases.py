"""Generated test records, one per awkward situation a downloader must handle.

Each case is a record in the portal's fixture format (as in ``data/records/*.json``) with
a stable recid in 990001.. (no clash with DELPHI's 80050..81780), its files written by a
``DataGenerator`` under ``/eos/opendata/sandbox/cases/<name>/``. ``CASES`` maps the case
name to its recid; ``build_cases`` writes the data and returns the records.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sandbox.datagen import DataGenerator, Generated, root_uri

CASES: dict[str, str] = {
    "plain": "990001",  # a few ordinary files
    "unpadded": "990002",  # an adler32 written without its leading zeros
    "sha1": "990003",  # checksums given as sha1: only
    "alder32": "990004",  # misspelt algorithm name, as in one real record
    "index": "990005",  # data files listed only through _file_index.json/.txt
    "collide": "990006",  # the same basename in two directories
    "bad_checksum": "990007",  # one file's declared checksum is wrong
    "missing_file": "990008",  # one listed file does not exist on the server
    "escape": "990009",  # one URI climbs out with ../../etc/passwd
    "nofiles": "990010",  # a parent record: relations only, no files
    "big": "990011",  # one file of several 4 MiB chunks, not chunk-aligned
    "many": "990012",  # 40 small files
    "empty": "990013",  # a zero-byte file next to a normal one
}

BASE = "/eos/opendata/sandbox/cases"
BIG_SIZE = 9 * 1024 * 1024 + 12345


def _record(name: str, files: list[dict[str, Any]] | None, **extra: Any) -> dict[str, Any]:
    recid = CASES[name]
    rec: dict[str, Any] = {
        "recid": recid,
        "title": f"Sandbox test case {name}",
        "experiment": ["SANDBOX"],
        "publisher": "CERN Open Data Portal",
        "date_published": "2025",
        "date_created": ["1992"],
        "collections": ["SANDBOX-Test-Cases"],
        "type": {"primary": "Dataset", "secondary": ["Collision"]},
        "abstract": {"description": f"Synthetic record for the {name!r} download case."},
        "license": {"attribution": "CC0-1.0"},
        "distribution": {"formats": ["dat"]},
    }
    if files is not None:
        rec["files"] = files
        data = [f for f in files if f.get("type") not in ("index.json", "index.txt")]
        rec["distribution"].update(number_files=len(data), size=sum(int(f["size"]) for f in data))
    rec.update(extra)
    return rec


def _entry(base_url: str, done: Generated, checksum: str | None = None) -> dict[str, Any]:
    return {
        "uri": root_uri(base_url, done.path),
        "size": done.size,
        "checksum": checksum if checksum is not None else f"adler32:{done.adler32}",
    }


def build_cases(gen: DataGenerator, base_url: str) -> list[dict[str, Any]]:
    """Write every case's files with ``gen`` and return the case records (fixture format)."""
    builders: dict[str, Callable[[DataGenerator, str], dict[str, Any]]] = {
        "plain": _plain,
        "unpadded": _unpadded,
        "sha1": _sha1,
        "alder32": _alder32,
        "index": _index,
        "collide": _collide,
        "bad_checksum": _bad_checksum,
        "missing_file": _missing_file,
        "escape": _escape,
        "nofiles": _nofiles,
        "big": _big,
        "many": _many,
        "empty": _empty,
    }
    return [builders[name](gen, base_url) for name in CASES]


def _plain(gen: DataGenerator, url: str) -> dict[str, Any]:
    sizes = [200_000, 65_536, 3_333]
    files = [_entry(url, gen.write(f"{BASE}/plain/plain_{i}.dat", s)) for i, s in enumerate(sizes)]
    return _record("plain", files)


def _unpadded(gen: DataGenerator, url: str) -> dict[str, Any]:
    # Find (deterministically) a salt whose adler32 has two leading zero hex digits, then
    # write it the way some real records do: 6 hex digits.
    path = f"{BASE}/unpadded/unpadded.dat"
    for salt in range(100_000):
        done = gen.write(path, 20_000, salt=salt)
        if done.adler32.startswith("00"):
            break
    else:  # pragma: no cover - 1 in 256 per try
        raise RuntimeError("no adler32 with leading zeros found")
    other = gen.write(f"{BASE}/unpadded/normal.dat", 10_000)
    files = [_entry(url, done, f"adler32:{done.adler32.lstrip('0')}"), _entry(url, other)]
    return _record("unpadded", files)


def _sha1(gen: DataGenerator, url: str) -> dict[str, Any]:
    files = []
    for i, size in enumerate([50_000, 7_000]):
        done = gen.write(f"{BASE}/sha1/sha1_{i}.dat", size, algorithms=("adler32", "sha1"))
        files.append(_entry(url, done, f"sha1:{done.digests['sha1']}"))
    return _record("sha1", files)


def _alder32(gen: DataGenerator, url: str) -> dict[str, Any]:
    done = gen.write(f"{BASE}/alder32/alder.dat", 30_000)
    return _record("alder32", [_entry(url, done, f"alder32:{done.adler32}")])


def _index(gen: DataGenerator, url: str) -> dict[str, Any]:
    # Like the CMS/ALICE records: files[] holds only the two index files; the portal
    # expands the JSON one into metadata._file_indices.
    entries: list[dict[str, Any]] = []
    for i, size in enumerate([40_000, 41_000, 42_000, 5_000, 1]):
        done = gen.write(f"{BASE}/index/data/indexed_{i}.root", size)
        entries.append(
            {
                "checksum": f"adler32:{done.adler32}",
                "filename": done.path.rsplit("/", 1)[1],
                "size": done.size,
                "uri": root_uri(url, done.path),
            }
        )
    stem = f"{BASE}/index/file-indexes/SANDBOX_index_case_file_index"
    as_json = gen.write_bytes(stem + ".json", json.dumps(entries, indent=1).encode())
    as_txt = gen.write_bytes(stem + ".txt", "".join(e["uri"] + "\n" for e in entries).encode())
    files = [
        {**_entry(url, as_json), "type": "index.json"},
        {**_entry(url, as_txt), "type": "index.txt"},
    ]
    rec = _record("index", files)
    rec["distribution"].update(number_files=len(entries), size=sum(e["size"] for e in entries))
    return rec


def _collide(gen: DataGenerator, url: str) -> dict[str, Any]:
    files = [
        _entry(url, gen.write(f"{BASE}/collide/run1/events.dat", 12_000)),
        _entry(url, gen.write(f"{BASE}/collide/run2/events.dat", 13_000)),
        _entry(url, gen.write(f"{BASE}/collide/run2/extra.dat", 1_000)),
    ]
    return _record("collide", files)


def _bad_checksum(gen: DataGenerator, url: str) -> dict[str, Any]:
    good = [gen.write(f"{BASE}/bad_checksum/good_{i}.dat", 20_000 + i) for i in range(2)]
    bad = gen.write(f"{BASE}/bad_checksum/bad.dat", 25_000)
    wrong = f"{int(bad.adler32, 16) ^ 0x1:08x}"
    files = [_entry(url, good[0]), _entry(url, bad, f"adler32:{wrong}"), _entry(url, good[1])]
    return _record("bad_checksum", files)


def _missing_file(gen: DataGenerator, url: str) -> dict[str, Any]:
    present = [gen.write(f"{BASE}/missing_file/present_{i}.dat", 15_000 + i) for i in range(2)]
    gone = gen.write(f"{BASE}/missing_file/gone.dat", 16_000)
    gen.remove(gone.path)  # listed with correct size/checksum, but absent on the server
    files = [_entry(url, present[0]), _entry(url, gone), _entry(url, present[1])]
    return _record("missing_file", files)


def _escape(gen: DataGenerator, url: str) -> dict[str, Any]:
    ok = gen.write(f"{BASE}/escape/fine.dat", 9_000)
    evil = {
        "uri": f"{url.rstrip('/')}//eos/opendata/../../etc/passwd",
        "size": 1234,
        "checksum": "adler32:12345678",
    }
    return _record("escape", [_entry(url, ok), evil])


def _nofiles(gen: DataGenerator, url: str) -> dict[str, Any]:
    rel = [{"recid": CASES["plain"], "title": "Sandbox test case plain", "type": "isParentOf"}]
    return _record("nofiles", None, relations=rel)


def _big(gen: DataGenerator, url: str) -> dict[str, Any]:
    return _record("big", [_entry(url, gen.write(f"{BASE}/big/big.dat", BIG_SIZE))])


def _many(gen: DataGenerator, url: str) -> dict[str, Any]:
    files = [_entry(url, gen.write(f"{BASE}/many/many_{i:03d}.dat", 1024 + 97 * i)) for i in range(40)]
    return _record("many", files)


def _empty(gen: DataGenerator, url: str) -> dict[str, Any]:
    files = [
        _entry(url, gen.write(f"{BASE}/empty/empty.dat", 0)),
        _entry(url, gen.write(f"{BASE}/empty/nonempty.dat", 2_048)),
    ]
    return _record("empty", files)
