"""An archive is any target: ``ARCHIVE/NAME/REV/<path>`` plus ``ARCHIVE/NAME/REV/djarchive-manifest.csv``.

Each revision is one record of the target, with the id ``NAME/REV`` and the dataset's
paths as file keys; its manifest is uploaded last and its presence means "complete".
Everything here speaks ``upload.targets.base``: a local folder, S3 or any target that
declares ``record_paths`` (a record ``NAME/REV`` is that folder, its files straight under
it), ``listing`` (``RecordLister``) and can stream a stored file back (``FileReader``)
works the same way; nothing asks which kind of target it is. Where the bytes go is the
target's layout; which layout an archive needs is decided here, in the URL table below.

``ARCHIVE`` on the command line: a configured target name, a URL whose scheme names a
target type (``s3://bucket/prefix``: an S3 target in its ``archive`` layout,
``file:///path``), or a local folder path. A configured target must be able to hold an
archive as configured (an S3 one: ``layout = "archive"``); it is never silently changed.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

from archive.manifest import MANIFEST_NAME, Manifest, parse_manifest
from archive.names import check_name, target_config
from ferry.core.checksums import HEX_LENGTHS, Checksum, choose_hash, new_digest
from ferry.core.config import Config
from ferry.core.errors import InputError, TargetError
from upload.targets import make_target
from upload.targets.base import FileReader, RecordLister, RemoteFile, RemoteRecord, SizeLister, Target

MAX_MANIFEST_BYTES = 1 << 30  # a manifest of ~10 million files; anything bigger is not one


def open_archive(spec: str, config: Config) -> Target:
    tcfg = target_config(spec, config)
    target = make_target(tcfg, config.limits, token=tcfg.token(), limiter=None)
    if not (target.abilities.record_paths and target.abilities.listing):
        raise InputError(
            f"archive {spec}: target {target.name} ({tcfg.type}) cannot hold an archive as configured: "
            "it needs records NAME/REV as folders with the files straight under them "
            '(for an s3 target: layout = "archive")'
        )
    return target


def archive_hash(target: Target) -> str:
    """The hash to verify stored files with: the target's best one that we can compute."""
    return choose_hash(target.abilities.hashes, [a for a in target.abilities.hashes if a in HEX_LENGTHS])


def bytes_checksum(algorithm: str, data: bytes) -> Checksum:
    d = new_digest(algorithm)
    d.update(data)
    return Checksum(algorithm, d.hexdigest())


def lister(target: Target, spec: str) -> RecordLister:
    if not target.abilities.listing or not isinstance(target, RecordLister):
        raise InputError(f"archive {spec}: target {target.name} cannot list what it holds")
    return target


def reader(target: Target, spec: str) -> FileReader:
    if not isinstance(target, FileReader):
        raise InputError(f"archive {spec}: target {target.name} cannot read files back")
    return target


async def listing(target: Target, rec: RemoteRecord, key: str) -> tuple[dict[str, int], RemoteFile | None]:
    """The sizes of the record's finished files, and ``key`` as stored with its checksums:
    a listing plus one stat where the target lists sizes cheaply (SizeLister: on S3 a LIST
    and one HEAD, not a HEAD per file), else ``list_files``."""
    if isinstance(target, SizeLister):
        sizes = await target.list_sizes(rec)
        return sizes, (await target.stat(rec.recid, key) if key in sizes else None)
    files = await target.list_files(rec)
    done = {k: f for k, f in files.items() if f.completed}
    return {k: f.size or 0 for k, f in done.items()}, done.get(key)


async def read_small(target: Target, rec: RemoteRecord, key: str, *, limit: int = MAX_MANIFEST_BYTES) -> bytes:
    parts: list[bytes] = []
    size = 0
    async with contextlib.aclosing(reader(target, target.name).read_file(rec, key)) as chunks:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise TargetError(f"{key} is larger than {limit} bytes: not a manifest", recid=rec.recid, file=key)
            parts.append(chunk)
    return b"".join(parts)


async def fetch_manifest(target: Target, rec: RemoteRecord, listed: RemoteFile) -> tuple[bytes, Manifest]:
    """The revision's manifest, checked against the size (and checksum) the target lists."""
    data = await read_small(target, rec, MANIFEST_NAME)
    if listed.size is not None and listed.size != len(data):
        raise TargetError(
            f"read {len(data)} bytes of the manifest, the archive lists {listed.size}",
            recid=rec.recid,
            file=MANIFEST_NAME,
        )
    for c in listed.checksums:
        if c.algorithm in HEX_LENGTHS and bytes_checksum(c.algorithm, data) != c:
            raise TargetError(f"the manifest read back does not match its {c}", recid=rec.recid, file=MANIFEST_NAME)
    return data, parse_manifest(data, where=f"{rec.recid}/{MANIFEST_NAME}")


@dataclass(frozen=True)
class Revision:
    name: str
    rev: str
    complete: bool

    @property
    def line(self) -> str:
        return f"{self.name},{self.rev}" + ("" if self.complete else ",incomplete")


async def revisions(target: Target, spec: str, name: str | None = None) -> list[Revision]:
    """Revisions the archive holds (of ``name``), each marked complete when its manifest is there."""
    prefix = f"{check_name('dataset name', name)}/" if name else ""
    out = []
    for recid in await lister(target, spec).list_records(prefix):
        ds, sep, rev = recid.partition("/")
        if not sep or "/" in rev:
            continue  # not NAME/REV: something else kept in the same place
        rec = await target.find(recid, recid)
        sizes = (await listing(target, rec, ""))[0] if rec is not None else {}
        out.append(Revision(ds, rev, MANIFEST_NAME in sizes))
    if name and not out:
        raise InputError(f"dataset {name!r} not found in archive {spec}")
    return out


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
