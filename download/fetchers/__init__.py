"""Fetchers: one transfer protocol each (XRootD, HTTPS); they move bytes, nothing else."""
