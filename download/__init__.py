"""Sources: resolve a recid into a record and fetch its files, verified (CERN Open Data first)."""
