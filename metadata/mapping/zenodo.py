"""The Zenodo record mapping table (reader: metadata/readers/zenodo.py).

Paths are those of the records API's answer (what ``download.sources.zenodo`` keeps as
``Record.metadata``); ``metadata.*`` is the deposit metadata inside it.
"""

from __future__ import annotations

from metadata.mapping import Entry, LeftOut, Table, lands, mapped

M = "metadata."
RELATED = M + "related_identifiers"
EXTRA = lands(M + "additional_descriptions", "extra")
NOTES = lands(M + "notes", "extra")
ZEN_RECORD = lands(M + "additional_descriptions", 'extra "Zenodo record"')

# Deposit fields the reader does not read yet: said here, so none is lost unnoticed.
NOT_READ = (
    "access_conditions", "embargo_date", "image_type", "locations", "thesis_supervisors", "thesis_university",
    "journal_title", "journal_volume", "journal_issue", "journal_pages", "conference_title", "conference_acronym",
    "conference_dates", "conference_place", "conference_url", "conference_session", "conference_session_part",
    "imprint_publisher", "imprint_isbn", "imprint_place", "partof_title", "partof_pages", "custom",
)  # fmt: skip

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
        lands(M + "resource_type", "kind: dataset, software, publication & co -> documentation"),
        lands(f"{M}upload_type {M}publication_type"),
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
    LeftOut(M + "subjects[].identifier", "not carried yet: the subject's term is, its vocabulary id is not"),
    LeftOut(M + "subjects[].scheme", "not carried yet: as subjects[].identifier"),
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
    *(LeftOut(M + f, "not read yet: no test record carries it") for f in NOT_READ),
)

TABLE = Table(
    reader="zenodo",
    module="metadata/readers/zenodo.py",
    intro="Zenodo records\n\nThe records API's answer (`/api/records/<id>`), as `download.sources.zenodo` keeps it.",
    entries=ENTRIES,
)
