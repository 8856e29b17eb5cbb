"""Where an S3 target's records and files live: its three layouts, as key arithmetic.

``versioned`` puts file ``key`` of record ``R`` at ``<prefix>/R/<key>/content`` (an
immutable copy per version; ``<prefix>/latest/<key>/content`` is the moving pointer the
mirror maintains by server-side copy); ``plain`` at ``<prefix>/<key>`` (directory pushes:
the whole prefix is one record); ``archive`` (``ferry archive``, djarchive's layout) takes
record ids ``NAME/REV`` and puts their files at ``<prefix>/NAME/REV/<key>``.

No requests here: every answer follows from the location, the layout and the names, and
a name that cannot be placed safely (``..``, an empty segment, a NUL) is refused, naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry.core.errors import InputError, UnsafePathError
from upload.targets.s3_client import S3Location
from upload.targets.s3_options import Layout

LATEST = "latest"  # the moving pointer's folder in the versioned layout
CONTENT = "content"  # last path segment of a versioned object (as Zenodo's download URLs)


def check_key(key: str, recid: str) -> None:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in key:
        raise UnsafePathError(f"file key {key!r} is not a safe relative path", recid=recid, file=key)


def archive_recid(recid: str) -> str:
    """A record id of the archive layout: ``NAME/REV``, two safe folder names."""
    parts = recid.split("/")
    if len(parts) != 2 or any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise InputError(f"record id {recid!r} is not NAME/REV, what the archive layout holds", recid=recid)
    return recid


@dataclass(frozen=True)
class Places:
    """Keys of one target's records and files."""

    location: S3Location
    layout: Layout

    def record_prefix(self, recid: str) -> str:
        """The folder (with a trailing '/') whose objects are this record's files."""
        if self.layout == "plain":
            return self.location.key("") + "/" if self.location.prefix else ""
        if self.layout == "archive":
            return self.location.key(archive_recid(recid)) + "/"
        if not recid or "/" in recid or recid in (".", ".."):
            raise InputError(f"record id {recid!r} cannot name a folder of the versioned layout", recid=recid)
        return self.location.key(recid) + "/"

    def source_record(self, recid: str) -> None:
        """A source record may not be called ``latest``: that folder is the moving pointer."""
        if self.layout == "versioned" and recid == LATEST:
            raise InputError(f"record id {recid!r} is reserved for the latest/ pointer", recid=recid)
        self.record_prefix(recid)

    def object_key(self, recid: str, key: str) -> str:
        check_key(key, recid)
        if self.layout == "plain":
            return self.location.key(key)
        if self.layout == "archive":
            return self.record_prefix(recid) + key
        return self.record_prefix(recid) + f"{key}/{CONTENT}"

    def file_key(self, recid: str, object_key: str) -> str | None:
        """The file key an object of this record stands for, or None when it is not one."""
        base = self.record_prefix(recid)
        if not object_key.startswith(base):
            return None
        rest = object_key[len(base) :]
        if self.layout != "versioned":
            # A key ending in '/' is a folder marker some tools write, not a file.
            return rest if rest and not rest.endswith("/") else None
        suffix = f"/{CONTENT}"
        return rest[: -len(suffix)] if rest.endswith(suffix) and len(rest) > len(suffix) else None
