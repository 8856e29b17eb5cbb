"""Generated bad inputs (hypothesis): push catalogs, djarchive manifests, master caches (issue 16, section 5).

The other inputs (records files, recid lists, configs) are in test_generated_inputs.py.
Whatever a catalog or a manifest holds, the command ends with a status of its own (0, 1
or 2), never a traceback; a refusal (2) names the file, line or key and leaves the target
(a local folder: a push target, an archive, a download folder) and DIR as they were.
``--long`` runs more examples. No server: every target here is a folder.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.reliability.test_generated_inputs import examples, run
from tests.reliability.test_inputs import tree

# Names a catalog or manifest may give: files DIR has, files it lacks, escapes, odd text.
NAMES = st.one_of(
    st.sampled_from(["a.txt", "sub/b.bin", "missing.pmtiles", "../out.txt", "/etc/hostname", "sub/../a.txt", ""]),
    st.text(max_size=10),
)
LEAF = st.one_of(NAMES, st.integers(), st.floats(allow_nan=True), st.booleans(), st.none())
KEY_NAMES = ["assets", "basemap", "sge", "default", "alias", "pmtiles", "id"]
KEYS = st.one_of(st.sampled_from(KEY_NAMES), st.text(max_size=4))
CATALOG = st.recursive(
    LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=12
)
SHA_A = "73cb3858a687a8494ca3323053016282f3dad39d42cf62ca4e79dda2aac7d9ac"  # sha256 of "x\n"
# Rows right for DIR (a.txt), wrong for it (b.bin's size and sha), and generated ones.
GOOD_ROWS = st.sampled_from([("2", SHA_A, "a.txt"), ("2", SHA_A, "sub/b.bin"), ("3", SHA_A, "a.txt")])
ROW = GOOD_ROWS | st.tuples(
    st.one_of(st.sampled_from(["2", "0", "-1", "1e3", "99999999999999999999999", ""]), st.text(max_size=4)),
    st.one_of(st.sampled_from([SHA_A, SHA_A.upper(), SHA_A[:-1], "z" * 64, ""]), st.text(max_size=6)),
    NAMES,
)
SETTINGS = {"deadline": None, "suppress_health_check": list(HealthCheck)}


def _tree_of(work: Path) -> tuple[Path, Path]:
    """DIR with two files (``a.txt``, ``sub/b.bin``) and a local-folder target named ``shelf``."""
    directory, shelf = work / "d", work / "shelf"
    (directory / "sub").mkdir(parents=True)
    shelf.mkdir()
    (directory / "a.txt").write_text("x\n")
    (directory / "sub" / "b.bin").write_bytes(b"y\n")
    (work / "ferry.toml").write_text(f'[targets.shelf]\ntype = "local"\nurl = "{shelf}"\n')
    return directory, shelf


def _push_catalog(data: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        directory, shelf = _tree_of(work)
        (directory / "catalog.yaml").write_bytes(data)
        before = tree(work)
        argv = ["--config", str(work / "ferry.toml"), "push", str(directory), "--target", "shelf"]
        argv += ["--select", "catalog", "--title", "T", "--creators", "Family, Given", "--description", "d"]
        code, err = run([*argv, "--upload-type", "dataset"], capsys)
        event(f"exit {code}")
        if code == 2:
            assert "catalog" in err, err
            assert tree(work) == before, "a refused push wrote something"
        elif code == 0:
            assert any(shelf.rglob("catalog.yaml")), "a push that exits 0 sent the catalog itself"


def test_generated_catalogs(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    @settings(max_examples=examples(request), **SETTINGS)  # type: ignore[arg-type]
    @given(st.one_of(st.dictionaries(KEYS, CATALOG, max_size=4), CATALOG))
    def check(value: Any) -> None:
        _push_catalog(yaml.safe_dump(value, allow_unicode=True).encode(), capsys)

    check()


def test_generated_bytes_as_catalogs(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    @settings(max_examples=examples(request), **SETTINGS)  # type: ignore[arg-type]
    @given(st.binary(max_size=64) | st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")))
    def check(data: bytes) -> None:
        _push_catalog(data, capsys)

    check()


def _manifest(rows: list[tuple[str, str, str]], quoting: Literal[0, 1]) -> bytes:
    out = io.StringIO()
    csv.writer(out, quoting=quoting, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8", "surrogatepass")


MANIFESTS = st.one_of(
    st.builds(_manifest, st.lists(ROW, max_size=4), st.sampled_from([csv.QUOTE_ALL, csv.QUOTE_MINIMAL])),
    st.binary(max_size=64),
)


def test_generated_manifests_for_upload(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    """DIR's own manifest, generated: ``archive upload`` sends or refuses; refused, the archive is untouched."""

    @settings(max_examples=examples(request), **SETTINGS)  # type: ignore[arg-type]
    @given(MANIFESTS)
    def check(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            directory, _ = _tree_of(work)
            (directory / "djarchive-manifest.csv").write_bytes(data)
            archive = work / "arch"
            archive.mkdir()
            code, err = run(["archive", "upload", "ds", "r1", str(directory), "--to", str(archive)], capsys)
            event(f"exit {code}")
            if code != 0:
                assert tree(archive) == [], f"a refused upload wrote into the archive: {err}"
            if code == 2:
                assert "manifest" in err or "djarchive" in err, err

    check()


def test_generated_manifests_for_download(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    """An archive whose revision manifest is generated: ``archive download`` fetches what it
    lists and verifies it, or refuses naming the manifest; refused, the download folder holds
    no file of the revision."""

    @settings(max_examples=examples(request), **SETTINGS)  # type: ignore[arg-type]
    @given(MANIFESTS)
    def check(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            rev = work / "arch" / "ds" / "r1"
            (rev / "sub").mkdir(parents=True)
            (rev / "a.txt").write_text("x\n")
            (rev / "sub" / "b.bin").write_bytes(b"y\n")
            (rev / "djarchive-manifest.csv").write_bytes(data)
            dest = work / "dl"
            code, err = run(["archive", "download", "ds", "r1", str(dest), "--from", str(work / "arch")], capsys)
            event(f"exit {code}")
            if code == 2:
                assert "manifest" in err, err
                assert not any(p.is_file() and ".ferry" not in p.parts for p in dest.rglob("*")), err
            assert not (work / "out.txt").exists(), "a manifest path escaped the download folder"

    check()


FILE_ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "uri": st.one_of(
            st.sampled_from(["root://127.0.0.1:9//a/b.root", "https://127.0.0.1:9/x", ""]), st.text(max_size=6)
        ),
        "key": NAMES,
        "size": st.one_of(st.integers(min_value=-2, max_value=2**70), st.text(max_size=3), st.none()),
        "checksum": st.one_of(st.sampled_from(["adler32:0001abcd", "md5:" + "0" * 32, "adler32:xyz"]), st.none()),
    },
)
CACHE_ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "record": st.one_of(st.fixed_dictionaries({"recid": st.one_of(st.integers(), st.text(max_size=4))}), LEAF),
        "files": st.one_of(st.lists(FILE_ENTRY, max_size=3), LEAF),
        "done": st.one_of(st.booleans(), LEAF),
        "category": st.one_of(st.sampled_from(["collision", "simulated", "unclassified"]), LEAF),
        "error": LEAF,
    },
)
CACHE_KEYS = st.one_of(st.sampled_from(["1", "80050", "-3", "x"]), st.text(max_size=3))


def _cache(items: list[tuple[str, dict[str, Any], bool]]) -> dict[str, Any]:
    """Entries keyed by recid; where ``agree``, the record inside names its key (else the
    key and the inner recid are generated apart, which a cache must refuse)."""
    out: dict[str, Any] = {}
    for key, entry, agree in items:
        record = entry.get("record")
        out[key] = {**entry, "record": {**record, "recid": key}} if agree and isinstance(record, dict) else entry
    return out


CACHES = st.one_of(st.lists(st.tuples(CACHE_KEYS, CACHE_ENTRY, st.booleans()), max_size=3).map(_cache), CATALOG)


def test_generated_master_caches(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    """A generated master cache read by ``cache stats/order/show`` and ``bulk --all --dry-run``:
    a status of its own, never a traceback; refused (2), the cache file is named and nothing is
    written to the target."""

    @settings(max_examples=examples(request), **SETTINGS)  # type: ignore[arg-type]
    @given(CACHES)
    def check(value: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            _, shelf = _tree_of(work)
            cache = work / "master-cache.json"
            cache.write_text(json.dumps(value))
            config = ["--config", str(work / "ferry.toml")]
            for argv in (["cache", "stats", str(cache)], ["cache", "order", str(cache)], ["cache", "show", str(cache)]):
                code, err = run([*config, *argv], capsys)
                event(f"{argv[1]} exit {code}")
                if code == 2:
                    assert str(cache) in err or "cache" in err, err
            bulk = ["bulk", "--all", "--cache", str(cache), "--target", "shelf", "--dest", str(work / "dest")]
            code, err = run([*config, *bulk, "--dry-run"], capsys)
            event(f"bulk exit {code}")
            if code == 2:
                assert str(cache) in err or "cache" in err, err
            assert tree(shelf) == [], "a dry run wrote into the target"

    check()
