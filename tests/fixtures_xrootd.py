"""Fixtures for this system are added by its issue."""
