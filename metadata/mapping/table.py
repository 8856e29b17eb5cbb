"""The vocabulary of the mapping tables: ``Table``, ``Field``, ``LeftOut``, ``Lands``, and the
path helpers the fidelity tests use. Each reader's table (``metadata/mapping/<reader>.py``)
imports it from here; ``metadata.mapping`` gathers the tables and re-exports these names."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PROFILES = ("inveniordm", "nrp-particles", "zenodo")
# How the property test finds a source value in the body (what the profiles change on purpose):
# text: the value's text (HTML reduced to its text); orcid: the bare ORCID id; family: the
# part before the comma ("Family, Given" becomes two fields); parts: each ";"-separated part;
# year: a year inside the span of years the field holds (several years become one interval).
Check = Literal["text", "orcid", "family", "parts", "year"]


@dataclass(frozen=True)
class Lands:
    """Where one source field lands in one profile's body: body field paths, and how."""

    fields: tuple[str, ...]  # dotted body paths ("metadata.creators"); the value is found beneath one
    how: str = ""


@dataclass(frozen=True)
class Field:
    path: str
    to: Mapping[str, Lands]  # profile name -> where
    check: Check = "text"


@dataclass(frozen=True)
class LeftOut:
    path: str
    why: str


Entry = Field | LeftOut


@dataclass(frozen=True)
class Table:
    reader: str  # the reader's registry name ("cernopendata", "zenodo", "dir")
    module: str  # the reader's module, for the document
    intro: str  # what a source record is, for the document
    entries: tuple[Entry, ...]
    notes: str = ""  # prose appended after the table (vocabularies, limits)
    _index: dict[str, Entry] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for entry in self.entries:
            if entry.path in self._index:
                raise ValueError(f"mapping table {self.reader}: {entry.path} is listed twice")
            if isinstance(entry, Field) and set(entry.to) != set(PROFILES):
                raise ValueError(f"mapping table {self.reader}: {entry.path} must say where it lands in {PROFILES}")
            self._index[entry.path] = entry

    def lookup(self, path: str) -> Entry | None:
        """The most specific entry covering a source field path (``authors[].name``), or None."""
        probe = path
        while probe:
            if probe in self._index:
                return self._index[probe]
            cut = max(probe.rfind("."), probe.rfind("[]"))
            if probe.endswith("[]"):
                probe = probe[:-2]
            elif cut <= 0:
                return None
            else:
                probe = probe[:cut]
        return None


def lands(fields: str, how: str = "") -> Lands:
    """``lands("metadata.creators metadata.contributors", "...")``: space-separated body paths."""
    return Lands(tuple(fields.split()), how)


def mapped(path: str, rdm: Lands, zenodo: Lands, *, nrp: Lands | None = None, check: Check = "text") -> Field:
    """A field landing in InvenioRDM (and NRP, the same unless ``nrp`` says otherwise) and Zenodo."""
    return Field(path, {"inveniordm": rdm, "nrp-particles": nrp or rdm, "zenodo": zenodo}, check)


def leaf_paths(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf of a JSON value with its field path (``authors[].name``); an empty list or object is a leaf."""
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            yield from leaf_paths(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list) and value:
        for v in value:
            yield from leaf_paths(v, f"{path}[]")
    else:
        yield path, value


def beneath(body: Any, dotted: str) -> list[Any]:
    """The values at a dotted body path (lists are walked through)."""
    nodes = [body]
    for key in dotted.split("."):
        nxt: list[Any] = []
        for node in nodes:
            for item in node if isinstance(node, list) else [node]:
                if isinstance(item, Mapping) and key in item:
                    nxt.append(item[key])
        nodes = nxt
    return nodes
