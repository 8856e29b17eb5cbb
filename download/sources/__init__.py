"""Sources: where records come from (the CERN portal API, records files, master caches)."""
