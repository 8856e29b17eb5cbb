"""Targets: where records go. Each system is one module behind ``upload.targets.base``."""
