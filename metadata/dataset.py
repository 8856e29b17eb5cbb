"""The neutral dataset description: what a source record says, independent of any target.

A reader (``metadata.readers``) turns one source record into one ``Dataset``; a profile
(``metadata.profiles``) turns a ``Dataset`` into one target's draft body. Nothing here
knows a target's field names. Empty tuples and ``None`` mean "the source did not say".
HTML held here is already sanitised (``metadata.html``): profiles never see raw source
markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metadata.energy import Energy
from metadata.kinds import KINDS as KINDS  # the kinds of record; metadata/kinds.py maps each to every target's term


@dataclass(frozen=True)
class Person:
    """An author as the source lists it; ``family_name`` is never empty."""

    family_name: str
    given_name: str | None = None
    affiliations: tuple[str, ...] = ()
    orcid: str | None = None
    inspire_id: str | None = None
    ror_ids: tuple[str, ...] = ()  # of the affiliations, when the source gives them

    @property
    def display_name(self) -> str:
        """ "Family, Given" (or the family name alone): the form Zenodo and DataCite use."""
        return f"{self.family_name}, {self.given_name}" if self.given_name else self.family_name


@dataclass(frozen=True)
class Organisation:
    name: str


@dataclass(frozen=True)
class License:
    """A license as the source states it; ``spdx`` when the stock vocabulary knows it."""

    source: str
    spdx: str | None


@dataclass(frozen=True)
class Relation:
    """A link to another record, with the source's own relation name kept verbatim.

    ``relation`` is the DataCite relation type (lowercase, InvenioRDM's vocabulary ids)
    chosen for it; ``source_type`` what the portal wrote (``isChildOf``), so a profile
    can show both and nothing is silently re-labelled.
    """

    relation: str
    source_type: str
    recid: int | None
    url: str | None  # the related record's page on the source (or the link's own URL)
    doi: str | None = None
    title: str | None = None
    description: str | None = None
    origin: str = "relations"  # the source field the link came from (relations, usage, ...)


@dataclass(frozen=True)
class Section:
    """A text block of the record (abstract, methodology, usage, ...): sanitised HTML."""

    key: str  # the source field: "abstract", "methodology", "validation", ...
    title: str  # how to head it: "Methodology"
    html: str


@dataclass(frozen=True)
class FileFacts:
    """What the record's files are, from the files themselves when they are known.

    ``resolved`` is true when ``count``/``size``/``types`` come from the real file list
    (a resolved record, or a record whose file list and indices are expanded); false when
    only the record's ``distribution`` claims were available.
    """

    count: int
    size: int | None
    types: tuple[str, ...]
    resolved: bool
    claimed_count: int | None = None
    claimed_size: int | None = None
    claimed_formats: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.count == 0


@dataclass(frozen=True)
class Dataset:
    """One source record, read into target-neutral facts."""

    source: str  # the identifier scheme: "cernopendata", "zenodo", "dir"
    recid: int | None
    raw_recid: str | None
    url: str | None  # the record's page on the source
    doi: str | None
    title: str | None
    title_additional: str | None
    kind: str  # one of KINDS
    type_primary: str | None
    type_secondary: tuple[str, ...]
    dataset_type: str  # collision / simulated / other
    publisher: str
    date_published: str | None  # EDTF
    date_created: str | None  # EDTF, an interval when the portal lists several years
    date_reprocessed: str | None  # EDTF
    creators: tuple[Person | Organisation, ...]  # the record's authors, in order
    organisations: tuple[Organisation, ...]  # the collaboration(s), each named once
    description: Section | None  # the abstract (or the first text there is)
    sections: tuple[Section, ...]  # the other text blocks, in the portal's order
    keywords: tuple[str, ...]
    categories: tuple[str, ...]
    collections: tuple[str, ...]
    license: License | None
    relations: tuple[Relation, ...]
    experiments: tuple[str, ...]
    accelerator: str | None
    collision_type: str | None
    energy: Energy | None
    energy_text: str | None
    number_of_events: int | None
    files: FileFacts
    # Source facts no target has a field for, rendered as headed HTML blocks.
    extras: tuple[Section, ...] = field(default=())
    version: str | None = None  # the source's version label ("v2"), when it has one

    @property
    def identifier(self) -> str | None:
        """``<source>:<id>``: the recid, or the raw id of a source without numbers (a folder)."""
        ident = str(self.recid) if self.recid else (self.raw_recid if self.source != "cernopendata" else None)
        return f"{self.source}:{ident}" if ident else None

    @property
    def metadata_only(self) -> bool:
        return self.files.empty
