"""A directory as a target: ``type = "local"``, ``url = "/path"`` or ``file:///path``.

Each record is a folder ``<root>/<recid>/`` (a recid may hold ``/``: an archive's
``NAME/REV``), each file key a path inside it. A file is written through a temporary file
in ``<record>/.ferry/tmp/`` (fsync, rename, fsync folder), so a kill leaves the old file
or the whole new one, never a prefix under its key. Its checksums, computed from the bytes
as they are written, are kept beside the files in ``<record>/.ferry/archive-state.sqlite``
(``ferry.core.tree_state``), keyed by (key, size, mtime_ns, inode): a later edit of the file makes
it unknown again instead of wrongly verified. A put of a file that is already there with
the same size and checksum writes nothing.

No drafts, no publishing, no metadata documents: a folder is final as soon as it is
written (state ``open``). ``list_records`` lists the folders ``create`` made (they hold
``.ferry/record.json``); ``read_file`` streams a stored file back (archive downloads).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncGenerator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import aiofiles
import orjson

from ferry.core.atomic import AtomicWriter, atomic_write_bytes
from ferry.core.checksums import Checksum, MultiHasher
from ferry.core.config import TargetConfig
from ferry.core.errors import (
    ConfigError,
    FerryError,
    InputError,
    TargetError,
    TargetNotFound,
    UnsafePathError,
    VerificationError,
)
from ferry.core.model import inside, safe_relpath
from ferry.core.tree import STATE_DIR, FileStat, ScanOptions, scan_tree
from ferry.core.tree_state import TreeState
from upload.targets.base import (
    Abilities,
    BlockingOpen,
    BlockingStream,
    NotSupported,
    Progress,
    PublishOutcome,
    RemoteFile,
    RemoteRecord,
    TargetBase,
    TargetLimits,
    TransferType,
    Wiring,
)

HASHES = ("sha256", "md5")  # both computed on every write; sha256 first (archives use it)
CHUNK = 4 * 1024 * 1024
MARKER = "record.json"
_OPTIONS: frozenset[str] = frozenset()  # no type-specific options yet


def root_from_url(url: str, *, where: str) -> Path:
    """``/path``, ``./path`` or ``file:///path`` -> the folder; ConfigError otherwise."""
    text = url.strip()
    if text.startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{where}: a file:// URL names no host here, not {parts.netloc!r}")
        text = unquote(parts.path)
    elif "://" in text or not text:
        raise ConfigError(f"{where}: a local target's url is a folder path or file:///path, not {url!r}")
    return Path(text).expanduser()


class LocalTarget(TargetBase):
    """Records as folders under ``root``. Use from one event loop."""

    type = "local"

    def __init__(self, root: Path, *, name: str = "local") -> None:
        self.name = name
        self.root = Path(root)
        self.limits = TargetLimits(max_files=sys.maxsize, max_file_size=sys.maxsize, max_record_size=sys.maxsize)
        self.abilities = Abilities(hashes=HASHES, sub_paths=True, listing=True, record_paths=True)
        self._states: dict[Path, TreeState] = {}
        # Copies run here (not in the loop's default pool) so a cancelled one can still be
        # waited for and cleaned up; the pipeline bounds how many run at once.
        self._pool = ThreadPoolExecutor(8, thread_name_prefix=f"local-{name}")

    @classmethod
    def _configured(cls, config: TargetConfig, wiring: Wiring) -> Self:
        unknown = sorted(set(config.options) - _OPTIONS)
        if unknown:
            raise ConfigError(f"targets.{config.name}: unknown option(s) for a local target: {', '.join(unknown)}")
        return cls(root_from_url(config.url, where=f"targets.{config.name}.url"), name=config.name)

    def __repr__(self) -> str:
        return f"LocalTarget({self.name!r}, {str(self.root)!r})"

    # --- records --------------------------------------------------------------------------

    def _record_dir(self, recid: str) -> Path:
        rel = safe_relpath(recid, where=f"record id on target {self.name}")
        if STATE_DIR in rel.split("/"):
            raise UnsafePathError(f"record id {recid!r} uses the reserved name {STATE_DIR}", recid=recid)
        return inside(self.root, rel, where=f"record {recid}")

    def _record(self, recid: str) -> RemoteRecord | None:
        folder = self._record_dir(recid)
        return RemoteRecord(id=recid, recid=recid, state="open") if folder.is_dir() else None

    def plan_file(self, size: int) -> TransferType:
        return "L"

    async def find(self, recid: str, query: str) -> RemoteRecord | None:
        return self._record(recid)

    async def get(self, recid: str, record_id: str) -> RemoteRecord | None:
        return self._record(record_id)

    async def create(self, recid: str, body: Mapping[str, Any]) -> RemoteRecord:
        folder = self._record_dir(recid)
        marker = folder / STATE_DIR / MARKER
        try:
            if not marker.exists():
                await asyncio.to_thread(atomic_write_bytes, marker, orjson.dumps({"recid": recid}))
        except OSError as exc:
            raise TargetError(f"cannot create folder {folder}: {exc.strerror or exc}", recid=recid) from exc
        return RemoteRecord(id=recid, recid=recid, state="open")

    async def update_metadata(self, rec: RemoteRecord, body: Mapping[str, Any]) -> RemoteRecord:
        return rec  # a folder has no metadata document (abilities.metadata is False)

    async def list_records(self, prefix: str = "") -> list[str]:
        return await asyncio.to_thread(self._walk_records, prefix)

    def _walk_records(self, prefix: str) -> list[str]:
        found: list[str] = []
        if not self.root.is_dir():
            return found

        def walk(folder: Path, rel: str) -> None:
            if (folder / STATE_DIR / MARKER).is_file():
                found.append(rel)
                return  # a record's sub-folders are its files' folders, not records
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                return
            for e in entries:
                if e.is_dir(follow_symlinks=False) and e.name != STATE_DIR:
                    child = f"{rel}/{e.name}" if rel else e.name
                    if child.startswith(prefix) or prefix.startswith(child + "/"):
                        walk(Path(e.path), child)

        walk(self.root, "")
        return sorted(r for r in found if r and r.startswith(prefix))

    # --- files ----------------------------------------------------------------------------

    def _state(self, folder: Path) -> TreeState:
        state = self._states.get(folder)
        if state is None:
            state = self._states[folder] = TreeState.for_tree(folder)
        return state

    def _file_path(self, rec: RemoteRecord, key: str) -> tuple[Path, str]:
        folder = self._record_dir(rec.id)
        rel = safe_relpath(key, where=f"record {rec.recid}")
        if rel.split("/")[0] == STATE_DIR:
            raise UnsafePathError(f"file key {key!r} uses the reserved folder {STATE_DIR}", recid=rec.recid, file=key)
        return inside(folder, rel, where=f"record {rec.recid}"), rel

    def _remote(self, state: TreeState, key: str, st: FileStat) -> RemoteFile:
        known = state.lookup(key, st, ()) or {}
        checksums = tuple(Checksum(a, v) for a, v in sorted(known.items()))
        return RemoteFile(key=key, size=st.size, checksums=checksums, status="completed")

    async def list_files(self, rec: RemoteRecord) -> dict[str, RemoteFile]:
        folder = self._record_dir(rec.id)
        if not folder.is_dir():
            raise TargetNotFound(f"no folder {folder} on target {self.name}", recid=rec.recid)
        opts = ScanOptions(include_dotfiles=True, reserved=frozenset())
        try:
            files = await asyncio.to_thread(scan_tree, folder, opts)
        except InputError as exc:
            raise TargetError(f"cannot list {folder}: {exc.message}", recid=rec.recid) from exc
        state = self._state(folder)
        return {f.path: self._remote(state, f.path, f.stat) for f in files}

    async def put_file(
        self,
        rec: RemoteRecord,
        key: str,
        path: Path,
        size: int,
        expected: Checksum | None,
        progress: Progress | None = None,
    ) -> RemoteFile:
        dest, rel = self._file_path(rec, key)
        state = self._state(self._record_dir(rec.id))
        if expected is not None:
            there = self._existing(state, dest, rel)
            if there is not None and there.matches(size, expected):
                return there  # the same bytes are already there: nothing to write
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def report(n: int) -> None:
            if progress is not None:
                loop.call_soon_threadsafe(progress, n)

        algorithms = HASHES if expected is None or expected.algorithm in HASHES else (*HASHES, expected.algorithm)
        try:
            writer = self._open_writer(dest, rec)
        except OSError as exc:
            raise TargetError(f"cannot write {dest}: {exc.strerror or exc}", recid=rec.recid, file=rel) from exc
        copying = self._pool.submit(_copy, path, writer, algorithms, stop, report)
        try:
            st, digests = await asyncio.wrap_future(copying)
            self._check(rec, rel, size, expected, st.st_size, digests)
            # Recorded before the rename: a rename keeps inode and mtime, so after a kill
            # between the two the entry matches the finished file, or no file at all.
            state.put(rel, FileStat.of(st), digests)
            state.save()
            await asyncio.to_thread(writer.commit)
        except asyncio.CancelledError:
            # The copying thread stops at its next chunk; whenever it ends, its temp file goes.
            stop.set()
            copying.add_done_callback(lambda _: writer.abort())
            raise
        except OSError as exc:
            writer.abort()
            raise TargetError(f"cannot write {dest}: {exc.strerror or exc}", recid=rec.recid, file=rel) from exc
        except BaseException:
            writer.abort()
            raise
        return RemoteFile(rel, st.st_size, tuple(Checksum(a, v) for a, v in sorted(digests.items())), "completed")

    def _open_writer(self, dest: Path, rec: RemoteRecord) -> AtomicWriter:
        return AtomicWriter(dest, tmp_dir=self._record_dir(rec.id) / STATE_DIR / "tmp")

    def _existing(self, state: TreeState, dest: Path, rel: str) -> RemoteFile | None:
        try:
            st = dest.stat()
        except OSError:
            return None
        return self._remote(state, rel, FileStat.of(st))

    @staticmethod
    def _check(
        rec: RemoteRecord, rel: str, size: int, expected: Checksum | None, got: int, digests: dict[str, str]
    ) -> None:
        if got != size:
            raise VerificationError(
                f"{got} bytes read, {size} expected (the file changed or was cut)",
                expected=str(size),
                actual=str(got),
                recid=rec.recid,
                file=rel,
            )
        if expected is not None and digests[expected.algorithm] != expected.value:
            actual = Checksum(expected.algorithm, digests[expected.algorithm])
            raise VerificationError(
                f"{expected.algorithm} of the written file is {actual.value}, {expected.value} expected",
                expected=str(expected),
                actual=str(actual),
                recid=rec.recid,
                file=rel,
            )

    async def read_file(self, rec: RemoteRecord, key: str, *, start: int = 0) -> AsyncGenerator[bytes, None]:
        """The stored bytes of ``key`` from ``start``, in chunks (archive downloads).

        An async stream to an async consumer: aiofiles (each read in a worker thread, the
        same cost as asyncio.to_thread: bench/bench_aiofiles.py). Writes are not done this
        way: a put copies and hashes in ONE worker-thread job, with no hop per chunk."""
        src, rel = self._file_path(rec, key)
        try:
            fh = await aiofiles.open(src, "rb")
        except FileNotFoundError:
            raise TargetNotFound(f"no file {rel} on target {self.name}", recid=rec.recid, file=rel) from None
        except OSError as exc:
            raise TargetError(f"cannot read {src}: {exc.strerror or exc}", recid=rec.recid, file=rel) from exc
        try:
            if start:
                await fh.seek(start)
            while chunk := await fh.read(CHUNK):
                yield chunk
        finally:
            await fh.close()

    async def blocking_open(self, rec: RemoteRecord) -> BlockingOpen | None:
        """A worker thread reads the stored files straight from disk (ThreadReader); any
        trouble opening one (missing, unreadable, a bad key) is left to ``read_file``,
        which names it."""

        def open_at(key: str, start: int) -> BlockingStream | None:
            try:
                src, _ = self._file_path(rec, key)
                fh = open(src, "rb", buffering=0)  # noqa: SIM115  # the caller closes it
            except (OSError, FerryError):
                return None
            if start:
                fh.seek(start)
            return fh

        return open_at

    def blocking_done(self) -> None:
        """Nothing: each file is closed by its reader."""

    async def delete_file(self, rec: RemoteRecord, key: str) -> None:
        dest, rel = self._file_path(rec, key)
        try:
            await asyncio.to_thread(dest.unlink, missing_ok=True)
        except OSError as exc:
            raise TargetError(f"cannot delete {dest}: {exc.strerror or exc}", recid=rec.recid, file=rel) from exc
        state = self._state(self._record_dir(rec.id))
        state.forget(rel)
        state.save()

    async def publish(self, rec: RemoteRecord) -> PublishOutcome:
        raise NotSupported(f"target {self.name} is a folder: nothing to publish", recid=rec.recid)

    async def new_version(self, rec: RemoteRecord) -> RemoteRecord:
        raise NotSupported(f"target {self.name} is a folder: no versions", recid=rec.recid)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        for state in self._states.values():
            state.close()
        self._states.clear()


def _copy(
    src: Path, writer: AtomicWriter, algorithms: tuple[str, ...], stop: threading.Event, report: Any
) -> tuple[os.stat_result, dict[str, str]]:
    """Copy ``src`` into ``writer``, hashing the bytes written; blocking (a worker thread)."""
    hasher = MultiHasher(algorithms)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        fh = open(src, "rb", buffering=0)  # noqa: SIM115 - closed below, also on a stop
    except FileNotFoundError:
        raise InputError(f"no local file {src} to upload") from None
    with fh:
        while n := fh.readinto(buf):
            if stop.is_set():
                raise FerryError("upload cancelled")
            chunk = view[:n]
            writer.write(chunk)
            hasher.update(chunk)
            report(n)
    st = writer.flush()
    return st, hasher.hexdigests()
