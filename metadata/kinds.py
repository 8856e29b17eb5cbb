"""Record kinds: what a source record is, and the resource type each target gives it.

A reader names the record's neutral kind (``Dataset.kind``, one of ``KINDS``) and keeps the
source's own words in ``type_primary`` / ``type_secondary``; the profiles ask here for the
target's term. Every table of the decision is in this module, so MAPPING.md is rendered
from it (``kinds_markdown``) and cannot say something the code does not do.

- CERN Open Data (``cern_kind``): ``type.primary`` gives the kind; a Documentation or
  Supplementaries record whose ``type.secondary`` names a genre the targets have a term
  for (Activities: teaching material, a lesson; Presentation; Poster) is that genre.
- Zenodo and folders (``zenodo_kind``): the ``upload_type`` / ``resource_type.type`` word;
  a publication is ``documentation`` with its ``publication_type`` as the subtype.
- InvenioRDM / NRP (``rdm_resource_type``): a stock resource type id per kind; a
  publication's, image's or software's subtype its own ``<type>-<subtype>`` id wherever
  the stock vocabulary (``metadata/vocabularies.json``, InvenioRDM's resource_types
  fixture; the sandbox repository reads the same file) has one (``RDM_SUBTYPES``).
  The NRP particles model takes the same ids: both profiles validate against
  ``RDM_EMITTED``, every id this module can send.
- Zenodo (``zenodo_upload_type``): ``upload_type`` and, for a publication, its
  ``publication_type``; kinds the legacy deposit API has no word for go as ``other``.

The source's own words are always kept as well (subject / keyword "Primary/Secondary").
"""

from __future__ import annotations

from collections.abc import Iterable

from metadata import vocabularies

KINDS = (
    "dataset",
    "software",
    "environment",
    "documentation",
    "supplementaries",
    "presentation",
    "poster",
    "lesson",
    "image",
    "video",
    "audio",
    "physicalobject",
    "workflow",
    "model",
    "event",
    "other",
)

# --- readers ---------------------------------------------------------------------------

_CERN_PRIMARY = {
    "dataset": "dataset",
    "software": "software",
    "environment": "environment",
    "documentation": "documentation",
    "supplementaries": "supplementaries",
}
# type.secondary words of a Documentation / Supplementaries record that name a genre.
_CERN_GENRES = {
    "activities": "lesson",  # masterclasses, worksheets for schools, video tutorials
    "lesson": "lesson",
    "tutorial": "lesson",
    "presentation": "presentation",
    "poster": "poster",
}

# The (type.primary, type.secondary) pairs of the portal's records (cernopendata/opendata.cern.ch
# data/records/*.json and data/docs/*.json at cbdb4cc2a, and the fixtures): MAPPING.md shows
# each one's resource type in every profile; a pair not listed here is still mapped (by its
# primary), and tests/test_metadata_kinds.py fails on a fixture record of an unlisted pair.
PORTAL_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Dataset", ("Collision",)),
    ("Dataset", ("Simulated",)),
    ("Dataset", ("Derived",)),
    ("Dataset", ("Derived", "Simulated")),
    ("Dataset", ("Simulated", "Collision")),
    ("Software", ("Analysis",)),
    ("Software", ("Analysis", "Workflow")),
    ("Software", ("Framework",)),
    ("Software", ("Tool",)),
    ("Software", ("Tool", "Workflow")),
    ("Software", ("Tool", "Analysis", "Workflow")),
    ("Software", ("Validation",)),
    ("Software", ("Validation", "Workflow")),
    ("Environment", ("Condition",)),
    ("Environment", ("VM",)),
    ("Environment", ("Validation",)),
    ("Documentation", ("About",)),
    ("Documentation", ("Activities",)),
    ("Documentation", ("Authors",)),
    ("Documentation", ("Guide",)),
    ("Documentation", ("Help",)),
    ("Documentation", ("Policy",)),
    ("Documentation", ("Report",)),
    ("Documentation", ("Stripping",)),
    ("Supplementaries", ("Computing Note",)),
    ("Supplementaries", ("Configuration",)),
    ("Supplementaries", ("Configuration HLT",)),
    ("Supplementaries", ("Configuration LHE",)),
    ("Supplementaries", ("Configuration RECO",)),
    ("Supplementaries", ("Configuration SIM",)),
    ("Supplementaries", ("Correction",)),
    ("Supplementaries", ("Logbook",)),
    ("Supplementaries", ("Luminosity",)),
    ("Supplementaries", ("Manual",)),
    ("Supplementaries", ("Trigger",)),
)


def cern_kind(primary: str | None, secondary: Iterable[str]) -> str:
    """The kind of a CERN Open Data record from its ``type``."""
    kind = _CERN_PRIMARY.get((primary or "").strip().casefold(), "other")
    if kind in ("documentation", "supplementaries"):
        for word in secondary:
            genre = _CERN_GENRES.get(word.strip().casefold())
            if genre:
                return genre
    return kind


# Zenodo's upload_type / resource_type.type words (deposit and records API alike).
_ZENODO_WORDS = {
    "dataset": "dataset",
    "software": "software",
    "publication": "documentation",
    "presentation": "presentation",
    "poster": "poster",
    "lesson": "lesson",
    "image": "image",
    "video": "video",
    "audio": "audio",
    "physicalobject": "physicalobject",
    "workflow": "workflow",
    "model": "model",
    "event": "event",
    "other": "other",
}


def zenodo_kind(word: str | None, *, default: str = "other") -> str:
    """The kind of a Zenodo record (or a folder's metadata) from its type word; ``default`` without one."""
    if not word:
        return default
    return _ZENODO_WORDS.get(word.strip().casefold(), "other")


# --- InvenioRDM / NRP ------------------------------------------------------------------

RDM_BY_KIND = {
    "dataset": "dataset",
    "software": "software",
    "environment": "other",  # VM images, conditions, validated-run lists: no stock term
    "documentation": "publication",
    "supplementaries": "publication-technicalnote",
    "presentation": "presentation",
    "poster": "poster",
    "lesson": "lesson",
    "image": "image",
    "video": "video",
    "audio": "audio",
    "physicalobject": "physicalobject",
    "workflow": "workflow",
    "model": "model",
    "event": "event",
    "other": "other",
}
# A subtype word (type.secondary, Zenodo's publication_type / image_type, the tail of an
# InvenioRDM id) -> its own stock id: every "<type>-<subtype>" id of the stock vocabulary
# (metadata/vocabularies.json, which the sandbox repository reads as well) under the kind
# of its type, and the words that name one under another name. A word without an id of its
# own leaves the kind's id (the word is kept as a subject).
_RDM_SUBTYPE_KINDS = {"publication": "documentation", "image": "image", "software": "software"}
_RDM_ALIASES = {
    "documentation": {
        "thesis": "publication-dissertation",  # Zenodo's word; InvenioRDM >= 12 names the thesis so
        "manual": "publication-technicalnote",
        "conferenceproceedings": "publication-conferenceproceeding",
    },
}


def _rdm_subtypes() -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {}
    for rid in vocabularies.ordered("resource_types"):
        head, _, word = rid.partition("-")
        if word and head in _RDM_SUBTYPE_KINDS:
            table.setdefault(_RDM_SUBTYPE_KINDS[head], {})[word] = rid
    for kind, aliases in _RDM_ALIASES.items():
        table.setdefault(kind, {}).update(aliases)
    return table


RDM_SUBTYPES = _rdm_subtypes()
RDM_EMITTED = frozenset([*RDM_BY_KIND.values(), *(rid for t in RDM_SUBTYPES.values() for rid in t.values())])


def rdm_resource_type(kind: str, secondary: Iterable[str] = ()) -> str:
    """The InvenioRDM / NRP ``resource_type.id`` of a record of this kind."""
    subtypes = RDM_SUBTYPES.get(kind, {})
    for word in secondary:
        rid = subtypes.get(_word(word))
        if rid:
            return rid
    return RDM_BY_KIND.get(kind, "other")


def _word(word: str) -> str:
    """A subtype word as the vocabularies spell it: "Conference paper" -> "conferencepaper"."""
    return "".join(word.split()).replace("-", "").replace("_", "").casefold()


# --- Zenodo ----------------------------------------------------------------------------

# The legacy deposit API's vocabularies (developers.zenodo.org, "Deposit metadata"), kept in
# vocabularies.json with InvenioRDM's: the Zenodo stand-in reads the same lists.
ZENODO_UPLOAD_TYPES = vocabularies.ordered("zenodo_upload_types")
ZENODO_PUBLICATION_TYPES = vocabularies.ordered("zenodo_publication_types")
ZENODO_IMAGE_TYPES = vocabularies.ordered("zenodo_image_types")
_ZENODO_BY_KIND: dict[str, tuple[str, str | None]] = {
    "dataset": ("dataset", None),
    "software": ("software", None),
    "environment": ("other", None),
    "documentation": ("publication", "other"),
    "supplementaries": ("publication", "technicalnote"),
    "presentation": ("presentation", None),
    "poster": ("poster", None),
    "lesson": ("lesson", None),
    "image": ("image", None),
    "video": ("video", None),
    "audio": ("video", None),  # the legacy deposit API's "Video/Audio"
    "physicalobject": ("physicalobject", None),
    "workflow": ("other", None),  # the legacy deposit API has no workflow, model or event
    "model": ("other", None),
    "event": ("other", None),
    "other": ("other", None),
}
_ZENODO_PUBLICATION_ALIASES = {"manual": "technicalnote", "dissertation": "thesis"}


def zenodo_upload_type(kind: str, secondary: Iterable[str] = ()) -> tuple[str, str | None]:
    """Zenodo's ``upload_type`` and ``publication_type`` (None unless a publication)."""
    upload, publication = _ZENODO_BY_KIND.get(kind, ("other", None))
    if kind == "documentation":
        for word in secondary:
            w = _word(word)
            w = _ZENODO_PUBLICATION_ALIASES.get(w, w)
            if w in ZENODO_PUBLICATION_TYPES:
                return upload, w
    return upload, publication


def zenodo_image_type(secondary: Iterable[str]) -> str:
    """Zenodo's ``image_type`` (required with upload_type image): the source's, else ``other``."""
    return next((_word(w) for w in secondary if _word(w) in ZENODO_IMAGE_TYPES), "other")


# --- the document ----------------------------------------------------------------------


def _zenodo_cell(kind: str, secondary: tuple[str, ...]) -> str:
    upload, publication = zenodo_upload_type(kind, secondary)
    return f"`{upload}` / `{publication}`" if publication else f"`{upload}`"


def kinds_markdown() -> str:
    """The CERN record types and Zenodo's type words -> each profile's term (for MAPPING.md)."""
    lines = [
        "### Record kinds -> resource types (each kind its own type)",
        "",
        "Rendered from `metadata/kinds.py`: every `type` of the portal's records (its",
        "`data/records` and `data/docs` at cbdb4cc2a), with the term each profile sends.",
        "",
        "| `type.primary` | `type.secondary` | kind | inveniordm / nrp-particles | zenodo |",
        "|---|---|---|---|---|",
    ]
    for primary, secondary in PORTAL_TYPES:
        kind = cern_kind(primary, secondary)
        rdm = rdm_resource_type(kind, secondary)
        cells = [primary, ", ".join(secondary), kind, f"`{rdm}`", _zenodo_cell(kind, secondary)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        'Stock vocabularies have no "environment" or "supplementary" type: `other` and the',
        "technical note are the closest terms that keep the kinds apart. The portal's",
        "Activities (masterclasses, worksheets for schools, video tutorials) are teaching",
        "material: a lesson in both vocabularies; a Presentation or Poster secondary type, if",
        "the portal adds one, is a presentation or a poster. The portal's own type is always",
        'kept as a subject or keyword ("Supplementaries/Trigger").',
    ]
    return "\n".join(lines) + "\n"


def zenodo_kinds_markdown() -> str:
    """Zenodo's (and a folder's) type words -> each profile's term (for MAPPING.md)."""
    lines = [
        "### Zenodo types -> resource types",
        "",
        "Rendered from `metadata/kinds.py` (a folder's `metadata.json` reads its `upload_type` alike;",
        'a record in InvenioRDM\'s shape, `resource_type: {"id": "publication-article"}`, as type and subtype).',
        "",
        "| `upload_type` / `resource_type.type` | kind | inveniordm / nrp-particles | zenodo |",
        "|---|---|---|---|",
    ]
    for word in _ZENODO_WORDS:
        kind = zenodo_kind(word)
        lines.append(f"| {word} | {kind} | `{rdm_resource_type(kind)}` | {_zenodo_cell(kind, ())} |")
    lines += [
        "",
        "A subtype (`publication_type` / `image_type`, `resource_type.subtype`, the tail of an",
        "InvenioRDM id) gives InvenioRDM / NRP its own stock id where there is one, else the",
        "kind's id with the subtype kept as a subject; Zenodo keeps any subtype of its vocabulary",
        "(a publication's other subtypes `other`, an image's `other`):",
        "",
        "| subtype | kind | inveniordm / nrp-particles | zenodo |",
        "|---|---|---|---|",
    ]
    for kind, table in RDM_SUBTYPES.items():
        for word, rid in table.items():
            zenodo = f"`image` / `{zenodo_image_type((word,))}`" if kind == "image" else _zenodo_cell(kind, (word,))
            lines.append(f"| {word} | {kind} | `{rid}` | {zenodo} |")
    lines += [
        "",
        "Zenodo's workflow, model and event have no legacy `upload_type`: `other` there, their",
        "own id in InvenioRDM; audio goes as `video` (the deposit API's Video/Audio).",
    ]
    return "\n".join(lines) + "\n"
