"""Metadata transforms: a source record -> a target repository's schema, validated."""
