"""One declarative mapping table per metadata reader: source field -> where it lands, per profile.

Each reader's table (``metadata/mapping/<reader>.py``: ``TABLE``) lists every source field
path the reader knows: either a ``Field`` (for each profile, the body fields it lands in
and how) or a ``LeftOut`` (and why). The one table drives both uses, so they cannot drift:

- ``metadata/MAPPING.md`` is generated from it (``python -m metadata.mapping`` writes it,
  ``--check`` fails when the committed file differs; a test runs the check);
- the fidelity property tests (tests/test_profiles_fidelity.py, tests/test_mapping_tables.py)
  look every field path of the fixture records up in it: each must be mapped or left out,
  and each mapped value must be found in the body fields the table names, per profile.

A table path names a field and everything beneath it: ``authors[].orcid`` is the orcid of
every author, ``system_details`` the whole object. The most specific entry wins.
"""

from __future__ import annotations

from metadata.mapping.table import (
    PROFILES,
    Check,
    Entry,
    Field,
    Lands,
    LeftOut,
    Table,
    beneath,
    lands,
    leaf_paths,
    mapped,
)


def tables() -> dict[str, Table]:
    """Every reader's table, by reader name (imported here: the tables import nothing heavy)."""
    from metadata.mapping import cernopendata, directory, zenodo

    return {t.reader: t for t in (cernopendata.TABLE, zenodo.TABLE, directory.TABLE)}


__all__ = [
    "PROFILES",
    "Check",
    "Entry",
    "Field",
    "Lands",
    "LeftOut",
    "Table",
    "beneath",
    "lands",
    "leaf_paths",
    "mapped",
    "tables",
]
