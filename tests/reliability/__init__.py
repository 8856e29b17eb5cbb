"""The reliability suite (issue 16, section 5): what docs/reliability.md reports, kept found."""
