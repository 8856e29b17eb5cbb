"""Runners: where the per-record pipeline runs. ``pipeline.bulk`` runs it in this process;
``pipeline.runners.dask`` runs the same ``RecordJob`` on the workers of a Dask cluster."""
