"""Metadata: readers (source record -> neutral ``Dataset``) and profiles (``Dataset`` -> a target's schema).

Use ``get_profile(name)`` ("nrp-particles", "inveniordm", "zenodo") and ``transform_and_validate``.
"""

from metadata.base import FieldIssue, Profile, get_profile, profile_names, register_profile, transform_and_validate

__all__ = ["FieldIssue", "Profile", "get_profile", "profile_names", "register_profile", "transform_and_validate"]
