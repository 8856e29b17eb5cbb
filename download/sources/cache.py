"""The master cache: recid -> source record, resolved file list and status flags.

Format (the seed's, extended): one JSON object keyed by recid (a string), each entry::

    {"record": {...source record JSON...},
     "files": [{"remote": URI, "path": key in DEST/<recid>/, "size": n,
                "checksum": "adler32:...", "downloaded": false,
                "checksums": [...], "availability": "online"}],   # ours, optional
     "done": false, "checked": false,
     "category": "collision|simulated|unclassified|no-metadata",   # ours from here on
     "source": "cernopendata", "resolved_at": ISO-8601 UTC, "fingerprint": sha1 of record,
     "error": null | "why the last resolution failed", "error_at": ISO-8601 UTC}

Seed caches (without our keys) are read as they are; a missing optional key gets its
default. The file is written atomically (temporary file, fsync, rename), so a crash during
a build leaves the previous cache intact.

Building is incremental: ``CacheBuilder`` adds new recids, refreshes records whose content
changed (by fingerprint), keeps ``downloaded``/``done``/``checked`` flags of unchanged
files, and records per-recid errors in the entry instead of stopping. Records come from a
resolver (``async resolve(recid) -> Record``), from portal search (paging through the
portal's 10,000-hit cap by splitting the query), or from JSON arrays of records.

``order_recids`` gives the processing order with a reason per decision (for the stats).
"""

# The parts, each its own module; every name is re-exported here, where callers import it.
from download.sources.cache_build import BuildReport, CacheBuilder, Resolve
from download.sources.cache_entries import (
    CATEGORIES,
    Entry,
    Parse,
    category_of,
    entry_from_record,
    entry_size,
    fingerprint,
    inner_recid,
    recid_key,
    record_from_entry,
    record_from_json,
)
from download.sources.cache_file import CacheStats, MasterCache, PackedEntries
from download.sources.cache_order import ORDERS, OrderDecision, order_recids
from download.sources.portal_search import DEFAULT_SPLITS, SEARCH_CAP, PortalSearch, default_probes, field_values

__all__ = [
    "CATEGORIES",
    "DEFAULT_SPLITS",
    "ORDERS",
    "SEARCH_CAP",
    "BuildReport",
    "CacheBuilder",
    "CacheStats",
    "Entry",
    "MasterCache",
    "OrderDecision",
    "PackedEntries",
    "Parse",
    "PortalSearch",
    "Resolve",
    "category_of",
    "default_probes",
    "entry_from_record",
    "entry_size",
    "field_values",
    "fingerprint",
    "inner_recid",
    "order_recids",
    "recid_key",
    "record_from_entry",
    "record_from_json",
]
