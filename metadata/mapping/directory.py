"""The local folder mapping table (reader: metadata/readers/directory.py).

Paths are those of the folder's ``metadata.json`` (Zenodo's deposit metadata shape), or of
its ``catalog.yaml`` top level (``authors`` read as ``creators``); nothing else is read.
"""

from __future__ import annotations

from metadata.mapping.table import Entry, LeftOut, Table, lands, mapped

M = "metadata."
RELATED = M + "related_identifiers"
EXTRA = lands(M + "additional_descriptions", "extra")
NOTES = lands(M + "notes", "extra")

ENTRIES: tuple[Entry, ...] = (
    mapped("title", lands(M + "title", "none: the folder's name"), lands(M + "title")),
    mapped(
        "creators[].name",
        lands(M + "creators", 'personal: "Family, Given" split; a group\'s name -> organizational'),
        lands(M + "creators"),
        check="family",
    ),
    mapped("creators[]", lands(M + "creators", 'a bare "Family, Given" string'), lands(M + "creators"), check="family"),
    mapped("authors", lands(M + "creators", "catalog.yaml: as `creators`"), lands(M + "creators"), check="family"),
    mapped(
        "creators[].affiliation",
        lands(M + "creators", '`affiliations`, "A; B" split'),
        lands(M + "creators"),
        check="parts",
    ),
    mapped("creators[].orcid", lands(M + "creators", "`identifiers` orcid"), lands(M + "creators"), check="orcid"),
    mapped(
        "description",
        lands(M + "description", "sanitised; none: one sentence giving the files' number and size"),
        lands(M + "description"),
    ),
    mapped(
        "method",
        lands(M + "additional_descriptions", "additional description methods"),
        lands(M + "method"),
        nrp=lands(M + "description", 'in `description` under "Methodology"'),
    ),
    mapped(
        "notes",
        lands(M + "additional_descriptions", "additional description other"),
        lands(M + "notes"),
        nrp=lands(M + "description", 'in `description` under "Notes"'),
    ),
    mapped(
        "publication_date",
        lands(M + "publication_date", "none: the day of the copy (UTC)"),
        lands(M + "publication_date"),
    ),
    mapped("publisher", lands(M + "publisher"), lands(M + "notes")),
    mapped("keywords", lands(M + "subjects"), lands(M + "keywords")),
    mapped("license", lands(M + "rights"), lands(M + "license")),
    mapped("version", lands(M + "version"), lands(M + "version")),
    mapped(
        "related_identifiers[].identifier",
        lands(f"{RELATED} {M}additional_descriptions", "a DOI or URL; other schemes (arXiv, ISBN) in an extra"),
        lands(f"{RELATED} {M}notes"),
    ),
    mapped(
        "related_identifiers[].relation",
        lands(f"{RELATED} {M}additional_descriptions", "DataCite's id (lowercase)"),
        lands(f"{RELATED} {M}notes"),
    ),
    mapped(
        "related_identifiers[].scheme", lands(f"{RELATED} {M}additional_descriptions"), lands(f"{RELATED} {M}notes")
    ),
    mapped("related_identifiers[].resource_type", EXTRA, NOTES),
    mapped(
        "upload_type",
        lands(M + "resource_type", "its kind's type (Zenodo table; none: dataset)"),
        lands(M + "upload_type"),
    ),
    mapped("resource_type.type", lands(M + "resource_type", "as `upload_type`"), lands(M + "upload_type")),
    mapped("publication_type", lands(M + "resource_type"), lands(M + "publication_type")),
    LeftOut("path", "the folder's local path (Record.metadata): it means nothing on a target and may say too much"),
)

TABLE = Table(
    reader="dir",
    module="metadata/readers/directory.py",
    intro="Local folders\n\nThe folder's `metadata.json` (else `catalog.yaml`); without either: facts only.",
    entries=ENTRIES,
)
