"""The pipeline: all transfer policy (record job, bulk runner, ledger, limits, run wiring)."""
