"""Checksum values: parsed and normalised once, compared as values.

Real portal records carry ``adler32:`` values without their leading zeros, ``sha1:``
values and one misspelt ``alder32:``; all are accepted here so nothing downstream has
to know. ``MultiHasher`` computes several digests in one pass over streamed chunks.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

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

    def update(self, data: bytes | bytearray | memoryview) -> None:
        # Both hashlib and zlib take any buffer: no copy of the chunk is made.
        for digest in self._digests.values():
            digest.update(data)  # type: ignore[arg-type]
        self.size += len(data)

    def checksums(self) -> dict[str, Checksum]:
        return {a: Checksum(a, d.hexdigest()) for a, d in self._digests.items()}

    def hexdigests(self) -> dict[str, str]:
        return {a: d.hexdigest() for a, d in self._digests.items()}


CHUNK = 8 * 1024 * 1024


def hash_file(path: str, algorithms: tuple[str, ...] = ("adler32", "md5"), *, limit: int | None = None) -> MultiHasher:
    """Hash a file (or its first ``limit`` bytes) in chunks; blocking: call from a thread."""
    hasher = MultiHasher(algorithms)
    remaining = limit
    with open(path, "rb", buffering=0) as fh:
        while remaining is None or remaining > 0:
            want = CHUNK if remaining is None else min(CHUNK, remaining)
            chunk = fh.read(want)
            if not chunk:
                break
            hasher.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return hasher
