"""What the transform keeps, and where a record's claims disagree with its real files.

``SOURCE_FIELDS`` names every portal record field the readers map (to a neutral fact or
an extra block), ``LEFT_OUT`` every field deliberately not carried, with the reason. A
test checks that every field of every sample record is in one of the two, and that the
mapped fields' values arrive in every profile's body (metadata/MAPPING.md is the table).

``distribution_discrepancies(record)`` compares ``distribution.number_files`` / ``size``
with the real files (a resolved ``Record``, or a record with its file list and indices
expanded) and returns one note per disagreement; empty when they agree or when the real
files are not known.
"""

from __future__ import annotations

from typing import Any

from metadata.readers import read
from metadata.readers.values import text, unwrap

SOURCE_FIELDS = frozenset(
    {
        "recid", "title", "title_additional", "experiment", "publisher", "date_published", "date_created",
        "date_reprocessed", "type", "collections", "categories", "keywords", "abstract", "methodology", "usage",
        "note", "validation", "use_with", "pileup", "accelerator", "collaboration", "collision_information",
        "distribution", "license", "doi", "relations", "authors", "run_period", "system_details",
        "dataset_semantics", "dataset_semantics_files", "stripping", "magnet_polarity", "cms_confdb_id",
        "run_numbers", "signature", "source_code_repository", "links", "prepublication", "cross_section",
        "language", "files", "_file_indices",
    }
)  # fmt: skip

LEFT_OUT = {
    "files": "the data themselves: the pipeline moves them; the profiles use their count, size and types",
    "_file_indices": "the expanded file indices: as for files",
    "collaboration.recid": "the portal's internal id of the collaboration's page; the name is carried",
    "$schema": "the portal's JSON schema URL, meaningless on the target",
    "control_number": "the record API's copy of recid",
    "_bucket": "the portal's storage bucket id",
    "_files": "the portal's storage listing (see files)",
}


def distribution_discrepancies(record: Any) -> list[str]:
    """Notes naming each ``distribution`` claim that the real files contradict."""
    ds = read(record)
    facts = ds.files
    if not facts.resolved:
        return []
    where = f"record {text(unwrap(record).get('recid')) or '?'}"
    notes = []
    if facts.claimed_count is not None and facts.claimed_count != facts.count:
        notes.append(
            f"{where}: distribution.number_files says {facts.claimed_count}, the record has {facts.count} file(s)"
        )
    if facts.claimed_size is not None and facts.size is not None and facts.claimed_size != facts.size:
        notes.append(
            f"{where}: distribution.size says {facts.claimed_size} bytes, the files add up to {facts.size} bytes"
        )
    return notes
