"""The CERN Open Data record mapping table (reader: metadata/readers/cernopendata.py).

The text blocks and the extras come from the reader's own lists (``portal_text.TEXT_BLOCKS``,
``EXTRA_FIELDS``), so a block or extra the reader adds is in the table without a second list.
"""

from __future__ import annotations

from metadata.kinds import kinds_markdown
from metadata.mapping.table import Entry, LeftOut, Table, lands, mapped
from metadata.readers.portal_text import EXTRA_FIELDS, TEXT_BLOCKS

M = "metadata."
EXTRA = lands(M + "additional_descriptions", "extra")
NOTES = lands(M + "notes", "extra")
RELATED = M + "related_identifiers"

# Text blocks: the abstract is the description; the others additional descriptions (RDM),
# parts of NRP's description or its extras, Zenodo's method or notes.
_NRP_IN_DESCRIPTION = {"abstract", "methodology", "usage", "note"}


def _block(key: str) -> list[Entry]:
    heading = TEXT_BLOCKS[key]
    if key == "abstract":
        rdm = nrp = zen = lands(M + "description", "the description")
    else:
        # Without an abstract the first block there is becomes the description.
        first = "; the description when the record has no abstract"
        rdm = lands(f"{M}additional_descriptions {M}description", f'additional description "{heading}"{first}')
        nrp = (
            lands(M + "description", f'in `description` under "{heading}"')
            if key in _NRP_IN_DESCRIPTION
            else lands(f"{M}additional_descriptions {M}description", f"extra{first}")
        )
        zen_field = "method" if key == "methodology" else "notes"
        zen = lands(f"{M}{zen_field} {M}description", f"`{zen_field}`{first}")
    link_how = "a recid-only link: the record URL, and a `related_identifiers` entry (references)"
    links = [lands(" ".join((*w.fields, RELATED)), link_how) for w in (rdm, nrp, zen)]
    return [
        mapped(key, rdm, zen, nrp=nrp),
        mapped(f"{key}.links[].recid", links[0], links[2], nrp=links[1]),
    ]


# Extras mapped by an entry of their own (or by their sub-fields') below.
_EXPLICIT = {
    "title_additional", "collision_information", "date_reprocessed", "distribution", "categories.source",
    "collaboration.group",
}  # fmt: skip

ENTRIES: tuple[Entry, ...] = (
    mapped(
        "recid",
        lands(M + "identifiers", "`cernopendata:<recid>` (scheme other)"),
        lands(M + "keywords", "keyword `cernopendata:recid:<recid>`"),
        nrp=lands(f"{M}recid {M}identifiers", "`recid` (int) + the same identifier"),
    ),
    mapped("doi", lands(RELATED, "isidenticalto (and the record page URL)"), lands(RELATED, "isIdenticalTo")),
    mapped(
        "title",
        lands(M + "title", 'none + files: "CERN Open Data record N"; none + no files: the one error'),
        lands(M + "title"),
    ),
    mapped(
        "title_additional",
        lands(
            f"{M}additional_titles {M}additional_descriptions {M}title",
            "`additional_titles` (alternative-title); none when equal to the title",
        ),
        lands(f"{M}notes {M}title", "extra"),
    ),
    mapped(
        "authors[].name",
        lands(M + "creators", "personal, in order: family/given; a group's name -> organizational"),
        lands(M + "creators", '`{name: "Family, Given"}`, in order'),
        check="family",
    ),
    mapped(
        "authors[].affiliation",
        lands(M + "creators", "`affiliations` by name"),
        lands(M + "creators", '`affiliation: "A; B"`'),
    ),
    mapped("authors[].orcid", lands(M + "creators", "`identifiers` orcid"), lands(M + "creators"), check="orcid"),
    mapped("authors[].inspireid", lands(M + "additional_descriptions", 'extra "Author identifiers"'), NOTES),
    mapped("authors[].rorid", lands(M + "additional_descriptions", 'extra "Author identifiers"'), NOTES),
    mapped(
        "collaboration.name",
        lands(
            f"{M}creators {M}contributors",
            'case variants merged ("DELPHI" -> "DELPHI collaboration"): creator (organizational) only without'
            " authors; with authors a `contributors` entry, role researchgroup",
        ),
        lands(f"{M}creators {M}contributors", "creator `{name}` without authors; else contributor ResearchGroup"),
    ),
    mapped("collaboration.group", EXTRA, NOTES),
    mapped(
        "experiment",
        lands(M + "subjects", "subject"),
        lands(M + "keywords", "keyword"),
        nrp=lands(f"{M}experiment {M}subjects", "`experiment` + subject"),
    ),
    mapped(
        "type",
        lands(f"{M}resource_type {M}subjects", '`resource_type` (table below) + subject "Primary/Secondary"'),
        lands(f"{M}upload_type {M}keywords", '`upload_type`/`publication_type` + keyword "Primary/Secondary"'),
        nrp=lands(f"{M}resource_type {M}subjects", "same + `dataset_type` collision/simulated/other"),
    ),
    mapped("publisher", lands(M + "publisher"), lands(M + "notes", '"Published on the source by ..."')),
    mapped(
        "date_published",
        lands(M + "publication_date", "EDTF"),
        lands(f"{M}publication_date {M}notes", "YYYY-MM-DD (a year -> YYYY-01-01; the source value in notes)"),
    ),
    mapped(
        "date_created",
        lands(M + "dates", "created (several years -> an interval)"),
        lands(M + "notes"),
        check="year",
    ),
    mapped(
        "date_reprocessed",
        lands(f"{M}dates {M}additional_descriptions", 'other, description "reprocessed"'),
        NOTES,
    ),
    *(e for key in TEXT_BLOCKS for e in _block(key)),
    mapped(
        "relations[].type",
        lands(M + "additional_descriptions", 'extra "Related records" naming each relation as the source does'),
        lands(M + "notes", 'extra "Related records"'),
    ),
    mapped(
        "relations[].recid",
        lands(RELATED, "the record URL, with the DataCite type of the table below"),
        lands(RELATED, "same, camelCase relation names"),
    ),
    mapped("relations[].doi", lands(RELATED, "the related record's DOI"), lands(RELATED)),
    mapped("relations[].title", lands(M + "additional_descriptions", 'extra "Related records"'), NOTES),
    mapped("relations[].description", lands(M + "additional_descriptions", 'extra "Related records"'), NOTES),
    mapped(
        "license",
        lands(M + "rights", "id when the stock vocabulary has it, else a free title; none stated -> none"),
        lands(f"{M}license {M}notes", "SPDX id; none stated -> none sent, notes say so"),
    ),
    mapped("keywords", lands(M + "subjects"), lands(M + "keywords")),
    mapped("collections", lands(M + "subjects"), lands(M + "keywords")),
    mapped(
        "categories.primary",
        lands(M + "subjects"),
        lands(M + "keywords"),
        nrp=lands(M + "subjects", "subjects; `category.id` = first category"),
    ),
    mapped("categories.secondary", lands(M + "subjects"), lands(M + "keywords")),
    mapped("categories.source", EXTRA, NOTES),
    mapped(
        "collision_information.type",
        lands(M + "additional_descriptions", 'extra "Collision"'),
        lands(f"{M}keywords {M}notes", "keyword + extra"),
        nrp=lands(f"{M}collision_information {M}additional_descriptions", "`collision_information.type`"),
    ),
    mapped(
        "collision_information.energy",
        lands(M + "additional_descriptions", 'extra "Collision"'),
        lands(f"{M}keywords {M}notes", "keywords (energy) + extra"),
        nrp=lands(
            f"{M}collision_information {M}additional_descriptions",
            "`energy`, `energy_min/max`, `energy_unit` GeV (an `ecms=` in the abstract wins; the text kept as extra)",
        ),
    ),
    mapped(
        "distribution.number_events",
        lands(f"{M}sizes {M}additional_descriptions", '"N events"'),
        NOTES,
        nrp=lands(f"{M}number_of_events {M}additional_descriptions", "`number_of_events`"),
    ),
    *(
        mapped(
            f"distribution.{claim}",
            lands(
                M + "additional_descriptions",
                'extra "Distribution (as the source states it)"; `formats`/`sizes` from the files',
            ),
            NOTES,
            nrp=lands(M + "additional_descriptions", "extra; `file_types` from the real files' extensions"),
        )
        for claim in ("formats", "number_files", "size")
    ),
    mapped(  # any other claim (number_entries, ...): the block lists the whole object
        "distribution",
        lands(M + "additional_descriptions", 'extra "Distribution (as the source states it)": any other claim'),
        NOTES,
    ),
    *(
        mapped(key, lands(M + "additional_descriptions", f'extra "{heading}"'), NOTES)
        for key, heading in EXTRA_FIELDS.items()
        if key not in _EXPLICIT
    ),
    LeftOut(
        "files",
        "the data themselves: the pipeline moves them; their count, size, types -> `formats`, `sizes`,"
        " `file_types`; none -> `files.enabled: false`",
    ),
    LeftOut("_file_indices", "the expanded file indices: as for files"),
    LeftOut("collaboration.recid", "the portal's internal id of the collaboration's page; the name is carried"),
    LeftOut("$schema", "the portal's JSON schema URL, meaningless on the target"),
    LeftOut("control_number", "the record API's copy of recid"),
    LeftOut("_bucket", "the portal's storage bucket id"),
    LeftOut("_files", "the portal's storage listing (see files)"),
)

NOTES_MD = (
    kinds_markdown()
    + """
### Portal relations -> DataCite (`metadata/readers/relations.py`)

| portal | DataCite | when |
|---|---|---|
| isChildOf | isderivedfrom | the record is `Derived`, or the wording says derived/processed/produced/skimmed |
| isChildOf | ispartof | otherwise (collections: DELPHI years, ATLAS "for citing all ...") |
| isParentOf | haspart (issourceof when the wording says derived/processed) | |
| isPartOf | ispartof | |
| isSiblingOf | isvariantformof | "the corresponding AOD dataset": the same events in another form |
| isRelatedTo | references | DataCite has no generic relation; the weakest one |
| isProducedBy | iscompiledby | "the code to produce the files" |
| anything else | references | |

The source's own name stays visible in the "Related records" block of every profile.

### Limits

- Creators: neither InvenioRDM nor Zenodo documents a maximum number of creators
  (`docs/repositories-api.md` lists files, bytes and request rates only); 3,000 authors are
  carried whole, in order (about 0.3-0.5 MB of JSON in one request; tested).
- Zenodo: `publication_date` must be a full date; `description` is required.

### Records without files

InvenioRDM / NRP: `files: {"enabled": false}` (a metadata-only record, published as such).
Zenodo publishes no deposition without a file: the closest honest thing is one file, the
source record's own JSON (`metadata.readers.record_document(record)` ->
`("cernopendata-record-<recid>.json", bytes)`), and the notes say the source lists no data
files. A record with neither files nor a title is the only error.

### Split records (`oversize = "split"`)

Each part is a record of its own (`metadata/parts.py`): title "(part i of n)", an opening
paragraph, identifier `cernopendata:<recid>.part-i-of-n` (Zenodo: a keyword), related to
the other parts (continues / iscontinuedby / references) and part of the source record
(ispartof); no NRP `recid`, so the whole record's query never finds a part.
"""
)

TABLE = Table(
    reader="cernopendata",
    module="metadata/readers/cernopendata.py",
    intro="CERN Open Data records\n\nThe portal's record JSON (`data/records/*.json` entries, or the API's answer).",
    entries=ENTRIES,
    notes=NOTES_MD,
)
