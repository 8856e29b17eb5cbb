"""Checksum values: parsed and normalised once, compared as values.

Real portal records carry ``adler32:`` values without their leading zeros, ``sha1:``
values and one misspelt ``alder32:``; all are accepted here so nothing downstream has
to know. ``MultiHasher`` computes several digests in one pass over streamed chunks;
``hash_file`` is the one function that hashes a file (with part md5s too, when asked).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, cast

from ferry.core.errors import ChecksumFormatError

log = logging.getLogger(__name__)

# Hex digits per algorithm; adler32 values may arrive shorter (leading zeros dropped).
HEX_LENGTHS = {"adler32": 8, "md5": 32, "sha1": 40, "sha256": 64}
ALIASES = {"alder32": "adler32"}
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True, order=True)
class Checksum:
    algorithm: str
    value: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value}"

    @classmethod
    def parse(cls, text: str, *, default_algorithm: str | None = None, where: str = "") -> Checksum:
        """Parse ``alg:hex`` (or bare hex with ``default_algorithm``) into a normal form.

        ``where`` names the record/file for the error message.
        """
        if not isinstance(text, str) or not text.strip():
            raise ChecksumFormatError(f"empty or non-text checksum {text!r}{_at(where)}")
        raw = text.strip()
        if ":" in raw:
            algorithm, _, value = raw.partition(":")
            algorithm = algorithm.strip().lower()
        elif default_algorithm:
            algorithm, value = default_algorithm, raw
        else:
            raise ChecksumFormatError(f"checksum {raw!r} names no algorithm{_at(where)}")
        if algorithm in ALIASES:
            log.warning(
                "checksum %r uses misspelt algorithm %r, read as %r%s", raw, algorithm, ALIASES[algorithm], _at(where)
            )
            algorithm = ALIASES[algorithm]
        if algorithm not in HEX_LENGTHS:
            raise ChecksumFormatError(
                f"unsupported checksum algorithm {algorithm!r} in {raw!r}{_at(where)} "
                f"(supported: {', '.join(sorted(HEX_LENGTHS))})"
            )
        value = value.strip().lower()
        if value.startswith("0x"):
            value = value[2:]
        want = HEX_LENGTHS[algorithm]
        if not value or not _HEX.match(value):
            raise ChecksumFormatError(f"checksum {raw!r} is not hexadecimal{_at(where)}")
        if algorithm == "adler32" and len(value) < want:
            value = value.rjust(want, "0")
        if len(value) != want:
            raise ChecksumFormatError(
                f"checksum {raw!r} has {len(value)} hex digits, {algorithm} needs {want}{_at(where)}"
            )
        return cls(algorithm, value)


def choose_hash(target_hashes: Sequence[str], known: Iterable[str]) -> str:
    """The hash to verify a file with: the target's best one that we already know a value
    for, else the target's best (to be computed while the file is sent).

    The one place the pipeline negotiates hashes: a target lists what it reports, best
    first (InvenioRDM and Zenodo: md5; S3: md5 of the bytes; a directory: any), the local
    side what it computed while downloading (adler32 and md5 by default).
    """
    if not target_hashes:
        raise ValueError("a target must report at least one hash")
    have = set(known)
    for algorithm in target_hashes:
        if algorithm in have:
            return algorithm
    return target_hashes[0]


def _at(where: str) -> str:
    return f" ({where})" if where else ""


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


class _Adler32:
    """hashlib-like wrapper so adler32 streams through the same loop as md5."""

    __slots__ = ("_value",)

    def __init__(self, initial: int = 1) -> None:
        self._value = initial

    def update(self, data: bytes, /) -> None:
        self._value = zlib.adler32(data, self._value)

    def hexdigest(self) -> str:
        return f"{self._value:08x}"

    def copy(self) -> _Adler32:
        return _Adler32(self._value)


def new_digest(algorithm: str) -> _Digest:
    if algorithm == "adler32":
        return _Adler32()
    if algorithm in HEX_LENGTHS:
        return hashlib.new(algorithm)
    raise ChecksumFormatError(f"unsupported checksum algorithm {algorithm!r}")


class MultiHasher:
    """Feeds each chunk to several digests at once: one read, all checksums.

    hashlib releases the GIL for large buffers, so running ``update`` in a worker thread
    keeps the event loop free while the digests use the CPU.
    """

    def __init__(self, algorithms: tuple[str, ...] = ("adler32", "md5")) -> None:
        self.algorithms = tuple(dict.fromkeys(algorithms))
        self._digests = {a: new_digest(a) for a in self.algorithms}
        self.size = 0
        self.parts: list[bytes] = []  # part md5s, filled by ``hash_file(..., part_size=N)`` only
        self.after: os.stat_result | None = None  # the file's stat once read (``hash_file``)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        # Both hashlib and zlib take any buffer: no copy of the chunk is made.
        for digest in self._digests.values():
            digest.update(data)  # type: ignore[arg-type]
        self.size += len(data)

    def checksums(self) -> dict[str, Checksum]:
        return {a: Checksum(a, d.hexdigest()) for a, d in self._digests.items()}

    def hexdigests(self) -> dict[str, str]:
        return {a: d.hexdigest() for a, d in self._digests.items()}


CHUNK = 4 * 1024 * 1024  # two of these per file being hashed


class PartDigests:
    """The md5 of each ``part_size`` piece of a stream (an S3 multipart upload's parts)."""

    def __init__(self, part_size: int) -> None:
        if part_size <= 0:
            raise ValueError("part_size must be positive")
        self.part_size = part_size
        self.digests: list[bytes] = []
        self._current = hashlib.md5()
        self._have = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view.nbytes:
            take = min(view.nbytes, self.part_size - self._have)
            self._current.update(view[:take])
            self._have += take
            view = view[take:]
            if self._have == self.part_size:
                self._close_part()

    def finish(self) -> list[bytes]:
        """The digests, the last short part included (an empty stream has none)."""
        if self._have:
            self._close_part()
        return self.digests

    def _close_part(self) -> None:
        self.digests.append(self._current.digest())
        self._current, self._have = hashlib.md5(), 0


SPLIT_MIN = 64 * 1024 * 1024  # below this, a thread hand-off per chunk costs more than it saves
Sink = Callable[[memoryview], object]


def hash_file(
    path: str | os.PathLike[str],
    algorithms: Sequence[str] = ("adler32", "md5"),
    *,
    limit: int | None = None,
    part_size: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> MultiHasher:
    """Hash a file (or its first ``limit`` bytes), read once; blocking: call from a thread.

    The one function that hashes a file. ``part_size``: also the md5 of each part of that
    size (an S3 multipart upload's), as the returned hasher's ``parts``. ``on_bytes(n)``:
    called as bytes are read (progress). The hasher's ``after`` is the file's stat once read
    (a caller checks that it did not change meanwhile).

    Several digests of a file of ``SPLIT_MIN`` or more (or with parts) are fed each from its
    own thread: one sha256 or md5 cannot be split, but two take one core each (hashlib
    releases the GIL), so the file costs one pass, not the sum. Two reused buffers
    alternate: the next read fills one while the helpers still hash the other; memory is
    two ``CHUNK`` buffers whatever the size."""
    hasher = MultiHasher(tuple(algorithms))
    parts = PartDigests(part_size) if part_size is not None else None
    # hashlib and the adler32 wrapper take any buffer; their protocol says bytes only.
    sinks = [cast(Sink, d.update) for d in hasher._digests.values()]
    if parts is not None:
        sinks.append(parts.update)
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size if limit is None else limit
        split = len(sinks) > 1 and (size >= SPLIT_MIN or parts is not None)
        hasher.size = (_split_pass if split else _single_pass)(fh, sinks, limit, on_bytes)
        hasher.after = os.fstat(fh.fileno())
    if parts is not None:
        hasher.parts = parts.finish()
    return hasher


def _reads(fh: io.FileIO, buf: bytearray, remaining: int | None) -> memoryview | None:
    """The next chunk into ``buf`` (None at the end, or once ``remaining`` is 0)."""
    want = len(buf) if remaining is None else min(len(buf), remaining)
    n = fh.readinto(memoryview(buf)[:want]) if want else 0
    return memoryview(buf)[:n] if n else None


def _single_pass(fh: io.FileIO, sinks: list[Sink], limit: int | None, on_bytes: Callable[[int], None] | None) -> int:
    buf, total = bytearray(CHUNK), 0
    while (chunk := _reads(fh, buf, None if limit is None else limit - total)) is not None:
        for sink in sinks:
            sink(chunk)
        total += chunk.nbytes
        if on_bytes:
            on_bytes(chunk.nbytes)
    return total


def _split_pass(fh: io.FileIO, sinks: list[Sink], limit: int | None, on_bytes: Callable[[int], None] | None) -> int:
    """The first sink in this thread, each other in a helper thread of its own (one thread
    per sink keeps each sink's chunks in order: a shared pool could run chunk i+1 of a
    sink beside or before chunk i); two buffers alternate."""
    bufs = (bytearray(CHUNK), bytearray(CHUNK))
    first, rest = sinks[0], sinks[1:]
    pending: list[list[Future[object]]] = [[], []]
    total, i = 0, 0
    with contextlib.ExitStack() as stack:
        helpers = [stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="hash-split")) for _ in rest]
        try:
            while True:
                slot = i % 2
                for f in pending[slot]:
                    f.result()  # that buffer is free again
                chunk = _reads(fh, bufs[slot], None if limit is None else limit - total)
                if chunk is None:
                    break
                pending[slot] = [pool.submit(sink, chunk) for pool, sink in zip(helpers, rest, strict=True)]
                first(chunk)
                total += chunk.nbytes
                if on_bytes:
                    on_bytes(chunk.nbytes)
                i += 1
        finally:
            for futures in pending:
                for f in futures:
                    f.result()
    return total
