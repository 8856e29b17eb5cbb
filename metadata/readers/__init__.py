"""Readers: one source record -> one neutral ``metadata.dataset.Dataset``.

``read(record)`` picks the reader by the record's source (``Record.source``) through a
registry, so every profile works for every source: a CERN Open Data record, a Zenodo
record or a local folder can go to InvenioRDM/NRP or Zenodo alike. A plain mapping (the
portal JSON, an API answer) is read as a CERN Open Data record, as before; pass
``source=`` to say otherwise. A source joins with one line: ``READERS.register(name,
"module:read")``.

Identity: a record is known on a target by its *source key* (``record_key``): the bare
recid for CERN Open Data (``81009``, what the profiles' queries always used), and
``<scheme>:<id>`` for every other source (``zenodo:123``, ``dir:run-2024``), so a Zenodo
record 123 is never mistaken for CERN record 123. ``split_key`` reads a key back;
``record_document`` is the source record as one JSON file (for targets that publish
nothing without a file).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ferry.core.errors import InputError
from ferry.core.registry import Registry

if TYPE_CHECKING:
    from metadata.dataset import Dataset

Reader = Callable[[Any], "Dataset"]

READERS: Registry[Reader] = Registry("metadata reader (record source)")
READERS.register("cernopendata", "metadata.readers.cernopendata:read")
READERS.register("zenodo", "metadata.readers.zenodo:read")
READERS.register("dir", "metadata.readers.directory:read")
READERS.register("local", "metadata.readers.directory:read")

DEFAULT_SOURCE = "cernopendata"
# Record.source -> the scheme its identifiers carry on a target ("local" and "dir" are one).
SCHEMES = {"cernopendata": "cernopendata", "zenodo": "zenodo", "dir": "dir", "local": "dir"}
# What a target identifier of each scheme may hold: digits for the repositories; a folder
# name without quotes, backslashes or control characters (it goes into a quoted query).
_ID_PATTERNS = {"cernopendata": r"[1-9][0-9]*", "zenodo": r"[1-9][0-9]*", "dir": r"[^\"\\\x00-\x1f]+"}
# A record too large for its target goes as a series of records (pipeline/oversize.py:
# ``oversize = "split"``); part i of n is known by its record's key + this suffix
# (``81009.part-1-of-3``, ``zenodo:123.part-2-of-3``), so each part is found again.
PART_SUFFIX = r"\.part-[1-9][0-9]*-of-[1-9][0-9]*"
_PART = re.compile(f"({PART_SUFFIX})$")
IDENTIFIER = re.compile("|".join(f"{s}:(?:{p})(?:{PART_SUFFIX})?" for s, p in _ID_PATTERNS.items()))


def source_of(record: Any) -> str:
    """The source a record came from: ``Record.source``; a plain mapping is a portal record."""
    if isinstance(record, Mapping):
        return DEFAULT_SOURCE
    source = getattr(record, "source", None)
    return source if isinstance(source, str) and source else DEFAULT_SOURCE


def read(record: Any, *, source: str | None = None) -> Dataset:
    """The neutral description of ``record``, by the reader registered for its source."""
    name = source or source_of(record)
    reader = READERS.get(name, where=f"record {getattr(record, 'recid', '?')}")
    return reader(record)


def scheme_of(source: str) -> str:
    try:
        return SCHEMES[source]
    except KeyError:
        raise InputError(f"no identifier scheme for records of source {source!r}", field="source") from None


def record_key(source: str, recid: str) -> str:
    """How the pipeline names a record to a profile's ``find_query``: ``81009``, ``zenodo:123``."""
    scheme = scheme_of(source)
    key = str(recid).strip() if scheme == DEFAULT_SOURCE else f"{scheme}:{str(recid).strip()}"
    split_key(key)  # refuse now what no query could carry
    return key


def split_key(key: str) -> tuple[str, str]:
    """``"81009"`` -> ``("cernopendata", "81009")``; ``"zenodo:123"`` -> ``("zenodo", "123")``.

    InputError naming the key when it is no identifier a target query can carry.
    """
    raw = str(key).strip()
    scheme, sep, ident = raw.partition(":")
    if not sep or scheme not in _ID_PATTERNS:
        scheme, ident = DEFAULT_SOURCE, raw
    part = _PART.search(ident)
    suffix = part.group(1) if part else ""
    ident = ident.removesuffix(suffix)
    if scheme != "dir":
        ident = ident.lstrip("0") or ident  # "081009" is recid 81009, as normalise_recid says
    if not re.fullmatch(_ID_PATTERNS[scheme], ident):
        what = "a positive integer" if scheme != "dir" else "a folder name without quotes or control characters"
        raise InputError(f"record id {raw!r} must be {what}", recid=raw, field="recid")
    return scheme, ident + suffix


def part_of(key: str) -> tuple[str, int, int] | None:
    """``"81009.part-2-of-3"`` -> ``("81009", 2, 3)``: the whole record's key and the part;
    None for a key that names a whole record."""
    m = _PART.search(str(key).strip())
    if m is None:
        return None
    index, _, total = m.group(1).removeprefix(".part-").partition("-of-")
    return str(key).strip()[: m.start()], int(index), int(total)


def identifier(source: str, recid: str) -> str:
    """The target-side identifier ``<scheme>:<id>`` (``cernopendata:81009``, ``zenodo:123``)."""
    scheme, ident = split_key(record_key(source, recid))
    return f"{scheme}:{ident}"


def record_document(record: Any) -> tuple[str, bytes]:
    """The source record as one JSON file, as the source gave it (no invented content).

    ``<scheme>-record-<id>.json`` (``cernopendata-record-81009.json``): the one file of a
    record that lists none, on a target that publishes nothing without a file (Zenodo).
    """
    from metadata.readers.values import text, unwrap  # values imports dataset: not at package import

    source = source_of(record)
    if source == DEFAULT_SOURCE:
        data: Mapping[str, Any] = unwrap(record)
        recid = text(data.get("recid")) or str(getattr(record, "recid", ""))
    else:
        meta = getattr(record, "metadata", None)
        data = meta if isinstance(meta, Mapping) else {}
        recid = str(getattr(record, "recid", ""))
    name = document_name(identifier(source, recid))
    body = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8") + b"\n"
    return name, body


def document_name(ident: str) -> str:
    """The record document's file name for an identifier ``<scheme>:<id>``."""
    scheme, _, value = ident.partition(":")
    return f"{scheme}-record-{value if scheme != 'dir' else _safe_name(value)}.json"


def _safe_name(name: str) -> str:
    """A folder name as a flat file-name part (Zenodo keys hold no '/')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "folder"


__all__ = [
    "IDENTIFIER",
    "READERS",
    "Reader",
    "document_name",
    "identifier",
    "part_of",
    "read",
    "record_document",
    "record_key",
    "source_of",
    "split_key",
]
