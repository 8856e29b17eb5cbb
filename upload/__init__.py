"""Targets (InvenioRDM/NRP, later Zenodo, S3), zipping, limits and the single/bulk runners."""
