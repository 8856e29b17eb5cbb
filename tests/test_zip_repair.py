"""Zipping after earlier runs: repair, update, the only-the-bundle-left case, safe deletion."""

from __future__ import annotations

import asyncio
import hashlib
import os
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from download.manifest import load_manifest, manifest_path
from ferry.core.errors import InputError, VerificationError
from tests.test_zip import make_record, put_file, small_files
from upload.zip.format import EMBEDDED_NAME, parse_embedded
from upload.zip.policy import ZipPolicy
from upload.zip.worker import inspect_bundle
from upload.zip.zipper import ZipResult, bundled_keys, is_zipped, upload_keys, zip_executor, zip_record

POLICY = ZipPolicy(max_bundle_size=60_000)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    executor = zip_executor(2)
    yield executor
    executor.shutdown()


def bundle_contents(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        _, members = parse_embedded(zf.read(EMBEDDED_NAME), where=str(path))
        assert [m.key for m in members] == zf.namelist()[:-1]  # embedded manifest is current
        return {m.key: zf.read(m.key) for m in members}


def all_contents(rec: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for p in sorted(rec.glob("*_bundle*.zip")):
        out.update(bundle_contents(p))
    return out


def assert_recorded(rec: Path, recid: str) -> None:
    """The download manifest's entries for our outputs match the files on disk (a bundle's
    md5 is left to the upload; one that is recorded must be right)."""
    manifest = load_manifest(rec, recid)
    for key in upload_keys(manifest):
        data = (rec / key).read_bytes()
        md5 = manifest.entries[key].checksums.get("md5")
        assert md5 in (None, hashlib.md5(data).hexdigest()), key
        assert md5 is not None or key.endswith(".zip"), key
        assert manifest.fresh_entry(key) is not None, key


def md5s(result: ZipResult) -> list[str]:
    """md5 of each bundle on disk now (the zip stage no longer computes it)."""
    return [hashlib.md5(b.path.read_bytes()).hexdigest() for b in result.bundles]


def data_offset(path: Path, name: str) -> int:
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        n, m = int.from_bytes(fh.read(2), "little"), int.from_bytes(fh.read(2), "little")
    return info.header_offset + 30 + n + m


async def test_truncated_bundle_is_rebuilt(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    files = small_files(30)
    rec = make_record(tmp_path, "1", files)
    first = await zip_record(rec, "1", policy=POLICY, executor=pool)
    before = md5s(first)
    victim = first.bundles[0].path
    victim.write_bytes(victim.read_bytes()[: first.bundles[0].size // 2])
    second = await zip_record(rec, "1", policy=POLICY, executor=pool)
    assert any(a.startswith(f"rebuilt {victim.name}") for a in second.actions)
    assert md5s(second) == before  # same bytes as before
    assert all_contents(rec) == files
    assert_recorded(rec, "1")


async def test_new_file_is_appended(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    files = small_files(25)
    rec = make_record(tmp_path, "2", files)
    await zip_record(rec, "2", policy=ZipPolicy(), executor=pool)
    manifest = load_manifest(rec)
    put_file(rec, manifest, "late/extra.dat", b"new data " * 100)
    manifest.save()
    result = await zip_record(rec, "2", policy=ZipPolicy(), executor=pool)
    assert result.actions[0] == "appended 1 files to 2_bundle.zip (1 new)"
    contents = bundle_contents(rec / "2_bundle.zip")
    assert contents == {**files, "late/extra.dat": b"new data " * 100}
    assert list(contents)[-1] == "late/extra.dat"  # appended after the existing entries
    assert_recorded(rec, "2")
    # A second run finds nothing to do and trusts the verified bundle without re-reading it.
    again = await zip_record(rec, "2", policy=ZipPolicy(), executor=pool)
    assert again.actions == ["kept 2_bundle.zip (26 files, unchanged since verified)"]


async def test_changed_file_is_replaced(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    files = small_files(30)
    rec = make_record(tmp_path, "3", files)
    first = await zip_record(rec, "3", policy=POLICY, executor=pool)
    before = md5s(first)
    changed = "run/f0003.dat"
    manifest = load_manifest(rec)
    put_file(rec, manifest, changed, b"re-downloaded, different content")  # as a new download would
    manifest.save()
    second = await zip_record(rec, "3", policy=POLICY, executor=pool)
    rebuilt = [a for a in second.actions if a.startswith("rebuilt")]
    n = first.bundles[0].entries
    assert rebuilt == [f"rebuilt 3_bundle.zip ({n} files, 1 changed, 0 no longer in the record, 0 new)"]
    assert any(a.startswith("kept 3_bundle_002.zip") for a in second.actions)  # the other one untouched
    assert md5s(second)[1] == before[1]
    assert all_contents(rec) == {**files, changed: b"re-downloaded, different content"}
    assert_recorded(rec, "3")


async def test_only_the_bundles_left_is_still_zipped(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    files = small_files(30)
    rec = make_record(tmp_path, "4", files)
    first = await zip_record(rec, "4", policy=POLICY, executor=pool, delete_originals=True)
    before = md5s(first)
    assert not any((rec / k).exists() for k in files) and not (rec / "run").exists()
    manifest = load_manifest(rec)
    assert is_zipped(manifest) and bundled_keys(manifest) == set(files)

    again = await zip_record(rec, "4", policy=POLICY, executor=pool)
    assert again.zipped and again.file_count == 30 and "already zipped" in again.reason
    assert again.upload_keys == first.upload_keys
    assert all(a.startswith("kept") for a in again.actions)

    # Even with the download manifest gone, the bundle manifest says what the record was.
    manifest_path(rec).unlink()
    lost = await zip_record(rec, "4", policy=POLICY, executor=pool)
    assert lost.zipped and lost.file_count == 30 and md5s(lost) == before
    # ... and with that gone too, the bundles' own embedded manifests do.
    manifest_path(rec).unlink()
    (rec / "4_bundle_manifest.json").unlink()
    lost = await zip_record(rec, "4", policy=POLICY, executor=pool)
    assert lost.zipped and lost.file_count == 30
    assert all_contents(rec) == files
    assert_recorded(rec, "4")


async def test_crc_check_catches_a_corrupted_byte(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    files = small_files(25)
    rec = make_record(tmp_path, "5", files)
    first = await zip_record(rec, "5", policy=ZipPolicy(), executor=pool)
    before = md5s(first)
    bundle = first.bundles[0].path
    st = bundle.stat()
    raw = bytearray(bundle.read_bytes())
    raw[data_offset(bundle, "run/f0007.dat") + 10] ^= 0x01
    bundle.write_bytes(bytes(raw))
    os.utime(bundle, ns=(st.st_atime_ns, st.st_mtime_ns))  # silent corruption: same size and mtime

    found = inspect_bundle(str(bundle), bundle.name, full_scan=True)
    assert found.problem is not None and "run/f0007.dat" in found.problem and "CRC32" in found.problem
    # Before deleting originals every bundle is read in full, so the damage is found and repaired.
    result = await zip_record(rec, "5", policy=ZipPolicy(), executor=pool, delete_originals=True)
    assert result.actions[0].startswith("rebuilt 5_bundle.zip") and "CRC32" in result.actions[0]
    assert md5s(result) == before
    assert all_contents(rec) == files and not (rec / "run").exists()


async def test_originals_kept_when_verification_fails(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    files = small_files(25)
    rec = make_record(tmp_path, "6", files)
    # An original differs from what was verified at download (same size, new mtime).
    (rec / "run/f0002.dat").write_bytes(b"X" * len(files["run/f0002.dat"]))
    with pytest.raises(VerificationError, match=r"run/f0002.dat differs from the verified download") as err:
        await zip_record(rec, "6", policy=ZipPolicy(), executor=pool, delete_originals=True)
    assert err.value.recid == "6"
    assert all((rec / k).exists() for k in files)  # nothing deleted
    assert not list(rec.glob("*.zip")) and not list((rec / ".ferry").glob("*.partial"))
    assert not is_zipped(load_manifest(rec))


async def test_damaged_bundle_with_originals_gone_is_an_error(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    files = small_files(25)
    rec = make_record(tmp_path, "7", files)
    first = await zip_record(rec, "7", policy=ZipPolicy(), executor=pool, delete_originals=True)
    before = md5s(first)
    bundle = first.bundles[0].path
    raw = bytearray(bundle.read_bytes())
    raw[data_offset(bundle, "run/f0004.dat")] ^= 0xFF
    bundle.write_bytes(bytes(raw))
    # Entries whose CRC still holds could stand in for their originals, but f0004 cannot.
    with pytest.raises(VerificationError, match=r"run/f0004.dat of bundle 7_bundle.zip is damaged"):
        await zip_record(rec, "7", policy=ZipPolicy(), executor=pool)
    assert bundle.read_bytes() == bytes(raw)  # left as it was for a human to look at
    # Once the file is downloaded again, the bundle is repaired from it and the other entries.
    manifest = load_manifest(rec)
    put_file(rec, manifest, "run/f0004.dat", files["run/f0004.dat"])
    manifest.save()
    result = await zip_record(rec, "7", policy=ZipPolicy(), executor=pool)
    assert result.actions[0].startswith("rebuilt 7_bundle.zip")
    assert md5s(result) == before and all_contents(rec) == files


async def test_event_loop_stays_free(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    rec = make_record(tmp_path, "8", small_files(400, size=20_000))
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    result = await zip_record(rec, "8", policy=ZipPolicy(), executor=pool)
    stop.set()
    await task
    assert result.worker_pids and os.getpid() not in result.worker_pids
    assert ticks > 1  # the loop ran other work while the bundle was written elsewhere


async def test_zipping_switched_off_with_originals_present(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    files = small_files(25)
    rec = make_record(tmp_path, "9", files)
    await zip_record(rec, "9", policy=ZipPolicy(), executor=pool)
    result = await zip_record(rec, "9", policy=ZipPolicy(force=False), executor=pool)
    assert not result.zipped and result.upload_keys == sorted(files)
    assert not list(rec.glob("9_bundle*")) and not is_zipped(load_manifest(rec))
    assert upload_keys(load_manifest(rec)) == sorted(files)


async def test_new_file_after_originals_deleted_rebuilds_from_bundle(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    files = small_files(25)
    rec = make_record(tmp_path, "10", files)
    await zip_record(rec, "10", policy=ZipPolicy(), executor=pool, delete_originals=True)
    (rec / ".ferry" / "10_bundle.zip.partial").write_bytes(b"left by a killed run")
    manifest = load_manifest(rec)
    put_file(rec, manifest, "late.dat", b"late")
    manifest.save()
    # Appending in place would risk the only copy of 25 files on a crash: rebuilt beside it instead.
    result = await zip_record(rec, "10", policy=ZipPolicy(), executor=pool)
    assert result.actions == ["rebuilt 10_bundle.zip (26 files, 1 new; originals gone, so not in place)"]
    assert all_contents(rec) == {**files, "late.dat": b"late"}
    assert not list((rec / ".ferry").glob("*.partial"))
    assert_recorded(rec, "10")


async def test_bundle_names_reserved(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    rec = make_record(tmp_path, "11", {**small_files(22), "11_bundle.zip": b"a source file by that name"})
    with pytest.raises(InputError, match=r"11_bundle\.zip has the name of a zip bundle"):
        await zip_record(rec, "11", policy=ZipPolicy(), executor=pool)
    assert (rec / "11_bundle.zip").read_bytes() == b"a source file by that name"


async def test_md5_learnt_by_an_upload_is_kept_while_the_bundle_is(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    # The upload records a bundle's md5 in the manifest; the zip stage keeps it for a bundle
    # it keeps unchanged (same size and mtime), and drops it for one it rewrites.
    files = small_files(25)
    rec = make_record(tmp_path, "9", files)
    first = await zip_record(rec, "9", policy=ZipPolicy(), executor=pool)
    name = first.bundles[0].key
    manifest = load_manifest(rec)
    entry = manifest.entries[name]
    assert "md5" not in entry.checksums
    manifest.put(replace(entry, checksums={"md5": md5s(first)[0]}))  # as the upload does
    manifest.save()
    kept = await zip_record(rec, "9", policy=ZipPolicy(), executor=pool)
    assert kept.actions[0].startswith("kept") and kept.bundles[0].md5 == md5s(first)[0]
    assert load_manifest(rec).entries[name].checksums == {"md5": md5s(first)[0]}
    manifest = load_manifest(rec)
    put_file(rec, manifest, "late.dat", b"late")
    manifest.save()
    appended = await zip_record(rec, "9", policy=ZipPolicy(), executor=pool)
    assert appended.actions[0].startswith("appended") and appended.bundles[0].md5 is None
    assert "md5" not in load_manifest(rec).entries[name].checksums
