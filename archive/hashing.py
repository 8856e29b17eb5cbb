"""Hash the files of a tree: one streaming pass per file, both cores, bounded memory.

Files go to a pool of ``workers`` threads (2: the machine's cores), largest first so the
two big files of a revision run side by side instead of one after the other; hashlib
releases the GIL for large buffers, so the threads really run in parallel. Each file is
read by ``ferry.core.checksums.hash_file``, the project's one file-hash function (a big
file asked for several digests feeds each from its own thread; two reused buffers per
file, so memory is ``workers x 2 x CHUNK`` whatever the sizes). What this module adds: the
pool over the tree, progress hooks, the check that a file did not change since the scan,
and (``PartsWanted``) the md5 of each part of a file a target will send in parts, taken
in the same read, so the send does not hash it again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from ferry.core.checksums import hash_file
from ferry.core.errors import FerryError, InputError
from ferry.core.tree import FileStat
from ferry.progress import ProgressSink

WORKERS = 2


@dataclass(frozen=True)
class HashJob:
    path: str  # name in messages and results
    full: Path
    stat: FileStat  # as scanned: the file must still have this size when read


@dataclass
class PartsWanted:
    """Part md5s to compute in the same read as the digests: ``part_size(size)`` is the part
    size a target will send a file of that size in (None: sent whole); ``found`` gets path
    -> (part size, md5s), filled by the hashing threads before a file's ``on_done``."""

    part_size: Callable[[int], int | None]
    found: dict[str, tuple[int, list[bytes]]] = field(default_factory=dict)


class Hooks:
    """Progress hooks, called from the hashing threads (implementations must be thread-safe)."""

    def planned(self, files: int, nbytes: int) -> None:
        return None

    def started(self, path: str) -> None:
        return None

    def advanced(self, nbytes: int) -> None:
        return None

    def finished(self, path: str) -> None:
        return None


def hash_file_once(
    full: Path,
    algorithms: Sequence[str],
    *,
    name: str,
    expected: FileStat | None = None,
    on_bytes: Callable[[int], None] | None = None,
    part_size: int | None = None,
) -> tuple[dict[str, str], list[bytes]]:
    """Digests of one file, read once (``ferry.core.checksums.hash_file``), and the md5s of
    its ``part_size`` parts (none without it); InputError naming it when it is gone,
    unreadable, or changed since it was scanned."""
    try:
        hasher = hash_file(full, algorithms, on_bytes=on_bytes, part_size=part_size)
    except FileNotFoundError:
        raise InputError(f"{name} disappeared while the tree was read", file=name) from None
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror or exc}", file=name) from exc
    assert hasher.after is not None  # hash_file sets it
    after = FileStat.of(hasher.after)
    if expected is not None and (hasher.size != expected.size or after.mtime_ns != expected.mtime_ns):
        raise InputError(f"{name} changed while it was hashed (run again when it is complete)", file=name)
    return hasher.hexdigests(), hasher.parts


def hash_many(
    jobs: Sequence[HashJob],
    algorithms: Sequence[str],
    *,
    workers: int = WORKERS,
    hooks: Hooks | None = None,
    on_done: Callable[[str, int, dict[str, str]], None] | None = None,
    parts: PartsWanted | None = None,
) -> dict[str, dict[str, str]]:
    """Digests of every job by path. The first failure cancels what has not started and is
    raised once the running ones end (no thread is left reading). ``on_done(path, size,
    digests)``: called (in the calling thread) as each file's digests are ready."""
    hooks = hooks or Hooks()
    hooks.planned(len(jobs), sum(j.stat.size for j in jobs))
    order = sorted(jobs, key=lambda j: j.stat.size, reverse=True)
    results: dict[str, dict[str, str]] = {}
    sizes = {j.path: j.stat.size for j in jobs}

    def one(job: HashJob) -> tuple[str, dict[str, str]]:
        hooks.started(job.path)
        part_size = parts.part_size(job.stat.size) if parts is not None else None
        digests, part_md5s = hash_file_once(
            job.full, algorithms, name=job.path, expected=job.stat, on_bytes=hooks.advanced, part_size=part_size
        )
        if parts is not None and part_size is not None:
            parts.found[job.path] = (part_size, part_md5s)  # before its on_done, which may use them
        hooks.finished(job.path)
        return job.path, digests

    if not order:
        return results
    with ThreadPoolExecutor(max(1, min(workers, len(order))), thread_name_prefix="hash") as pool:
        futures = [pool.submit(one, j) for j in order]
        try:
            for fut in as_completed(futures):
                path, digests = fut.result()
                results[path] = digests
                if on_done is not None:
                    on_done(path, sizes[path], digests)
        except (FerryError, OSError, KeyboardInterrupt):
            for f in futures:
                f.cancel()
            raise
    return results


class ProgressHooks(Hooks):
    """Feeds a ``ferry.progress`` sink from the hashing threads, one update at a time."""

    def __init__(self, sink: ProgressSink) -> None:
        self._sink = sink
        self._lock = threading.Lock()

    def planned(self, files: int, nbytes: int) -> None:
        with self._lock:
            self._sink.add_totals(files=files, bytes=nbytes)

    def started(self, path: str) -> None:
        with self._lock:
            self._sink.file_started(path)

    def advanced(self, nbytes: int) -> None:
        with self._lock:
            self._sink.advance(nbytes)

    def finished(self, path: str) -> None:
        with self._lock:
            self._sink.file_finished(path, ok=True)
