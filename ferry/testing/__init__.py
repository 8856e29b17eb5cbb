"""Conformance suites every target and source joins (importable, as rclone's fstests).

A backend joins in a few lines: a test module subclasses ``TargetSuite`` (or
``SourceSuite``) and provides one ``backend`` fixture that builds its ``TargetBackend``
(``SourceBackend``) against a real server on loopback, declaring what it cannot do.
Every case runs on every backend that can; a case needing an ability the backend lacks
is skipped with the reason, so the declaration is the honest list of what it does not do.
These modules import pytest: they are for tests only.
"""
