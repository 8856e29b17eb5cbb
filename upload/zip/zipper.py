"""Conditional zipping of a record folder: decide, build/repair/update bundles, verify, record.

``await zip_record(record_dir, recid, policy=...)`` is the stage. It reads the download
manifest (``DEST/<recid>/.ferry/manifest.json``), decides by policy, and makes the bundles
on disk hold exactly the record's verified files: new bundles are built, damaged ones
rebuilt, new files appended, changed files replaced. The blocking work runs in a worker
process. Afterwards the download manifest lists the bundles (size and mtime, no md5: the
upload computes a bundle's md5 while it sends it and records it there) and
``<recid>_bundle_manifest.json`` (with md5), and ``extra["zip"]`` says which member is in
which bundle; ``upload_keys(manifest)`` tells the uploader what to send. That state is read
and written by ``upload.zip.state``.

A record zipped by an earlier run is recognised from that state (or the bundle manifest,
or the bundles' embedded manifests) even when the originals are gone: the member count is
the record's, not what is left on disk. Originals are deleted only on request, and only
after every bundle was verified in this run, made durable and recorded.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import select
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from download.manifest import META_DIR, Manifest, ManifestEntry, load_manifest
from ferry.core.errors import DiskFull, FerryError, InputError, NoFilesError, is_disk_full
from ferry.core.model import inside
from stats.events import StatsWriter
from upload.zip.format import (
    EMBEDDED_NAME,
    MemberRecord,
    bundle_index,
    is_zip_output,
    manifest_name,
    parse_record_manifest,
)
from upload.zip.plan import BundleAction, Member, Original, plan_actions, plan_assignment
from upload.zip.policy import ZipDecision, ZipPolicy, decide_zip
from upload.zip.state import (  # the state's names are the stage's API too
    STATE_KEY,
    STATE_VERSION,
    BundleInfo,
    ZipResult,
    bundled_keys,
    data_keys,
    forget_bundles,
    is_output,
    is_zipped,
    record_state,
    upload_keys,
    zip_state,
)
from upload.zip.worker import BuiltBundle, BundleJob, Inspection, fsync_file, inspect_bundle, write_bundle

log = logging.getLogger(__name__)

T = TypeVar("T")


def zip_executor(workers: int = 1) -> ProcessPoolExecutor:
    """A process pool for zip work. forkserver, not fork: the caller runs threads (event
    loop executors) and forking a threaded process can deadlock the child."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=exit_with,
        initargs=(os.getpid(),),
    )


def exit_with(owner: int) -> None:
    """In a pool worker: exit when ``owner`` (the command) does, however it ended.

    A command killed with -9 cannot shut its pool down, and an idle worker waits on its task
    queue forever (it holds that pipe's other end itself), which also keeps the forkserver
    alive: every killed bulk left three idle processes behind. A pidfd becomes readable when
    its process exits (Linux >= 5.3); elsewhere the worker lives as before."""
    try:
        fd = os.pidfd_open(owner)
    except (AttributeError, OSError):
        return  # no pidfd here, or the owner is already gone (then the pool is too)

    def wait() -> None:
        select.select([fd], [], [])
        os._exit(0)

    threading.Thread(target=wait, name="exit-with-owner", daemon=True).start()


# --- the stage -----------------------------------------------------------------------------


async def zip_record(
    record_dir: str | os.PathLike[str],
    recid: str,
    *,
    policy: ZipPolicy,
    executor: Executor | None = None,
    delete_originals: bool = False,
    dry_run: bool = False,
    stats: StatsWriter | None = None,
) -> ZipResult:
    """Decide, then build/repair/update this record's bundles in ``record_dir`` and verify them.

    ``executor``: a process pool shared by the pipeline (its size limits zip workers);
    without one a single-worker pool is made for this call. Raises ``FerryError``
    subclasses naming the record and file; nothing is deleted unless verified.
    """
    stats = stats or StatsWriter(None)
    event = stats.open("zip", recid)
    own = executor is None
    pool: Executor = executor if executor is not None else zip_executor(1)
    try:
        result = await _Zipper(Path(record_dir), recid, policy, pool, delete_originals, dry_run).run()
    except BaseException as exc:
        if isinstance(exc, FerryError) and exc.recid is None:
            exc.recid = recid
        event.close("failed", error=exc)
        raise
    finally:
        if own:
            await asyncio.to_thread(pool.shutdown)
    event.close(
        "dry-run" if dry_run else "ok",
        bytes=result.bytes_written,
        file_count=result.file_count,
        zip_used=result.zipped,
        reason=result.reason,
        archives=result.archive_count,
        actions=result.actions,
    )
    return result


class _Zipper:
    """One record's zip run; holds the facts gathered so the steps read in order."""

    def __init__(
        self, record_dir: Path, recid: str, policy: ZipPolicy, pool: Executor, delete_originals: bool, dry_run: bool
    ) -> None:
        self.dir = record_dir
        self.recid = recid
        self.policy = policy
        self.pool = pool
        self.delete_originals = delete_originals
        self.dry_run = dry_run
        self.pids: set[int] = set()

    async def _in_worker(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, _call, fn, args, kwargs)

    async def run(self) -> ZipResult:
        if not self.dir.is_dir():
            raise InputError(f"record folder {self.dir} does not exist; download the record first")
        manifest = await asyncio.to_thread(load_manifest, self.dir, self.recid)
        recorded = zip_state(manifest) or await asyncio.to_thread(self._beside_state) or {}
        inspections = await self._inspect(manifest, recorded)
        members = await asyncio.to_thread(self._members, manifest, recorded, inspections)
        missing = sum(1 for m in members.values() if m.original == "missing")
        previous = bool(recorded) or any(i.exists for i in inspections.values())
        p = self.policy
        decision = decide_zip(
            [(k, m.size) for k, m in members.items()],
            threshold=p.threshold,
            max_files=p.max_files,
            small_median_bytes=p.small_median_bytes,
            force=p.force,
            max_bundle_size=p.max_bundle_size,
            zipped_before=previous,
            originals_missing=missing,
        )
        if not decision.zip:
            return await self._not_zipped(manifest, decision, inspections, recorded)
        current = {
            name: [m.key for m in (ins.members if ins.problem is None and ins.exists else recorded.get(name, []))]
            for name, ins in inspections.items()
        }
        plan = plan_assignment(self.recid, members, current, p)
        actions = plan_actions(plan, members, inspections, p, recorded)
        result = ZipResult(self.recid, True, decision.reason, file_count=len(members), dry_run=self.dry_run)
        result.actions = [a.describe() for a in actions]
        if self.dry_run:
            result.upload_keys = [*plan, manifest_name(self.recid)]
            return result
        await asyncio.to_thread(self._clear_partials)
        # Wait for every bundle, failed or not, so no worker still writes when we return.
        outcomes = await asyncio.gather(
            *(self._execute(a) for a in actions if a.kind in ("build", "rebuild", "append")), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            raise errors[0]
        built = [o for o in outcomes if isinstance(o, BuiltBundle)]
        done = {b.name: b for b in built}
        result.bytes_written = sum(b.size for b in built)
        for a in actions:
            if a.kind == "remove":
                await asyncio.to_thread((self.dir / a.name).unlink, missing_ok=True)
        await record_state(self.dir, self.recid, manifest, plan, actions, done, inspections, decision, result)
        if self.delete_originals:
            n = await asyncio.to_thread(self._delete_originals, members, [self.dir / name for name in plan])
            result.actions.append(f"deleted {n} originals (all bundles verified)")
        result.worker_pids = self.pids | {b.worker_pid for b in built}
        return result

    # --- gathering facts ---

    def _clear_partials(self) -> None:
        """Half-written bundles a killed run left behind (never renamed, never trusted)."""
        for path in (self.dir / META_DIR).glob(f"{self.recid}_bundle*.zip.partial"):
            path.unlink(missing_ok=True)

    def _beside_state(self) -> dict[str, list[MemberRecord]] | None:
        path = self.dir / manifest_name(self.recid)
        try:
            return parse_record_manifest(path.read_bytes(), where=str(path))
        except FileNotFoundError:
            return None
        except InputError as exc:
            if type(exc).__name__ == "UnsafePathError":
                raise
            log.warning("record %s: ignoring unreadable %s: %s", self.recid, path.name, exc)
            return None

    async def _inspect(self, manifest: Manifest, recorded: Mapping[str, Any]) -> dict[str, Inspection]:
        """Inspect every bundle we know of or find: cheaply when its size+mtime match what we
        recorded after verifying it, else (or before deleting originals) every byte."""
        names = set(recorded)
        names.update(
            p.name for p in self.dir.glob(f"{self.recid}_bundle*.zip") if bundle_index(self.recid, p.name) is not None
        )
        found: dict[str, Inspection] = {}
        for name in sorted(names, key=lambda n: bundle_index(self.recid, n) or 0):
            trusted = manifest.fresh_entry(name) is not None
            full = not trusted or (self.delete_originals and not self.dry_run)
            ins = await self._in_worker(inspect_bundle, str(self.dir / name), name, full_scan=full)
            self.pids.add(ins.worker_pid)
            if ins.problem:
                log.warning("record %s: bundle %s is damaged: %s", self.recid, name, ins.problem)
            found[name] = ins
        return found

    def _members(
        self, manifest: Manifest, recorded: Mapping[str, Sequence[MemberRecord]], inspections: Mapping[str, Inspection]
    ) -> dict[str, Member]:
        """The record's data files from the download manifest; if it lists none (lost), from the
        bundles' own manifests. Each original is checked on disk: fresh, stale or missing."""
        out: dict[str, Member] = {}
        for key in data_keys(manifest):
            e = manifest.entries[key]
            if is_zip_output(self.recid, key) or key == EMBEDDED_NAME:
                raise InputError(f"file {key} has the name of a zip bundle or bundle manifest", file=key)
            if "md5" not in e.checksums or "adler32" not in e.checksums:
                raise InputError(f"manifest entry {key} lacks md5/adler32; download it again", file=key)
            out[key] = Member(key, e.size, e.checksums["md5"], e.checksums["adler32"], e.mtime_ns, self._original(e))
        if out:
            return out
        rows: dict[str, MemberRecord] = {}
        for name in sorted(set(recorded) | set(inspections), key=lambda n: bundle_index(self.recid, n) or 0):
            ins = inspections.get(name)
            source = ins.members if ins is not None and ins.problem is None and ins.exists else recorded.get(name, ())
            for m in source:
                rows.setdefault(m.key, m)
        for key, m in rows.items():
            on_disk = self._original(None, key)
            out[key] = Member(key, m.size, m.md5, m.adler32, 0, "stale" if on_disk != "missing" else "missing")
        if not out:
            raise NoFilesError(f"no verified downloaded files in {self.dir} and no bundles; download the record first")
        return out

    def _original(self, entry: ManifestEntry | None, key: str | None = None) -> Original:
        path = inside(self.dir, entry.key if entry else str(key), where=f"record {self.recid}")
        try:
            st = path.stat()
        except FileNotFoundError:
            return "missing"
        if entry is not None and entry.matches_stat(st):
            return "fresh"
        return "stale"

    # --- doing ---

    async def _execute(self, action: BundleAction) -> BuiltBundle:
        job = BundleJob(
            recid=self.recid,
            record_dir=str(self.dir),
            name=action.name,
            mode="append" if action.kind == "append" else "build",
            members=action.members,
            old_bundle=str(self.dir / action.name) if action.old_bundle else None,
            durable=self.delete_originals,
        )
        log.info("record %s: %s", self.recid, action.describe())
        try:
            return await self._in_worker(write_bundle, job)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            # The worker removed its .partial; what it needed is about the members' bytes.
            await asyncio.to_thread(self._clear_partials)
            raise DiskFull(
                f"zipping bundle {action.name}",
                path=self.dir / META_DIR / f"{action.name}.partial",
                needed=sum(m.size for m in action.members if m.source != "kept"),
                recid=self.recid,
                file=action.name,
            ) from exc

    async def _not_zipped(
        self,
        manifest: Manifest,
        decision: ZipDecision,
        inspections: Mapping[str, Inspection],
        recorded: Mapping[str, Any],
    ) -> ZipResult:
        result = ZipResult(self.recid, False, decision.reason, file_count=decision.file_count, dry_run=self.dry_run)
        stale = [name for name, ins in inspections.items() if ins.exists]
        if stale or recorded:
            # Zipping turned off while every original is still here: the bundles are derived
            # data of ours, so they go, and the record is uploaded file by file.
            result.actions = [f"removed {name} (not zipping: {decision.reason})" for name in stale]
            if not self.dry_run:
                await asyncio.to_thread(forget_bundles, self.dir, self.recid, manifest, stale)
        result.upload_keys = data_keys(manifest)
        return result

    def _delete_originals(self, members: Mapping[str, Member], bundles: Sequence[Path]) -> int:
        """Bundles were verified in this run (written or fully scanned) and recorded; make them
        durable, then remove the originals and the folders they leave empty."""
        for path in bundles:
            fsync_file(str(path))
        root = self.dir.resolve()
        n = 0
        for key, m in members.items():
            if m.original == "missing":
                continue
            path = inside(self.dir, key, where=f"record {self.recid}")
            path.unlink(missing_ok=True)
            n += 1
            parent = path.parent
            while parent != root and root in parent.parents:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent
        return n


def _call(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    """Module-level trampoline: picklable for the process pool, keyword arguments included."""
    return fn(*args, **kwargs)


__all__ = [
    "STATE_KEY",
    "STATE_VERSION",
    "BundleInfo",
    "ZipResult",
    "bundled_keys",
    "data_keys",
    "is_output",
    "is_zipped",
    "upload_keys",
    "zip_executor",
    "zip_record",
    "zip_state",
]
