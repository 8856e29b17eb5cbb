"""A zipped record's state: what the bundles hold, kept in the download manifest.

``extra["zip"]`` of ``DEST/<recid>/.ferry/manifest.json`` says which member is in which
bundle (``STATE_VERSION``); the bundles and ``<recid>_bundle_manifest.json`` are entries
of the manifest beside the record's files. Read here (what to upload, what is bundled),
written here once every bundle is verified, before any original may be deleted.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from download.manifest import META_DIR, Manifest, ManifestEntry
from ferry.core.model import safe_relpath
from upload.zip.format import MemberRecord, bundle_index, is_zip_output, manifest_name, parse_members, record_manifest
from upload.zip.plan import BundleAction
from upload.zip.policy import ZipDecision
from upload.zip.worker import BuiltBundle, Inspection

STATE_KEY = "zip"
STATE_VERSION = 1


@dataclass(frozen=True)
class BundleInfo:
    """A file the uploader sends for a zipped record (a bundle or the bundle manifest)."""

    path: Path
    size: int
    md5: str | None  # None for a bundle until an upload computed it (then in the manifest)
    entries: int  # member files inside (0 for the bundle manifest)

    @property
    def key(self) -> str:
        return self.path.name


@dataclass
class ZipResult:
    recid: str
    zipped: bool
    reason: str
    bundles: list[BundleInfo] = field(default_factory=list)
    manifest: BundleInfo | None = None  # <recid>_bundle_manifest.json
    actions: list[str] = field(default_factory=list)  # what was done (or would be, in a dry run)
    upload_keys: list[str] = field(default_factory=list)  # what the uploader sends, in order
    file_count: int = 0
    bytes_written: int = 0
    dry_run: bool = False
    worker_pids: set[int] = field(default_factory=set)

    @property
    def archive_count(self) -> int:
        return len(self.bundles)


def zip_state(manifest: Manifest) -> dict[str, list[MemberRecord]] | None:
    """bundle name -> members recorded by an earlier run, or None if never zipped."""
    raw = manifest.extra.get(STATE_KEY)
    if not isinstance(raw, dict) or not isinstance(raw.get("bundles"), dict):
        return None
    where = f"manifest of record {manifest.recid}, extra.zip"
    return {
        safe_relpath(name, where=where): parse_members(rows, where=f"{where}.{name}")
        for name, rows in raw["bundles"].items()
    }


def is_zipped(manifest: Manifest) -> bool:
    return bool(zip_state(manifest))


def data_keys(manifest: Manifest) -> list[str]:
    """The record's own files: not our bundles and bundle manifest, nothing under ``.ferry/``
    (the metadata JSON lives there and is never zipped)."""
    return sorted(
        k for k, e in manifest.entries.items() if not is_output(manifest.recid, k, e) and k.split("/", 1)[0] != META_DIR
    )


def bundled_keys(manifest: Manifest) -> set[str]:
    """Data files held in recorded bundles: a resumed download need not fetch them again."""
    return {m.key for rows in (zip_state(manifest) or {}).values() for m in rows}


def upload_keys(manifest: Manifest) -> list[str]:
    """What the uploader sends for this record: the bundles + bundle manifest, or the files.

    Each key has a manifest entry (``manifest.entries[key]``) with its size; data files and
    the bundle manifest carry md5, a bundle only once an upload has computed it.
    """
    state = zip_state(manifest)
    if not state:
        return data_keys(manifest)
    names = sorted(state, key=lambda n: bundle_index(manifest.recid, n) or 0)
    return [*names, manifest_name(manifest.recid)]


def is_output(recid: str, key: str, entry: ManifestEntry) -> bool:
    return entry.source_uri is None and is_zip_output(recid, key)


# --- writing it ---


def forget_bundles(record_dir: Path, recid: str, manifest: Manifest, names: Sequence[str]) -> None:
    """Our bundles and bundle manifest removed, and the zip state with them (zipping is off)."""
    for name in [*names, manifest_name(recid)]:
        (record_dir / name).unlink(missing_ok=True)
    for key in [k for k, e in manifest.entries.items() if is_output(recid, k, e)]:
        manifest.drop(key)
    manifest.extra.pop(STATE_KEY, None)
    manifest.save()


async def record_state(
    record_dir: Path,
    recid: str,
    manifest: Manifest,
    plan: Mapping[str, Sequence[str]],
    actions: Sequence[BundleAction],
    built: Mapping[str, BuiltBundle],
    inspections: Mapping[str, Inspection],
    decision: ZipDecision,
    result: ZipResult,
) -> None:
    """Write the bundle manifest beside the bundles and the state into the download manifest.

    Saved before any original is deleted, so a crash after this point still knows the
    record is zipped and where each file is.
    """
    rows: dict[str, list[MemberRecord]] = {}
    facts: dict[str, ManifestEntry] = {}
    for a in actions:
        if a.kind == "remove":
            continue
        if a.name in built:
            b = built[a.name]
            rows[a.name] = list(b.members)
            facts[a.name] = ManifestEntry(a.name, b.size, b.mtime_ns, {})  # md5: computed by the upload
        else:  # kept: verified now (scanned) or trusted by size+mtime since it was verified
            ins = inspections[a.name]
            rows[a.name] = list(ins.members)
            facts[a.name] = _kept_entry(manifest.entries.get(a.name), ins)
    # Sizes and the members' checksums; no bundle md5 (the target reports it for each
    # file), so these bytes depend only on the bundles' contents.
    doc = {name: {"size": facts[name].size, "files": [m.to_json() for m in rows[name]]} for name in plan}
    data = record_manifest(recid, doc)
    mpath, mst = await asyncio.to_thread(_write_atomic, record_dir / manifest_name(recid), data)
    md5 = hashlib.md5(data).hexdigest()  # a few KB: cheap here, and the upload need not hash it

    for key in [k for k, e in manifest.entries.items() if is_output(recid, k, e) and k not in plan]:
        manifest.drop(key)
    for name in plan:
        manifest.put(facts[name])
    manifest.put(ManifestEntry(mpath.name, len(data), mst.st_mtime_ns, {"md5": md5}))
    manifest.extra[STATE_KEY] = {
        "version": STATE_VERSION,
        "reason": decision.reason,
        "manifest": mpath.name,
        "bundles": {name: [m.to_json() for m in rows[name]] for name in plan},
    }
    await asyncio.to_thread(manifest.save)
    result.bundles = [
        BundleInfo(record_dir / name, facts[name].size, facts[name].checksums.get("md5"), len(rows[name]))
        for name in plan
    ]
    result.manifest = BundleInfo(mpath, len(data), md5, 0)
    result.upload_keys = [*plan, mpath.name]


def _kept_entry(recorded: ManifestEntry | None, ins: Inspection) -> ManifestEntry:
    """The manifest entry of a bundle kept as it is.

    Its md5 (learnt by an earlier upload) is kept only while the file has the size and
    mtime it had then: a bundle that was rewritten (even if it verifies now) loses it, and
    the next upload computes it again.
    """
    if recorded is not None and (recorded.size, recorded.mtime_ns) == (ins.size, ins.mtime_ns):
        return ManifestEntry(recorded.key, recorded.size, recorded.mtime_ns, dict(recorded.checksums))
    return ManifestEntry(ins.name, ins.size, ins.mtime_ns, {})


def _write_atomic(path: Path, data: bytes) -> tuple[Path, os.stat_result]:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, path.stat()
