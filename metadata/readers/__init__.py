"""Readers: one source record -> one neutral ``metadata.dataset.Dataset``.

``read(record)`` reads a CERN Open Data record (the portal JSON, an API answer, or a
resolved ``ferry.core.model.Record``, whose real file list then gives the file facts).
"""

from metadata.readers.cernopendata import read

__all__ = ["read"]
