from __future__ import annotations

from pathlib import Path

import pytest

from download.manifest import ManifestEntry, load_manifest, manifest_path
from ferry.core.errors import InputError, UnsafePathError


def test_manifest_roundtrip_and_freshness(tmp_path: Path) -> None:
    rec = tmp_path / "81009"
    rec.mkdir()
    f = rec / "a.al"
    f.write_bytes(b"hello")
    st = f.stat()
    m = load_manifest(rec)
    assert m.entries == {} and m.recid == "81009"
    m.put(
        ManifestEntry(
            "a.al", st.st_size, st.st_mtime_ns, {"adler32": "062c0215", "md5": "5d41402abc4b2a76b9719d911017c592"}
        )
    )
    m.save()
    again = load_manifest(rec)
    assert again.entries["a.al"].checksums["md5"] == "5d41402abc4b2a76b9719d911017c592"
    assert again.fresh_entry("a.al") is not None
    f.write_bytes(b"hellO!")  # size changes -> not fresh any more
    assert again.fresh_entry("a.al") is None
    assert again.fresh_entry("missing") is None


def test_manifest_corrupt_or_unsafe(tmp_path: Path) -> None:
    rec = tmp_path / "1"
    manifest_path(rec).parent.mkdir(parents=True)
    manifest_path(rec).write_text("{not json")
    with pytest.raises(InputError, match="corrupt"):
        load_manifest(rec)
    manifest_path(rec).write_text(
        '{"version": 1, "recid": "1", "files": {"../x": {"size": 1, "mtime_ns": 1, "checksums": {}}}}'
    )
    with pytest.raises(UnsafePathError):
        load_manifest(rec)
