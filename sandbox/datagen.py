"""Deterministic synthetic data for the sandbox: a scaled-down mirror of ``/eos/opendata``.

Given portal records (the fixture JSON format), write a file for every ``files[].uri`` at
``ROOT/eos/opendata/...`` with pseudo-random content derived from a seed and the path
(never ``os.urandom``: the same inputs give the same bytes, so checksums are stable), and
return the records rewritten to point at the local server, with the generated sizes and
checksums. Everything else in each record is kept as it was.

Content is produced in 1 MiB chunks: one random block per file, each chunk stamped with
its index so chunks differ; hashing happens in the same pass, so a 1 GiB file costs
one write and no memory.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ferry.core.checksums import MultiHasher
from ferry.core.model import uri_path

CHUNK = 1024 * 1024
EOS_PREFIX = "/eos/opendata/"


class DataGenError(ValueError):
    """A record cannot be mirrored (e.g. a URI outside /eos/opendata)."""


@dataclass(frozen=True)
class Scale:
    """How real sizes map to sandbox sizes: ``clamp(size * factor, minimum, maximum)``."""

    factor: float = 0.02
    minimum: int = 1024
    maximum: int = 64 * 1024 * 1024

    def apply(self, size: int) -> int:
        return max(self.minimum, min(self.maximum, int(size * self.factor)))


@dataclass(frozen=True)
class Generated:
    """One generated file: its path below the data root, size and hex digests."""

    path: str  # "/eos/opendata/..."
    size: int
    digests: Mapping[str, str]
    salt: int | None = None  # None: given content (write_bytes)

    @property
    def adler32(self) -> str:
        return self.digests["adler32"]


@dataclass
class DataGenerator:
    """Writes files under ``root`` and remembers them, so a path shared by records is written once."""

    root: Path
    seed: int = 1
    files: dict[str, Generated] = field(default_factory=dict)

    def local_path(self, path: str) -> Path:
        """``/eos/opendata/x`` -> ``ROOT/eos/opendata/x``, refusing anything that leaves ``ROOT/eos/opendata``."""
        pure = PurePosixPath(path)
        if not path.startswith(EOS_PREFIX) or ".." in pure.parts:
            raise DataGenError(f"path {path!r} is not below {EOS_PREFIX}")
        return self.root / pure.relative_to("/")

    def write(self, path: str, size: int, *, salt: int = 0, algorithms: tuple[str, ...] = ("adler32",)) -> Generated:
        """Write ``size`` deterministic bytes at ``path`` (``/eos/opendata/...``); blocking."""
        known = self.files.get(path)
        if (
            known is not None
            and (known.size, known.salt) == (size, salt)
            and all(a in known.digests for a in algorithms)
        ):
            return known
        target = self.local_path(path)
        _mkdirs(target.parent, self.root)
        rng = random.Random(f"{self.seed}:{salt}:{path}")
        block = bytearray(rng.randbytes(min(size, CHUNK)))
        hasher = MultiHasher(algorithms)
        tmp = target.with_name(target.name + ".gen")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            index, left = 0, size
            while left > 0:
                n = min(left, CHUNK)
                # Stamp the chunk index into the block so no two chunks are equal.
                if n >= 8:
                    block[:8] = index.to_bytes(8, "little")
                view = memoryview(block)[:n]
                os.write(fd, view)
                hasher.update(view)
                index, left = index + 1, left - n
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)  # readable by the unprivileged xrootd user whatever the umask
        os.replace(tmp, target)
        done = Generated(path, size, hasher.hexdigests(), salt)
        self.files[path] = done
        return done

    def write_bytes(self, path: str, data: bytes) -> Generated:
        """Write given content (index files); digests adler32 + sha1."""
        target = self.local_path(path)
        _mkdirs(target.parent, self.root)
        target.write_bytes(data)
        os.chmod(target, 0o644)
        hasher = MultiHasher(("adler32", "sha1"))
        hasher.update(data)
        done = Generated(path, len(data), hasher.hexdigests())
        self.files[path] = done
        return done

    def remove(self, path: str) -> None:
        self.local_path(path).unlink(missing_ok=True)


def _mkdirs(directory: Path, root: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    # World-searchable directories up to root, whatever the umask (xrootd runs unprivileged).
    d = directory
    while d != root and root in d.parents:
        os.chmod(d, 0o755)
        d = d.parent


def eos_path(uri: str, *, where: str = "") -> str:
    path = uri_path(uri)
    if not path.startswith(EOS_PREFIX):
        raise DataGenError(f"URI {uri!r} is not below {EOS_PREFIX}{' (' + where + ')' if where else ''}")
    return path


def root_uri(base_url: str, path: str) -> str:
    """``root://127.0.0.1:P`` + ``/eos/x`` -> ``root://127.0.0.1:P//eos/x`` (the EOS double slash)."""
    return f"{base_url.rstrip('/')}//{path.lstrip('/')}"


def mirror_records(
    records: Iterable[Mapping[str, Any]],
    gen: DataGenerator,
    *,
    base_url: str,
    scale: Scale = Scale(),
    max_files_per_record: int | None = None,
) -> list[dict[str, Any]]:
    """Generate every file of ``records`` and return copies pointing at ``base_url``.

    Each file gets ``uri = base_url//eos/opendata/...``, the generated ``size`` and
    ``checksum = adler32:<8 hex>``. ``max_files_per_record`` keeps only the first N files of
    each record (for quick tests over all fixtures); the record then lists only those.
    """
    out = []
    for record in records:
        rec = copy.deepcopy(dict(record))
        recid = str(rec.get("recid", "?"))
        files = rec.get("files")
        if isinstance(files, list):
            if max_files_per_record is not None:
                files = files[:max_files_per_record]
            new_files = []
            for i, entry in enumerate(files):
                path = eos_path(str(entry.get("uri", "")), where=f"record {recid}, files[{i}]")
                done = gen.write(path, scale.apply(int(entry.get("size") or 0)))
                new = dict(entry)
                new.update(uri=root_uri(base_url, path), size=done.size, checksum=f"adler32:{done.adler32}")
                new_files.append(new)
            rec["files"] = new_files
        out.append(rec)
    return out
