"""Where a record's claims disagree with its real files.

What the transform keeps, field by field, is the reader's mapping table
(``metadata/mapping/<reader>.py``): it generates metadata/MAPPING.md and drives the
fidelity property tests; there is no other list of fields.

``distribution_discrepancies(record)`` compares ``distribution.number_files`` / ``size``
with the real files (a resolved ``Record``, or a record with its file list and indices
expanded) and returns one note per disagreement; empty when they agree or when the real
files are not known.
"""

from __future__ import annotations

from typing import Any

from metadata.readers import read
from metadata.readers.values import text, unwrap


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
