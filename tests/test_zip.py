"""Zipping: policy, deterministic splits, the bundle format, safety of what we read, the CLI."""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from download.manifest import ManifestEntry, load_manifest
from ferry.cli import main
from ferry.core.errors import QuotaError, UnsafePathError
from upload.zip.format import EMBEDDED_NAME, bundle_index, bundle_name, parse_embedded
from upload.zip.policy import ZipPolicy, decide_zip, parse_ext_list, split
from upload.zip.worker import inspect_bundle
from upload.zip.zipper import upload_keys, zip_executor, zip_record

MiB = 1024 * 1024


def make_record(root: Path, recid: str, files: Mapping[str, bytes], *, mtime_ns: int | None = None) -> Path:
    """A downloaded record: files under root/recid and a download manifest describing them."""
    rec = root / recid
    rec.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(rec, recid)
    for key, data in files.items():
        put_file(rec, manifest, key, data, mtime_ns=mtime_ns)
    manifest.save()
    return rec


def put_file(rec: Path, manifest: object, key: str, data: bytes, *, mtime_ns: int | None = None) -> None:
    path = rec / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    st = path.stat()
    sums = {"md5": hashlib.md5(data).hexdigest(), "adler32": f"{zlib.adler32(data):08x}"}
    manifest.put(ManifestEntry(key, st.st_size, st.st_mtime_ns, sums, source_uri=f"root://eos//x/{key}"))  # type: ignore[attr-defined]


def small_files(n: int, size: int = 3000, prefix: str = "run") -> dict[str, bytes]:
    return {f"{prefix}/f{i:04d}.dat": bytes([i % 251]) * size + str(i).encode() for i in range(n)}


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    executor = zip_executor(2)
    yield executor
    executor.shutdown()


# --- policy ---------------------------------------------------------------------------------


def test_threshold_and_target_limits() -> None:
    big = 50 * MiB
    assert not decide_zip([(f"f{i}", big) for i in range(20)]).zip  # 20 is not more than 20
    d = decide_zip([(f"f{i}", big) for i in range(21)])
    assert d.zip and "21 files > threshold 20" in d.reason and d.bundles == 1
    # A threshold above the target's file limit is lowered to it.
    d = decide_zip([(f"f{i}", big) for i in range(101)], threshold=500, max_files=100)
    assert d.zip and "lowered to the target's limit of 100" in d.reason
    assert not decide_zip([(f"f{i}", big) for i in range(100)], threshold=500, max_files=100).zip
    # Small median: zipped; too few files to gain anything: not.
    assert decide_zip([(f"f{i}", 1000) for i in range(6)]).zip
    assert "median" in decide_zip([(f"f{i}", 1000) for i in range(6)]).reason
    assert not decide_zip([(f"f{i}", 1000) for i in range(3)]).zip
    # Forced either way; "never" above the target limit cannot be uploaded at all.
    assert decide_zip([("a", big)], force=True).zip
    assert not decide_zip([(f"f{i}", 1000) for i in range(30)], force=False).zip
    with pytest.raises(QuotaError, match="150 files exceed"):
        decide_zip([(f"f{i}", 1000) for i in range(150)], force=False)
    # An earlier run's bundles keep the record zipped (only-the-bundle-left case).
    d = decide_zip([("a", big), ("b", big)], zipped_before=True, originals_missing=2)
    assert d.zip and "already zipped" in d.reason
    assert not decide_zip([]).zip
    # More bundles (+ manifest) than the target takes files.
    with pytest.raises(QuotaError, match="limit of 3 files"):
        decide_zip([(f"f{i}", 9000) for i in range(10)], force=True, max_files=3, max_bundle_size=20_000)


def test_policy_from_flags_and_extensions() -> None:
    assert parse_ext_list(".TXT, json,,") == frozenset({".txt", ".json"})
    p = ZipPolicy(deflate_ext=parse_ext_list(".txt"))
    assert p.deflates("a/B.TXT") and not p.deflates("a/b.root")
    with pytest.raises(ValueError):
        ZipPolicy(threshold=0)


def test_split_is_deterministic_and_bounded() -> None:
    files = [(f"k{i:03d}", 1000 + 37 * i) for i in range(200)]
    shuffled = files[::-1]
    a, b = split(files, 60_000), split(shuffled, 60_000)
    assert a == b and len(a) > 1
    assert [k for part in a for k in part] == sorted(k for k, _ in files)  # stable order by key
    sizes = dict(files)
    assert all(sum(sizes[k] for k in part) < 60_000 for part in a)
    with pytest.raises(QuotaError, match="huge"):
        split([("huge", 70_000)], 60_000)
    assert bundle_name("81009", 1) == "81009_bundle.zip" and bundle_name("81009", 2) == "81009_bundle_002.zip"
    assert bundle_index("81009", "81009_bundle_012.zip") == 12 and bundle_index("81009", "x_bundle.zip") is None


# --- building, and what the bundles hold -----------------------------------------------------------


async def test_build_split_bundles_with_manifests(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    files = small_files(40, size=3000)
    files["notes/readme.txt"] = b"text " * 2000
    rec = make_record(tmp_path, "81009", files)
    policy = ZipPolicy(max_bundle_size=60_000, deflate_ext=frozenset({".txt"}))
    result = await zip_record(rec, "81009", policy=policy, executor=pool)

    assert result.zipped and result.reason == "41 files > threshold 20"
    names = [b.key for b in result.bundles]
    assert names[:2] == ["81009_bundle.zip", "81009_bundle_002.zip"] and len(names) >= 3
    assert result.upload_keys == [*names, "81009_bundle_manifest.json"]
    assert os.getpid() not in result.worker_pids  # built in a worker process
    seen: dict[str, bytes] = {}
    for info in result.bundles:
        raw = info.path.read_bytes()
        assert info.md5 is None and len(raw) == info.size <= 60_000  # md5: computed by the upload
        with zipfile.ZipFile(info.path) as zf:
            assert zf.testzip() is None
            names_in = zf.namelist()
            assert names_in[-1] == EMBEDDED_NAME
            bundle, members = parse_embedded(zf.read(EMBEDDED_NAME), where="test")
            assert bundle == info.key and [m.key for m in members] == names_in[:-1]
            for m in members:
                data = zf.read(m.key)
                seen[m.key] = data
                assert m.md5 == hashlib.md5(data).hexdigest() and m.crc32 == f"{zlib.crc32(data):08x}"
            if "notes/readme.txt" in names_in:
                assert zf.getinfo("notes/readme.txt").compress_type == zipfile.ZIP_DEFLATED
            assert all(zf.getinfo(k).compress_type == zipfile.ZIP_STORED for k in names_in if k.endswith(".dat"))
    assert seen == files
    manifest = load_manifest(rec)
    assert upload_keys(manifest) == result.upload_keys
    for key in result.upload_keys:  # the uploader finds the size of each, trusted by size+mtime
        entry = manifest.entries[key]
        assert entry.size == (rec / key).stat().st_size and manifest.fresh_entry(key) is not None
    # No whole-bundle digest in the zip stage (the upload hashes a bundle while sending it);
    # the small bundle manifest carries its md5.
    assert all("md5" not in manifest.entries[k].checksums for k in names)
    bundle_manifest = manifest.entries["81009_bundle_manifest.json"]
    assert bundle_manifest.checksums == {"md5": hashlib.md5((rec / bundle_manifest.key).read_bytes()).hexdigest()}
    # Originals stay unless asked; the metadata folder is never zipped.
    assert all((rec / k).exists() for k in files)
    assert not any(".ferry" in k for k in seen)


async def test_same_input_same_bundles(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    # Same names and bytes, downloaded at different times (different mtimes), listed in
    # another order: byte-identical bundles, so a re-run after the staged copies were
    # deleted finds its published bundles unchanged on the target.
    files = small_files(30)
    a = make_record(tmp_path / "a", "7", files, mtime_ns=1_600_000_000 * 10**9)
    b = make_record(tmp_path / "b", "7", dict(reversed(list(files.items()))), mtime_ns=1_700_000_000 * 10**9)
    policy = ZipPolicy(max_bundle_size=40_000)
    ra = await zip_record(a, "7", policy=policy, executor=pool)
    rb = await zip_record(b, "7", policy=policy, executor=pool)
    assert [x.key for x in ra.bundles] == [x.key for x in rb.bundles]
    assert all(x.path.read_bytes() == y.path.read_bytes() for x, y in zip(ra.bundles, rb.bundles, strict=True))
    assert (a / "7_bundle_manifest.json").read_bytes() == (b / "7_bundle_manifest.json").read_bytes()


async def test_unsafe_archive_entries_are_refused(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    rec = make_record(tmp_path, "5", small_files(25))
    for evil in ("../evil", "/abs/evil", "a/../../evil"):
        with zipfile.ZipFile(rec / "5_bundle.zip", "w") as zf:
            zf.writestr("ok.dat", b"fine")
            zf.writestr(zipfile.ZipInfo(evil), b"gotcha")
        with pytest.raises(UnsafePathError, match="unsafe entry") as err:
            await zip_record(rec, "5", policy=ZipPolicy(), executor=pool)
        assert evil in str(err.value) and err.value.recid == "5"
        with pytest.raises(UnsafePathError):
            inspect_bundle(str(rec / "5_bundle.zip"), "5_bundle.zip", full_scan=True)
    assert not [p for p in tmp_path.rglob("*evil*")]  # noqa: ASYNC240 - nothing was extracted
    # A forged bundle manifest naming a path outside the folder is refused too.
    (rec / "5_bundle.zip").unlink()
    (rec / "5_bundle_manifest.json").write_text(
        '{"format": "dataferry-bundle-manifest", "version": 1, "recid": "5", "bundles": [{"name": "5_bundle.zip",'
        ' "files": [{"key": "../../etc/passwd", "size": 1, "crc32": "0", "md5": "0", "adler32": "0"}]}]}'
    )
    with pytest.raises(UnsafePathError, match="etc/passwd"):
        await zip_record(rec, "5", policy=ZipPolicy(), executor=pool)


# --- the command ------------------------------------------------------------------------------------


def test_cli_zip_dry_run_then_real(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = make_record(tmp_path, "42", small_files(25))
    before = sorted(p.name for p in rec.iterdir())
    manifest_bytes = (rec / ".ferry" / "manifest.json").read_bytes()
    assert main(["zip", "42", "--dest", str(tmp_path), "--dry-run", "--max-bundle-size", "40KB"]) == 0
    out = capsys.readouterr().out
    assert "(dry run) 42: zipped" in out and "built 42_bundle_002.zip" in out
    assert sorted(p.name for p in rec.iterdir()) == before  # a dry run changes nothing
    assert (rec / ".ferry" / "manifest.json").read_bytes() == manifest_bytes

    stats = tmp_path / "stats"
    code = main(["zip", "42", "--dest", str(tmp_path), "--delete-originals", "--stats-dir", str(stats)])
    assert code == 0
    out = capsys.readouterr().out
    assert "42: zipped, 25 files in 1 bundle(s): 25 files > threshold 20" in out and "deleted 25 originals" in out
    assert sorted(p.name for p in rec.iterdir()) == [".ferry", "42_bundle.zip", "42_bundle_manifest.json"]
    rows = [r for f in stats.glob("*.jsonl") for r in map(__import__("orjson").loads, f.read_bytes().splitlines())]
    done = [r for r in rows if r["stage"] == "zip" and r["status"] == "ok"]
    assert (
        done and done[0]["zip_used"] is True and done[0]["extra"]["archives"] == 1 and "threshold" in done[0]["reason"]
    )


def test_cli_zip_failures_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zip", "nope", "--dest", str(tmp_path)]) == 2
    assert "record nope" in capsys.readouterr().err
    rec = make_record(tmp_path, "43", small_files(22))
    assert main(["zip", "43", "--dest", str(tmp_path), "--delete-originals"]) == 0
    (rec / "43_bundle.zip").write_bytes((rec / "43_bundle.zip").read_bytes()[:5000])  # truncated, originals gone
    assert main(["zip", "43", "nope", "--dest", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "record 43" in err and "download them again" in err and "record nope" in err
    assert main(["zip", "../x", "--dest", str(tmp_path)]) == 2
    with pytest.raises(SystemExit) as exit_:  # argparse: usage error
        main(["zip", "43", "--dest", str(tmp_path), "--threshold", "0"])
    assert exit_.value.code == 2


def test_huge_file_only_matters_when_zipping() -> None:
    files = [("a", 5000), ("b", 9 * 10**9)]
    assert not decide_zip(files, max_bundle_size=10**6).zip  # not zipped: the bundle limit is irrelevant
    with pytest.raises(QuotaError, match="file b"):
        decide_zip(files, force=True, max_bundle_size=10**6)


def test_small_median_rule_follows_config() -> None:
    from ferry.core.config import config_from_mapping

    small = [(f"f{i}", 1000) for i in range(10)]
    on = ZipPolicy.from_config(config_from_mapping({}))
    off = ZipPolicy.from_config(config_from_mapping({"limits": {"zip_small_median_bytes": 0}}))
    assert decide_zip(small, threshold=on.threshold, small_median_bytes=on.small_median_bytes).zip
    assert not decide_zip(small, threshold=off.threshold, small_median_bytes=off.small_median_bytes).zip


async def test_originals_behind_symlinks_stay_inside_the_record(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    # The zip worker resolves folders once and opens files with O_NOFOLLOW; a symlink falls
    # back to the full inside() check.
    files = small_files(22)
    rec = make_record(tmp_path, "44", files)
    outside = tmp_path / "secret.dat"
    outside.write_bytes(files["run/f0003.dat"])  # same bytes: only the path check can refuse it
    (rec / "run/f0003.dat").unlink()
    (rec / "run/f0003.dat").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="outside"):
        await zip_record(rec, "44", policy=ZipPolicy(), executor=pool)
    # A symlink to a file inside the record folder is followed.
    (rec / "run/f0003.dat").unlink()
    (rec / "copy").mkdir()
    (rec / "copy/f0003.dat").write_bytes(files["run/f0003.dat"])
    (rec / "run/f0003.dat").symlink_to(rec / "copy/f0003.dat")
    result = await zip_record(rec, "44", policy=ZipPolicy(), executor=pool)
    with zipfile.ZipFile(result.bundles[0].path) as zf:
        assert zf.read("run/f0003.dat") == files["run/f0003.dat"]
