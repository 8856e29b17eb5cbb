"""Sources: where records come from. Each system is one module behind ``download.base.Source``.

A source is named on the command line by a spec: ``RECID`` (the CERN portal, or the
``--records`` files), ``zenodo:ID`` / ``zenodo:concept:ID``, ``dir:PATH`` or a path, and
``s3://bucket/prefix``. ``split_spec`` turns it into a registry name and the id the
source resolves; the registry maps the name to ``module:open_source``, a function
``(deps: SourceDeps) -> Source``. A system joins with one registry line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ferry.core.errors import InputError
from ferry.core.registry import Registry

if TYPE_CHECKING:
    from download.base import Source
    from download.transport import Transport
    from ferry.core.config import Config, Limits
    from ferry.core.model import Record


@dataclass(frozen=True)
class SourceDeps:
    """What opening a source may need; each source takes what it uses."""

    config: Config
    limits: Limits
    transport: Transport
    portal: str | None = None  # --portal (CERN)
    records: Sequence[str] = ()  # --records FILE... (CERN)


class SourceOpener(Protocol):
    def __call__(self, deps: SourceDeps) -> Source: ...


SOURCES: Registry[SourceOpener] = Registry("source")
SOURCES.register("cernopendata", "download.sources.cernopendata:open_source")
SOURCES.register("zenodo", "download.sources.zenodo:open_source")
SOURCES.register("dir", "download.sources.local:open_source")
SOURCES.register("s3", "download.sources.s3:open_source", hint="pip install 'dataferry[s3]'")


def split_spec(spec: str) -> tuple[str, str]:
    """``(registry name, id to resolve)`` for a source spec; InputError when it names none.

    >>> split_spec("80509"), split_spec("zenodo:concept:7"), split_spec("./out")
    (('cernopendata', '80509'), ('zenodo', 'concept:7'), ('dir', './out'))
    """
    text = spec.strip()
    if not text:
        raise InputError("empty source (give a recid, zenodo:ID, dir:PATH, a path or s3://bucket/prefix)")
    if text.startswith("s3://"):
        return "s3", text
    if text.startswith(("/", "./", "../", "~")) or text in (".", ".."):
        return "dir", text
    name, sep, rest = text.partition(":")
    if sep and name in SOURCES and name != "cernopendata":
        if not rest:
            raise InputError(f"source {spec!r} names no id after {name}:")
        return name, rest
    if sep:
        known = ", ".join(n for n in SOURCES.names() if n != "cernopendata")
        raise InputError(f"unknown source {spec!r}: {name!r} is not a source (known: {known}, or a CERN recid)")
    return "cernopendata", text


def staging_name(record: Record) -> str:
    """The folder under ``DEST`` a record is staged in: the recid for the CERN portal (as
    always), ``<source>-<id>`` for any other source, so ``zenodo:123`` and CERN record 123
    never share ``DEST/123`` (their files, manifests and bundles would mix). CERN recids are
    digits only, so a prefixed name can never be one."""
    if record.source == "cernopendata":
        return record.recid
    return f"{record.source}-{record.recid}"


def open_source(name: str, deps: SourceDeps) -> Source:
    """The source registered as ``name``, opened with ``deps``."""
    return SOURCES.get(name)(deps)
