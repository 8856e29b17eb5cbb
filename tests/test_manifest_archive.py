"""djarchive manifests: format edge cases, djarchive's own files, tree state, ferry verify."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from archive import hashing
from archive.build import build_manifest, digest_tree, verify_tree
from archive.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    ManifestRow,
    djarchive_unreadable,
    parse_manifest,
    read_manifest,
)
from ferry.cli import main
from ferry.core import checksums
from ferry.core.errors import InputError, UnsafePathError
from ferry.core.tree import ScanOptions, scan_tree
from ferry.core.tree_state import TreeState

OLD = 1_600_000_000  # an mtime well in the past: the state trusts it (see ferry/core/tree_state.py)


def write(root: Path, rel: str, data: bytes, *, old: bool = True) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if old:
        os.utime(path, (OLD, OLD))
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def djarchive_style(rows: list[tuple[int, str, str]]) -> bytes:
    """A manifest as djarchive's write_manifest formats it: each field in quotes, no escaping."""
    return b"".join(f'"{size}","{digest}","{path}"\n'.encode() for size, digest, path in rows)


# --- format ------------------------------------------------------------------------------

ODD_NAMES = ["a,b.txt", 'say "hi".dat', "two\nlines", "ünïcødé/日本語.txt", "trailing ", "x\r"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_names_round_trip_and_are_flagged_for_djarchive(name: str) -> None:
    m = Manifest([ManifestRow(name, 3, sha(b"abc")), ManifestRow("plain", 0, sha(b""))])
    back = parse_manifest(m.to_bytes(), where="m.csv")
    assert back == m
    assert [r.path for r in back] == sorted([name, "plain"])
    assert djarchive_unreadable(name) is not None or name.startswith("ü")
    assert djarchive_unreadable("plain") is None


def test_plain_names_are_byte_identical_to_djarchive_output() -> None:
    rows = [(5, sha(b"hello"), "a/b.txt"), (0, sha(b""), "empty")]
    m = Manifest(ManifestRow(p, s, d) for s, d, p in rows)
    assert m.to_bytes() == djarchive_style(rows)


def test_djarchive_written_manifest_read_back_unsorted_unquoted_crlf() -> None:
    data = djarchive_style([(5, sha(b"hello"), "z/last"), (1, sha(b"x"), "a/first")])
    data += f"2,{sha(b'yy').upper()},unquoted/field.txt\r\n".encode()
    m = parse_manifest(data, where="djarchive-manifest.csv")
    assert [r.path for r in m] == ["a/first", "unquoted/field.txt", "z/last"]
    assert m.get("unquoted/field.txt") == ManifestRow("unquoted/field.txt", 2, sha(b"yy"))


def test_duplicate_path_is_an_error_naming_both_lines() -> None:
    data = djarchive_style([(1, sha(b"x"), "a"), (1, sha(b"x"), "b"), (1, sha(b"x"), "a")])
    with pytest.raises(ManifestError, match=r"m\.csv line 3: the path 'a' is listed twice \(first on line 1\)"):
        parse_manifest(data, where="m.csv")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('"1","abc","a"', "not a sha256"),
        ('"-1","' + "0" * 64 + '","a"', "not a whole number"),
        ('"1","' + "0" * 64 + '"', "expected 3 fields"),
        ('"1","' + "0" * 64 + '","../up"', "climbs out"),
        ('"1","' + "0" * 64 + '","/abs"', "absolute"),
        ('"1","' + "0" * 64 + '","a//b"', "not in normal form"),
    ],
)
def test_bad_rows_name_the_line(line: str, message: str) -> None:
    data = djarchive_style([(1, sha(b"x"), "ok")]) + line.encode() + b"\n"
    with pytest.raises(ManifestError, match=rf"m\.csv line 2: .*{message}"):
        parse_manifest(data, where="m.csv")


def test_non_utf8_name_round_trips_as_bytes(tmp_path: Path) -> None:
    raw = b"caf\xe9.txt"  # latin-1, not UTF-8
    (tmp_path / os.fsdecode(raw)).write_bytes(b"x")
    manifest, _ = build_manifest(tmp_path)
    data = manifest.to_bytes()
    assert raw in data
    back = parse_manifest(data, where="m")
    assert back == manifest
    assert djarchive_unreadable(os.fsdecode(raw)) == "it is not valid UTF-8"


# --- trees -------------------------------------------------------------------------------


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"hello",
        "empty": b"",
        "deep/" + "/".join(f"d{i}" for i in range(30)) + "/leaf.bin": b"\x00" * 1000,
        'comma,and "quote".csv': b"1,2\n",
        "ünï/日本.txt": "héllo".encode(),
    }
    for rel, data in files.items():
        write(root, rel, data)
    write(root, ".hidden", b"secret")
    write(root, "sub/.cache/x", b"cache")
    write(root, ".ferry/other-state", b"ours")
    return files


def test_manifest_of_a_tree_lists_files_sorted_without_dotfiles_or_state(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    manifest, digest = build_manifest(tmp_path)
    assert [r.path for r in manifest] == sorted(files)
    for r in manifest:
        assert (r.size, r.sha256) == (len(files[r.path]), sha(files[r.path]))
    assert digest.hashed_files == len(files)
    with_dots, _ = build_manifest(tmp_path, ScanOptions(include_dotfiles=True))
    assert {".hidden", "sub/.cache/x"} <= {r.path for r in with_dots}
    assert not any(r.path.startswith(".ferry") for r in with_dots)


def test_excludes_match_names_or_whole_paths(tmp_path: Path) -> None:
    make_tree(tmp_path)
    write(tmp_path, "x.tmp", b"t")
    write(tmp_path, "deep2/y.tmp", b"t")
    paths = [f.path for f in scan_tree(tmp_path, ScanOptions(excludes=("*.tmp", "deep/*")))]
    assert "x.tmp" not in paths and "deep2/y.tmp" not in paths
    assert not any(p.startswith("deep/") for p in paths)
    assert "a.txt" in paths


def test_rerun_over_unchanged_tree_hashes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = make_tree(tmp_path)
    first, d1 = build_manifest(tmp_path)
    assert d1.hashed_files == len(files)
    calls: list[str] = []
    real = hashing.hash_file_once

    def counting(full: Path, *args: object, **kwargs: object) -> tuple[dict[str, str], list[bytes]]:
        calls.append(str(full))
        return real(full, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hashing, "hash_file_once", counting)
    second, d2 = build_manifest(tmp_path)
    assert second == first and d2.hashed_files == 0 and calls == []
    # A changed file (same size, other mtime) is hashed again, and only it.
    write(tmp_path, "a.txt", b"HELLO", old=False)
    os.utime(tmp_path / "a.txt", (OLD + 5, OLD + 5))
    third, d3 = build_manifest(tmp_path)
    assert d3.hashed_files == 1 and calls == [str(tmp_path / "a.txt")]
    assert third.get("a.txt") == ManifestRow("a.txt", 5, sha(b"HELLO"))
    build_manifest(tmp_path, rehash=True)
    assert len(calls) == 1 + len(files)


def test_fresh_files_are_not_trusted_by_the_state(tmp_path: Path) -> None:
    write(tmp_path, "new", b"data", old=False)  # mtime = now: could still change in this tick
    build_manifest(tmp_path)
    assert build_manifest(tmp_path)[1].hashed_files == 1


def test_state_keys_on_inode(tmp_path: Path) -> None:
    write(tmp_path, "f", b"one")
    build_manifest(tmp_path)
    # Same size and mtime, other content and inode: a replacing copy must be hashed again.
    os.link(tmp_path / "f", tmp_path / "keep")  # the old inode stays in use: the new f gets another
    (tmp_path / "f").unlink()
    write(tmp_path, "f", b"two")
    manifest, digest = build_manifest(tmp_path)
    assert manifest.get("f") == ManifestRow("f", 3, sha(b"two"))
    assert digest.hashed_files == 2  # f (new inode) and keep (a path the state has not seen)


def test_big_file_with_two_digests_uses_split_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checksums, "SPLIT_MIN", 1024)
    monkeypatch.setattr(checksums, "CHUNK", 4096)
    data = os.urandom(100_000)
    write(tmp_path, "big", data)
    write(tmp_path, "small", b"s")
    used: list[int] = []
    real = checksums._split_pass

    def spy(*args: object) -> int:
        used.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(checksums, "_split_pass", spy)
    digest = digest_tree(tmp_path, algorithms=("sha256", "md5"))
    assert used == [1]
    assert digest.checksums["big"] == {"sha256": sha(data), "md5": hashlib.md5(data).hexdigest()}
    assert digest.checksums["small"]["md5"] == hashlib.md5(b"s").hexdigest()


def test_symlink_leaving_the_tree_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write(root, "a", b"a")
    write(tmp_path, "outside", b"o")
    (root / "inner").symlink_to(root / "a")
    manifest, _ = build_manifest(root)
    assert manifest.get("inner") == ManifestRow("inner", 1, sha(b"a"))
    (root / "escape").symlink_to(tmp_path / "outside")
    with pytest.raises(UnsafePathError, match="escape points outside"):
        build_manifest(root)
    (root / "escape").unlink()
    (root / "dirlink").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="dirlink points outside"):
        build_manifest(root)


def test_state_that_cannot_be_written_is_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file-not-dir").write_text("in the way")
    state = TreeState(tmp_path / "file-not-dir" / "x" / "s.sqlite")
    assert "not usable" in caplog.text
    write(tmp_path, "d/a", b"a")
    digest = digest_tree(tmp_path / "d", state=state)
    assert digest.checksums["a"]["sha256"] == sha(b"a")


# --- verify ------------------------------------------------------------------------------


def test_verify_names_missing_extra_and_mismatching(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    manifest, _ = build_manifest(tmp_path)
    assert verify_tree(tmp_path, manifest).ok
    (tmp_path / "empty").unlink()
    write(tmp_path, "untracked", b"u")
    write(tmp_path, "a.txt", b"HELLO", old=False)  # same size, other content
    write(tmp_path, "ünï/日本.txt", b"short")
    write(tmp_path, ".dotfile-not-tracked", b"d")
    report = verify_tree(tmp_path, manifest)
    assert report.missing == ["empty"]
    assert report.extra == ["untracked"]
    assert [(m.path, m.field) for m in report.mismatched] == [("a.txt", "sha256"), ("ünï/日本.txt", "size")]
    assert not report.ok and report.checked == len(files)


def test_cli_manifest_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    make_tree(root)
    assert main(["manifest", str(root)]) == 0
    out = capsys.readouterr()
    assert "5 files" in out.out and "djarchive's own reader cannot read it back" in out.err
    assert read_manifest(root / MANIFEST_NAME) == build_manifest(root)[0]
    assert main(["verify", str(root)]) == 0
    assert "OK" in capsys.readouterr().out
    (root / "a.txt").unlink()
    write(root, "new\nline", b"n")
    assert main(["verify", str(root)]) == 1
    err = capsys.readouterr().err
    assert "missing: a.txt" in err and "extra (not in the manifest): 'new\\nline'" in err
    assert main(["verify", str(root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["missing"] == ["a.txt"] and report["extra"] == ["new\nline"] and report["ok"] is False


def test_cli_output_elsewhere_and_inside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    write(root, "a", b"a")
    assert main(["manifest", str(root), "--output", str(root / "list.csv")]) == 0
    assert [r.path for r in read_manifest(root / "list.csv")] == ["a"]
    assert main(["verify", str(root), "--manifest", str(root / "list.csv")]) == 0
    assert main(["manifest", str(root), "-o", str(tmp_path / "m.csv"), "--exclude", "a"]) == 0
    assert len(read_manifest(tmp_path / "m.csv")) == 1  # list.csv only


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path)]) == 2
    assert "no manifest at" in capsys.readouterr().err
    (tmp_path / MANIFEST_NAME).write_bytes(djarchive_style([(1, sha(b"x"), "a")] * 2))
    assert main(["verify", str(tmp_path)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["manifest", str(tmp_path / "nope")]) == 2
    root = tmp_path / "ds"
    write(root, "a", b"a")
    (root / "out").symlink_to(tmp_path / MANIFEST_NAME)
    assert main(["manifest", str(root)]) == 2
    assert "out points outside" in capsys.readouterr().err
    with pytest.raises(InputError):
        scan_tree(tmp_path / MANIFEST_NAME)
