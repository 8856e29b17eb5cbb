"""Core model: checksums, safe paths, key assignment, config, stats events."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ferry.cli import COMMANDS, chosen_command
from ferry.cli import main as cli_main
from ferry.cli.memory import one_malloc_arena
from ferry.core.checksums import Checksum, MultiHasher, hash_file
from ferry.core.config import Limits, Secret, config_from_mapping
from ferry.core.errors import ChecksumFormatError, ConfigError, UnsafePathError
from ferry.core.model import assign_keys, inside, safe_relpath
from pipeline.target_wiring import make_target
from stats.events import StatsWriter, read_jsonl


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("adler32:18ab9196", "adler32:18ab9196"),
        ("adler32:abc12", "adler32:000abc12"),  # unpadded, as in real portal records
        ("ADLER32:ABC12", "adler32:000abc12"),
        ("alder32:1d8e2a3b", "adler32:1d8e2a3b"),  # the misspelling seen in one record
        ("sha1:" + "a" * 40, "sha1:" + "a" * 40),
        ("md5:" + "0" * 32, "md5:" + "0" * 32),
    ],
)
def test_checksum_parse_normalises(text: str, expected: str) -> None:
    assert str(Checksum.parse(text)) == expected


@pytest.mark.parametrize("text", ["", "crc64:abcd", "adler32:xyz", "md5:abc", "adler32:123456789", "deadbeef"])
def test_checksum_parse_rejects(text: str) -> None:
    with pytest.raises(ChecksumFormatError):
        Checksum.parse(text, where="record 1, file f")


def test_multihasher_matches_hashlib_and_zlib(tmp_path: Path) -> None:
    import hashlib
    import zlib

    data = bytes(range(256)) * 40_000
    p = tmp_path / "f"
    p.write_bytes(data)
    h = hash_file(str(p))
    assert h.size == len(data)
    assert h.hexdigests() == {"adler32": f"{zlib.adler32(data):08x}", "md5": hashlib.md5(data).hexdigest()}
    half = hash_file(str(p), limit=1000)
    assert half.size == 1000
    streamed = MultiHasher(("sha1",))
    streamed.update(memoryview(data)[:10])
    assert streamed.hexdigests()["sha1"] == hashlib.sha1(data[:10]).hexdigest()


@pytest.mark.parametrize("size", [0, 1000, 3 * 4096, 3 * 4096 + 17])
def test_hash_file_gives_part_md5s_in_the_same_read(tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole-file digests and the md5 of each 4096-byte part (the last one short; an empty
    file has none), as S3's multipart ETag needs them; chunks cross part boundaries."""
    import hashlib

    import ferry.core.checksums as checksums

    data = os.urandom(size)
    p = tmp_path / "f"
    p.write_bytes(data)
    monkeypatch.setattr(checksums, "CHUNK", 3000)  # reads that straddle the parts
    h = hash_file(str(p), ("md5", "sha1"), part_size=4096)
    assert h.size == size
    assert h.hexdigests() == {"md5": hashlib.md5(data).hexdigest(), "sha1": hashlib.sha1(data).hexdigest()}
    assert h.parts == [hashlib.md5(data[i : i + 4096]).digest() for i in range(0, size, 4096)]
    assert hash_file(str(p), ("md5",)).parts == []  # only when asked


def test_hash_file_keeps_each_digest_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three digests and the part md5s of a file of 400 small chunks: every digest gets its
    chunks in order (a pool shared by the helpers once ran chunk i+1 of a digest beside
    chunk i: 20 of 20 such runs gave wrong digests)."""
    import hashlib

    import ferry.core.checksums as checksums

    monkeypatch.setattr(checksums, "CHUNK", 3000)
    data = os.urandom(3000 * 400 + 17)
    p = tmp_path / "f"
    p.write_bytes(data)
    for _ in range(5):
        h = hash_file(p, ("md5", "sha1", "sha256"), part_size=4096)
        assert h.hexdigests() == {a: hashlib.new(a, data).hexdigest() for a in ("md5", "sha1", "sha256")}
        assert h.parts == [hashlib.md5(data[i : i + 4096]).digest() for i in range(0, len(data), 4096)]


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "a/../../x", "a\x00b", "a\\b", "C:x", ".", "./"])
def test_safe_relpath_refuses(key: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_relpath(key)


def test_inside_refuses_symlink_escape(tmp_path: Path) -> None:
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "link").symlink_to(tmp_path)
    assert inside(tmp_path / "rec", "a/b.txt") == (tmp_path / "rec" / "a" / "b.txt").resolve()
    with pytest.raises(UnsafePathError):
        inside(tmp_path / "rec", "link/escape")


def test_assign_keys_basenames_and_collisions() -> None:
    base = "root://eospublic.cern.ch//eos/opendata/alice"
    assert assign_keys([f"{base}/x/a.root", f"{base}/y/b.root"]) == ["a.root", "b.root"]
    assert assign_keys([f"{base}/r1/AO2D.root", f"{base}/r2/AO2D.root", f"{base}/r2/sub/c.txt"]) == [
        "r1/AO2D.root",
        "r2/AO2D.root",
        "r2/sub/c.txt",
    ]
    with pytest.raises(UnsafePathError):
        assign_keys([f"{base}/../../etc/passwd"])
    with pytest.raises(UnsafePathError):
        assign_keys([f"{base}/dir/"])


def test_config_layers_and_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text("s3cr3t\n")
    cfg = config_from_mapping(
        {"targets": {"nrp": {"type": "invenio", "url": "https://repo.example.org", "token_file": str(token_file)}}}
    )
    tok = cfg.target("nrp").token()
    assert isinstance(tok, Secret) and tok.reveal() == "s3cr3t"
    assert "s3cr3t" not in repr(cfg) + repr(tok) + str(tok)
    monkeypatch.setenv("NRP_TOKEN", "fromenv")
    cfg2 = config_from_mapping({"targets": {"nrp": {"type": "invenio", "url": "http://x", "token_env": "NRP_TOKEN"}}})
    tok2 = cfg2.target("nrp").token()
    assert tok2 is not None and tok2.reveal() == "fromenv"
    with pytest.raises(ConfigError, match="no target named 'zen'"):
        cfg.target("zen")
    # A type no registry knows is refused where the target is made, listing the known ones.
    unknown = config_from_mapping({"targets": {"x": {"type": "ftp"}}}).target("x")
    with pytest.raises(ConfigError, match=r"targets\.x\.type: unknown target type 'ftp' \(known: .*invenio"):
        make_target(unknown, Limits())
    with pytest.raises(ConfigError, match="unknown section"):
        config_from_mapping({"sources": {}})
    for bad in ({"targets": 5}, {"targets": {"x": "invenio"}}, {"limits": []}, {"source": {"cernopendata": 1}}):
        with pytest.raises(ConfigError, match="must be a table"):
            config_from_mapping(bad)
    with pytest.raises(ConfigError, match="no config file was read"):
        config_from_mapping({}).target("nrp")


def test_stats_writer_started_and_terminal_rows(tmp_path: Path) -> None:
    with StatsWriter(tmp_path, run_id="r1", redact=("tok123",)) as stats:
        with stats.open("download", "81009", "a.al", bytes=0) as ev:
            ev.bytes = 10
        ev2 = stats.open("upload", "81009", "b.al")
        ev2.close("failed", error=RuntimeError("bad tok123 here"))
        stats.record("zip", "skipped", "81009", reason="17 files <= threshold 20")
    rows = list(read_jsonl(tmp_path / "r1.jsonl"))
    assert [(r["stage"], r["status"]) for r in rows] == [
        ("download", "started"),
        ("download", "ok"),
        ("upload", "started"),
        ("upload", "failed"),
        ("zip", "skipped"),
    ]
    assert rows[1]["bytes"] == 10 and rows[1]["duration_s"] >= 0 and rows[1]["end"].endswith("Z")
    assert rows[3]["error_type"] == "RuntimeError" and "tok123" not in rows[3]["error"]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    csv_text = (tmp_path / "r1.csv").read_text()
    assert csv_text.count("\n") == 6 and "tok123" not in csv_text
    # A torn last line (crash mid-write) does not break reading.
    with open(tmp_path / "r1.jsonl", "ab") as fh:
        fh.write(orjson.dumps({"x": 1})[:-2])
    assert len(list(read_jsonl(tmp_path / "r1.jsonl"))) == 5


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["download", "1"], "download"),
        (["--log-level", "INFO", "--config", "x.toml", "bulk", "--all"], "bulk"),
        (["--config=x.toml", "stats", "summary"], "stats"),
        (["--help", "download"], None),
        (["--version"], None),
        (["downlod"], None),
        ([], None),
    ],
)
def test_chosen_command_finds_the_command_name(argv: list[str], expected: str | None) -> None:
    assert chosen_command(argv) == expected


def test_a_command_imports_only_what_it_needs() -> None:
    # Start-up time is part of every small download: `ferry download` must not pay for
    # aiohttp, the upload pipeline or the sandbox servers.
    code = (
        "import sys\n"
        "from ferry.cli import main\n"
        "try:\n    main(['download', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('aiohttp', 'pipeline.job', 'sandbox.stack', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for name in COMMANDS:
        assert name in text


def test_human_bytes_is_the_one_byte_formatter() -> None:
    # Imported here: this block was appended to the file; ferry.progress is the one formatter
    # that progress lines, dry-run plans, `ferry cache` and the stats summary all use.
    from ferry.progress import human_bytes

    assert [human_bytes(n) for n in (0, 999, 1000, 1500, 123_456_789, 10**9, 5 * 10**12)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "1.5 kB",
        "123.5 MB",
        "1.0 GB",
        "5.0 TB",
    ]
    assert human_bytes(123_456_789, digits=2) == "123.46 MB" and human_bytes(512, digits=2) == "512 B"
    assert human_bytes(None) == "-" and human_bytes(None, missing="?") == "?"


def test_one_malloc_arena_is_accepted_on_glibc() -> None:
    # ferry asks glibc for one malloc arena (faster and ~30 MB smaller downloads, see
    # ferry/memory.py); on glibc the call must take effect, elsewhere it must be a no-op.
    expected = platform.libc_ver()[0] == "glibc"
    assert one_malloc_arena() is expected
