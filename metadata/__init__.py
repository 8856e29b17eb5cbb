"""Metadata transforms: a source record -> a target repository's schema, validated.

Use ``get_profile(name)`` ("nrp-particles", "inveniordm") and ``transform_and_validate``.
"""

from metadata.base import FieldIssue, Profile, get_profile, profile_names, register_profile, transform_and_validate

__all__ = ["FieldIssue", "Profile", "get_profile", "profile_names", "register_profile", "transform_and_validate"]
