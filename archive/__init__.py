"""Versioned dataset archives: djarchive manifests, tree hashing with a local state, and
the archive layout ``ARCHIVE/NAME/REV/<path>`` on any target that speaks the protocol."""
