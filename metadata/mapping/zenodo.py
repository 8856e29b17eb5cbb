"""The Zenodo record mapping table (reader: metadata/readers/zenodo.py).

Paths are those of the records API's answer (what ``download.sources.zenodo`` keeps as
``Record.metadata``); ``metadata.*`` is the deposit metadata inside it.
"""

from __future__ import annotations

from metadata.kinds import zenodo_kinds_markdown
from metadata.mapping.table import Entry, LeftOut, Table, lands, mapped

M = "metadata."
RELATED = M + "related_identifiers"
EXTRA = lands(M + "additional_descriptions", "extra")
NOTES = lands(M + "notes", "extra")
ZEN_RECORD = lands(M + "additional_descriptions", 'extra "Zenodo record"')

PUBLICATION = lands(M + "additional_descriptions", 'extra "Publication details"')
# The bibliographic details, in the deposit's flat form and the records API's nested one.
BIBLIO_FLAT = (
    "journal_title", "journal_volume", "journal_issue", "journal_pages", "conference_title", "conference_acronym",
    "conference_dates", "conference_place", "conference_url", "conference_session", "conference_session_part",
    "imprint_publisher", "imprint_isbn", "imprint_place", "partof_title", "partof_pages", "thesis_university",
    "thesis_supervisors",
)  # fmt: skip
BIBLIO_NESTED = ("journal", "meeting", "imprint", "part_of", "thesis")

ENTRIES: tuple[Entry, ...] = (
    mapped(
        "id",
        lands(M + "identifiers", "`zenodo:<id>` (scheme other)"),
        lands(M + "keywords", "keyword `zenodo:<id>`"),
    ),
    mapped("recid", lands(M + "identifiers", "as `id`"), lands(M + "keywords", "as `id`")),
    mapped("doi", lands(RELATED, "isidenticalto"), lands(RELATED, "isIdenticalTo")),
    mapped(M + "doi", lands(RELATED, "as `doi`"), lands(RELATED, "as `doi`")),
    mapped("conceptdoi", ZEN_RECORD, NOTES),
    mapped("links.self_html", lands(RELATED, "the record page, isidenticalto"), lands(RELATED)),
    mapped("links.html", lands(RELATED, "the record page, isidenticalto"), lands(RELATED)),
    mapped("title", lands(M + "title", "when `metadata.title` is missing"), lands(M + "title")),
    mapped(M + "title", lands(M + "title"), lands(M + "title")),
    mapped(
        M + "creators[].name",
        lands(M + "creators", 'personal: "Family, Given" split; a group\'s name -> organizational'),
        lands(M + "creators", "as the source"),
        check="family",
    ),
    mapped(
        M + "creators[].affiliation",
        lands(M + "creators", '`affiliations`, "A; B" split'),
        lands(M + "creators", '"A; B"'),
        check="parts",
    ),
    mapped(M + "creators[].orcid", lands(M + "creators", "`identifiers` orcid"), lands(M + "creators"), check="orcid"),
    mapped(M + "description", lands(M + "description", "sanitised"), lands(M + "description", "sanitised")),
    mapped(
        M + "method",
        lands(M + "additional_descriptions", "additional description methods"),
        lands(M + "method"),
        nrp=lands(M + "description", 'in `description` under "Methodology"'),
    ),
    mapped(
        M + "notes",
        lands(M + "additional_descriptions", "additional description other"),
        lands(M + "notes"),
        nrp=lands(M + "description", 'in `description` under "Notes"'),
    ),
    mapped(M + "publication_date", lands(M + "publication_date"), lands(M + "publication_date")),
    mapped(M + "license.id", lands(M + "rights", "id"), lands(M + "license", "id")),
    mapped(M + "keywords", lands(M + "subjects"), lands(M + "keywords")),
    mapped(M + "subjects[].term", lands(M + "subjects"), lands(M + "keywords")),
    mapped(
        M + "related_identifiers[].identifier",
        lands(f"{RELATED} {M}additional_descriptions", "a DOI or URL; other schemes (arXiv, ISBN) in an extra"),
        lands(f"{RELATED} {M}notes"),
    ),
    mapped(
        M + "related_identifiers[].relation",
        lands(f"{RELATED} {M}additional_descriptions", "DataCite's id (lowercase); unknown -> references"),
        lands(f"{RELATED} {M}notes", "Zenodo's name"),
    ),
    mapped(
        M + "related_identifiers[].scheme", lands(f"{RELATED} {M}additional_descriptions"), lands(f"{RELATED} {M}notes")
    ),
    mapped(M + "related_identifiers[].resource_type", EXTRA, NOTES),
    mapped(M + "version", lands(M + "version"), lands(M + "version")),
    mapped(
        M + "resource_type",
        lands(M + "resource_type", "the kind's own type (table below); the subtype as `<Type>/<subtype>`"),
        lands(f"{M}upload_type {M}publication_type {M}image_type"),
    ),
    mapped(M + "upload_type", lands(M + "resource_type", "as `resource_type.type`"), lands(M + "upload_type")),
    mapped(M + "publication_type", lands(M + "resource_type"), lands(M + "publication_type")),
    mapped(M + "access_right", ZEN_RECORD, NOTES),
    mapped(M + "communities[].identifier", ZEN_RECORD, NOTES),
    mapped(M + "language", ZEN_RECORD, NOTES),
    mapped(M + "dates", lands(M + "additional_descriptions", 'extra "Dates"'), NOTES),
    mapped(
        M + "contributors[].name",
        lands(f"{M}contributors {M}additional_descriptions"),
        lands(f"{M}contributors {M}notes"),
    ),
    mapped(
        M + "contributors[].type",
        lands(f"{M}contributors {M}additional_descriptions"),
        lands(f"{M}contributors {M}notes"),
    ),
    mapped(M + "references", lands(M + "additional_descriptions", 'extra "References"'), NOTES),
    mapped(M + "grants", lands(M + "additional_descriptions", 'extra "Grants"'), NOTES),
    LeftOut("files", "the data themselves: the pipeline moves them; their count, size, types -> `formats`, `sizes`"),
    mapped(
        M + "subjects[].identifier", lands(M + "additional_descriptions", 'extra "Subjects (vocabulary ids)"'), NOTES
    ),
    mapped(M + "subjects[].scheme", lands(M + "additional_descriptions", 'extra "Subjects (vocabulary ids)"'), NOTES),
    LeftOut(M + "relations", "Zenodo's own version chain: the target makes its own"),
    LeftOut(M + "prereserve_doi", "a DOI reserved on Zenodo for the deposit: the record's DOI is carried"),
    LeftOut("conceptrecid", "the concept's record id: the concept DOI is carried"),
    LeftOut("doi_url", "the DOI as a URL: the DOI is carried"),
    LeftOut("links", "Zenodo's API links (the record page is carried, `links.self_html`)"),
    LeftOut("created", "Zenodo's bookkeeping: when the deposit was made"),
    LeftOut("modified", "Zenodo's bookkeeping"),
    LeftOut("updated", "Zenodo's bookkeeping"),
    LeftOut("revision", "Zenodo's bookkeeping"),
    LeftOut("swh", "Software Heritage ids Zenodo assigns itself"),
    LeftOut("owners", "Zenodo user ids, meaningless on the target"),
    LeftOut("status", "Zenodo's bookkeeping (published)"),
    LeftOut("state", "Zenodo's bookkeeping"),
    LeftOut("submitted", "Zenodo's bookkeeping"),
    LeftOut("stats", "Zenodo's view and download counts"),
    mapped(M + "embargo_date", ZEN_RECORD, NOTES),
    mapped(M + "access_conditions", ZEN_RECORD, NOTES),
    mapped(
        M + "image_type",
        lands(
            f"{M}resource_type {M}subjects",
            "its own `image-<type>` (subtype table below); the subtype as `Image/<type>`",
        ),
        lands(f"{M}image_type {M}keywords", "as the source; also the keyword `Image/<type>`"),
    ),
    *(mapped(M + f, PUBLICATION, NOTES) for f in (*BIBLIO_FLAT, *BIBLIO_NESTED)),
    mapped(M + "locations", lands(M + "additional_descriptions", 'extra "Locations"'), NOTES),
    mapped(M + "custom", lands(M + "additional_descriptions", 'extra "Custom fields"'), NOTES),
)

TABLE = Table(
    reader="zenodo",
    module="metadata/readers/zenodo.py",
    intro="Zenodo records\n\nThe records API's answer (`/api/records/<id>`), as `download.sources.zenodo` keeps it.",
    entries=ENTRIES,
    notes=zenodo_kinds_markdown(),
)
