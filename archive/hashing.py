"""Hash the files of a tree: one streaming pass per file, both cores, bounded memory.

Files go to a pool of ``workers`` threads (2: the machine's cores), largest first so the
two big files of a revision run side by side instead of one after the other; hashlib
releases the GIL for large buffers, so the threads really run in parallel. A sha256 of one
file cannot be split (each block depends on the previous one), so a big file asked for
several digests (sha256 + md5) feeds each digest from its own thread instead: the same
chunk, read once, goes to all of them. Every file is read into two reused buffers of
``CHUNK`` bytes, so memory is ``workers x 2 x CHUNK`` whatever the sizes.

Digests come from ``ferry.core.checksums.new_digest`` (the project's one set of them).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from ferry.core.checksums import new_digest
from ferry.core.errors import FerryError, InputError
from ferry.core.tree import FileStat
from ferry.progress import ProgressSink

CHUNK = 4 * 1024 * 1024
SPLIT_MIN = 64 * 1024 * 1024  # below this, thread hand-offs cost more than they save
WORKERS = 2


class _Digest(Protocol):  # what new_digest returns (hashlib objects, the adler32 wrapper)
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class HashJob:
    path: str  # name in messages and results
    full: Path
    stat: FileStat  # as scanned: the file must still have this size when read


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
) -> dict[str, str]:
    """Digests of one file, read once; InputError naming it when it changed meanwhile."""
    # hashlib and the adler32 wrapper take any buffer; checksums' protocol says bytes only.
    digests = [cast(_Digest, new_digest(a)) for a in algorithms]
    total = 0
    try:
        with open(full, "rb", buffering=0) as fh:
            size_hint = expected.size if expected else os.fstat(fh.fileno()).st_size
            if len(digests) > 1 and size_hint >= SPLIT_MIN:
                total = _split_pass(fh, digests, on_bytes)
            else:
                total = _single_pass(fh, digests, on_bytes)
            after = FileStat.of(os.fstat(fh.fileno()))
    except FileNotFoundError:
        raise InputError(f"{name} disappeared while the tree was read", file=name) from None
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror or exc}", file=name) from exc
    if expected is not None and (total != expected.size or after.mtime_ns != expected.mtime_ns):
        raise InputError(f"{name} changed while it was hashed (run again when it is complete)", file=name)
    return {a: d.hexdigest() for a, d in zip(algorithms, digests, strict=True)}


def _single_pass(fh: io.FileIO, digests: list[_Digest], on_bytes: Callable[[int], None] | None) -> int:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    while n := fh.readinto(buf):
        chunk = view[:n]
        for d in digests:
            d.update(chunk)
        total += n
        if on_bytes:
            on_bytes(n)
    return total


def _split_pass(fh: io.FileIO, digests: list[_Digest], on_bytes: Callable[[int], None] | None) -> int:
    """First digest in this thread, the others each in a helper; two buffers alternate so
    the next read fills one while the helpers still hash the other."""
    bufs = (bytearray(CHUNK), bytearray(CHUNK))
    first, rest = digests[0], digests[1:]
    pending: list[list[Future[None]]] = [[], []]
    total = 0
    with ThreadPoolExecutor(len(rest), thread_name_prefix="hash-split") as pool:
        try:
            i = 0
            while True:
                slot = i % 2
                for f in pending[slot]:
                    f.result()  # that buffer is free again
                n = fh.readinto(bufs[slot])
                if not n:
                    break
                chunk = memoryview(bufs[slot])[:n]
                pending[slot] = [pool.submit(d.update, chunk) for d in rest]
                first.update(chunk)
                total += n
                if on_bytes:
                    on_bytes(n)
                i += 1
        finally:
            for futures in pending:
                for f in futures:
                    f.result()
    return total


def hash_many(
    jobs: Sequence[HashJob],
    algorithms: Sequence[str],
    *,
    workers: int = WORKERS,
    hooks: Hooks | None = None,
    on_done: Callable[[str, int, dict[str, str]], None] | None = None,
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
        digests = hash_file_once(job.full, algorithms, name=job.path, expected=job.stat, on_bytes=hooks.advanced)
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
